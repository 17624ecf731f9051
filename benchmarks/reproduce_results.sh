#!/usr/bin/env bash
# The README's results table: trains every algorithm's shipped config for its full
# budget (70,000 meta-iterations; `scratch` trains nothing), then scores all of them
# on the same 1000 held-out sinusoid tasks, 5-shot and 10-shot, after 0/1/5/10 steps.
#
#   bash benchmarks/reproduce_results.sh [RUNS_DIR]     # JOBS=2 trainings at a time by default
#
# About 8 minutes on a 2-core CPU with JOBS=2 (7 min 29 s on 2026-12-04).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs/results}
ALGORITHMS="maml fomaml metasgd anil reptile cnp pretrain scratch"
# These networks are tiny: one thread per training is faster than torch's default pool.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

printf '%s\n' $ALGORITHMS | xargs -P "${JOBS:-2}" -I{} metarun train configs/{}.yaml --runs-dir "$RUNS" --quiet
metarun runs "$RUNS"

run_dirs=()
for a in $ALGORITHMS; do run_dirs+=("$(ls -d "$RUNS"/*_"$a"-sinusoid_* | tail -n 1)"); done
for shots in 5 10; do
  metarun compare "${run_dirs[@]}" --shots "$shots" --at 0,1,5,10
  metarun compare "${run_dirs[@]}" --shots "$shots" --at 0,1,5,10 --json > "$RUNS/compare-${shots}shot.json"
done
python benchmarks/results_table.py "$RUNS/compare-5shot.json" "$RUNS/compare-10shot.json"
# The CNP's Gaussian negative log-likelihood (compare shows MSE only).
for shots in 5 10; do metarun eval "${run_dirs[5]}" --shots "$shots" --steps 0; done
