#!/usr/bin/env bash
# The speed benchmarks on a CUDA machine: the same scripts with --device cuda
# and a meta-batch of 1000 tasks. Run from the repository root inside the venv
# (peers need benchmarks/install_peers.sh first; missing ones are skipped).
# Writes everything to ${OUT:-bench-gpu}/.
set -euo pipefail
OUT=${OUT:-bench-gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

# 1. metarun vs peers on the MAML sinusoid config, meta-batch 25 (the paper's) and 1000.
"$PY" benchmarks/peers.py --device cuda --rounds 3 2>&1 | tee "$OUT/peers-b25.txt"
"$PY" benchmarks/peers.py --device cuda --rounds 3 --set train.meta_batch_size=1000 \
  --only "metarun train (whole loop),metarun compiled,metarun eager,torch.func vmap,torch.func vmap compiled,learn2learn 0.2.0" \
  2>&1 | tee "$OUT/peers-b1000.txt"
# 2. Scaling table on the GPU, up to 10,000 tasks per meta-batch; eval timing.
"$PY" benchmarks/scaling.py --device cuda --batches 1,25,100,1000,10000 2>&1 | tee "$OUT/scaling.txt"
# 3. End-to-end training loop, meta-batch 1000, plus flatness over 10,000 iterations.
"$PY" benchmarks/train_throughput.py --device cuda --set train.meta_batch_size=1000 --iterations 2000 \
  2>&1 | tee "$OUT/train-b1000.txt"
"$PY" benchmarks/train_throughput.py --device cuda --iterations 10000 --rounds 1 --flat 2>&1 | tee "$OUT/flat.txt"
