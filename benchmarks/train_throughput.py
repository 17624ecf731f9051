"""End-to-end `metarun train` throughput: the whole loop (sampling, meta-step,
a metrics.csv row every iteration, validation, periodic checkpoints) with
compile off and on, against the bare meta-step loop, in alternating rounds.

    python benchmarks/train_throughput.py                       # 2000 iterations per run
    python benchmarks/train_throughput.py --iterations 10000 --flat   # + per-window times (flatness, no leak)
    python benchmarks/train_throughput.py --device cuda --set train.meta_batch_size=1000
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import table  # noqa: E402

from metarun import config as config_mod  # noqa: E402
from metarun.rundir import read_metrics  # noqa: E402
from metarun.train import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run_once(cfg_path: str, sets: list[str], device: str, iterations: int, compile_: bool, runs: Path) -> dict:
    cfg = config_mod.load(Path(cfg_path), [*sets, f"train.iterations={iterations}", "train.log_every=1",
                                           f"train.checkpoint_every={max(iterations // 4, 1)}",
                                           f"train.compile={'true' if compile_ else 'false'}", f"device={device}"])
    run = train(cfg, runs, quiet=True)
    info = json.loads(run.info_path.read_text())
    return {"it_s": iterations / info["seconds"], "compile_s": info.get("compile_seconds"), "run": run}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs/maml.yaml"))
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--flat", action="store_true", help="report per-1000-iteration windows of the last run")
    args = ap.parse_args(argv)

    rates: dict[str, list[float]] = {"train eager": [], "train compiled": []}
    compile_s, last = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = [False, True] if r % 2 == 0 else [True, False]
            for comp in order:
                out = run_once(args.config, args.set, args.device, args.iterations, comp, Path(tmp))
                rates["train compiled" if comp else "train eager"].append(out["it_s"])
                if comp:
                    compile_s.append(out["compile_s"])
                last = out
        rows = [[k, f"{sum(v) / len(v):.1f}", " ".join(f"{x:.0f}" for x in v)] for k, v in rates.items()]
        print(f"end-to-end `metarun train` ({args.iterations} iterations, metrics every iteration, "
              f"checkpoints every {max(args.iterations // 4, 1)}) on {args.device}, {' '.join(args.set)}")
        print(table(["loop", "mean it/s", "per round"], rows))
        print(f"compile seconds per compiled run: {', '.join(f'{s:.1f}' for s in compile_s)} "
              "(first includes a cold cache; later runs reuse inductor's on-disk cache)")
        if args.flat:
            rows = read_metrics(last["run"].metrics_path)
            secs = [float(r["seconds"]) for r in rows]
            window = 1000
            times = [secs[i + window - 1] - (secs[i - 1] if i else 0.0) for i in range(0, len(secs) - window + 1, window)]
            print(f"seconds per {window} iterations, in order: {' '.join(f'{t:.2f}' for t in times)}")
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"last / first window: {times[-1] / times[0]:.2f}; peak RSS {rss:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
