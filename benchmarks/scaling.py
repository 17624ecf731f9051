"""Meta-iterations/s and memory against meta-batch size, inner steps and
hidden width, for every algorithm in metarun's registry (so variants added
later are picked up), plus `metarun eval`-sized adaptation timing.

Memory: on CUDA, peak allocated bytes of one training step; everywhere, the
bytes autograd saves for the backward pass of the meta-loss (the part that
grows with inner steps and meta-batch; allocator-independent).

    python benchmarks/scaling.py                  # CPU, eager (the table in docs/speed.md)
    python benchmarks/scaling.py --device cuda --batches 1,25,100,1000,10000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import rate, sync, table  # noqa: E402

from metarun import config as config_mod  # noqa: E402
from metarun.algorithms import ALGORITHMS, make_algorithm  # noqa: E402
from metarun.algorithms.base import Algorithm  # noqa: E402
from metarun.errors import UserError  # noqa: E402
from metarun.tasks import make_family, make_generator  # noqa: E402
from metarun.train import resolve_device  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def measure(name: str, batch_size: int, steps: int, width: int, device: torch.device,
            seconds: float) -> tuple[float, float | None, float | None]:
    """(meta-iterations/s, autograd-saved MiB, CUDA peak MiB or None) of one configuration."""
    cfg = config_mod.load(ROOT / "configs/maml.yaml", [f"algorithm.name={name}", f"algorithm.inner_steps={steps}",
                                                       f"model.hidden=[{width},{width}]"])
    if hasattr(cfg.algorithm, "encoder_hidden"):  # model-based (CNP): width is its encoder's and decoder's
        cfg = config_mod.load(ROOT / "configs/maml.yaml", [f"algorithm.name={name}",
                                                           f"algorithm.encoder_hidden=[{width},{width}]",
                                                           f"algorithm.decoder_hidden=[{width},{width}]"])
    torch.manual_seed(0)
    family = make_family(cfg.task)
    algo = make_algorithm(cfg, family.dx, family.dy).to(device)
    opt = algo.make_optimizer(cfg.train.meta_lr)
    gen = make_generator(0, "benchmark", device)
    batch = family.sample(batch_size, gen)
    saved = 0

    def pack(t):
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    if type(algo).meta_step is Algorithm.meta_step:  # the step backpropagates a meta-loss: measure its graph
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss, _ = algo.meta_loss(batch)
        loss.backward()
    else:  # its own update without an outer graph (Reptile): nothing is kept for backward
        saved = None
    peak = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        algo.meta_step(family.sample(batch_size, gen), opt, 0)
        sync(device)
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    speed = rate(lambda i: algo.meta_step(family.sample(batch_size, gen), opt, i), seconds, device)
    return speed, None if saved is None else saved / 2**20, peak


def eval_timing(device: torch.device, tasks: int = 1000, steps: int = 10, repeats: int = 5) -> float:
    """Seconds of compute for `metarun eval`'s adaptation curve: 1000 tasks x 10 steps (best of `repeats`)."""
    cfg = config_mod.load(ROOT / "configs/maml.yaml", [])
    family = make_family(cfg.task)
    algo = make_algorithm(cfg, family.dx, family.dy).to(device)
    batch = family.sample(tasks, make_generator(0, "eval", device), query_shots=cfg.eval.query_shots)
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        algo.adaptation_losses(batch, steps)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--algorithms", default="", help="comma-separated (default: every registered one)")
    ap.add_argument("--batches", default="1,10,25,100,1000")
    ap.add_argument("--steps", default="1,2,5,10")
    ap.add_argument("--widths", default="40,100,400")
    ap.add_argument("--seconds", type=float, default=0.5)
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    names = args.algorithms.split(",") if args.algorithms else list(ALGORITHMS)
    grid = ([(b, 1, 40) for b in map(int, args.batches.split(","))]
            + [(25, s, 40) for s in map(int, args.steps.split(",")) if s != 1]
            + [(25, 1, w) for w in map(int, args.widths.split(",")) if w != 40])
    print(f"device {device} | torch {torch.__version__} | threads {torch.get_num_threads()} | eager, "
          f"sinusoid 10+10 points; one knob varied at a time from meta-batch 25, 1 inner step, width 40")
    rows = []
    for name in names:
        for b, s, w in grid:
            if s != 1 and name == "cnp":
                continue  # no inner loop
            try:
                speed, saved, peak = measure(name, b, s, w, device, args.seconds)
            except UserError as exc:
                print(f"skipped {name} (meta-batch {b}, steps {s}, width {w}): {exc}")
                break
            rows.append([name, b, s, w, f"{speed:.1f}", f"{speed * b:,.0f}", "no graph" if saved is None else f"{saved:.2f}",
                         "-" if peak is None else f"{peak:.1f}"])
            print(" ", " ".join(map(str, rows[-1])), flush=True)
    print(table(["algorithm", "meta-batch", "inner steps", "width", "it/s", "tasks/s", "autograd saved MiB",
                 "CUDA peak MiB"], rows))
    print(f"\neval-sized adaptation (1000 tasks x 10 steps, 100 query points, no grad): "
          f"{eval_timing(device):.3f} s of compute (best of 5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
