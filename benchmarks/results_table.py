"""Markdown results table from `metarun compare --json` outputs (one per shot count).

    python benchmarks/results_table.py compare-5shot.json compare-10shot.json

One row per run and shot count: training time (from the run's run.json), the
checkpoint's iteration, the evaluation step size, and the query MSE ± 95% CI
after each step that compare was asked for (`--at`).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def cell(mean: float, ci: float) -> str:
    if not math.isfinite(mean):
        return "diverged"
    return f"{mean:.3f} ± {ci:.3f}" if mean < 100 else f"{mean:.3g} ± {ci:.3g}"


def main(paths: list[str]) -> int:
    results = [json.loads(Path(p).read_text()) for p in paths]
    steps = results[0]["at"]
    print("| algorithm | shots | train time | best checkpoint | eval step size | "
          + " | ".join(f"{s} step{'s' * (s != 1)}" for s in steps) + " |")
    print("|---" * (5 + len(steps)) + "|")
    by_run = {}
    for result in results:
        for r in result["runs"]:
            by_run.setdefault(r["run"], []).append(r)
    for run, rows in by_run.items():
        info = json.loads((Path(run) / "run.json").read_text())
        for r in rows:
            m = r["query_mse"]
            lr = "learned" if r["algorithm"] == "metasgd" else ("-" if not r["adapts"] else r["inner_lr"])
            print(f"| {r['algorithm']} | {r['shots']} | {info['seconds'] / 60:.1f} min | {r['checkpoint_iteration']} | {lr} | "
                  + " | ".join(cell(m["mean"][s], m["ci95"][s]) for s in steps) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
