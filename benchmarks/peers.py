"""metarun's MAML training throughput against learn2learn, higher, a plain
per-task loop and a hand-written torch.func vmap step (eager and compiled).

Every implementation runs the same training loop on the same config
(configs/maml.yaml by default: sinusoids, 10 + 10 points, meta-batch 25,
1-40-40-1 ReLU, one inner step of 0.001, Adam 1e-3) from the same initial
weights: sample a meta-batch on the device, meta-step, Adam step. First, all
must give the same meta-gradient on the same batch (so the work is
identical); then they are timed in alternating rounds so drift cancels, and
the ratios are round-paired medians. The first row is `metarun train` itself:
whole runs of the same config (metrics rows, validation and checkpoints
included), timed in the same rounds, so the ratios compare the product, not
just its meta-step, with the peers' bare loops.

    python benchmarks/peers.py                      # CPU, the figures in docs/speed.md
    python benchmarks/peers.py --device cuda --set train.meta_batch_size=1000

Peers that are not installed are skipped with a note (benchmarks/install_peers.sh).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import torch
from torch.func import functional_call, grad, vmap

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, rate, ratio_median, sync, table  # noqa: E402

from metarun import config as config_mod  # noqa: E402
from metarun.algorithms import make_algorithm  # noqa: E402
from metarun.compiling import maybe_compile  # noqa: E402
from metarun.tasks import make_family, make_generator  # noqa: E402
from metarun.train import resolve_device, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WHOLE_LOOP = "metarun train (whole loop)"


def mse(pred, y):
    return ((pred - y) ** 2).mean()


def sequential(net_init) -> torch.nn.Sequential:
    """The same network and weights as a plain nn.Sequential (what peers expect; higher cannot patch slicing)."""
    mods = []
    for i, layer in enumerate(net_init.layers):
        mods.append(copy.deepcopy(layer))
        if i < len(net_init.layers) - 1:
            mods.append(copy.deepcopy(net_init.act))
    return torch.nn.Sequential(*mods)


def training_step(meta_loss, opt):
    """One meta-iteration of a per-task-loop implementation: meta-gradient, then Adam."""

    def step(batch):
        opt.zero_grad(set_to_none=True)
        meta_loss(batch).backward()
        opt.step()

    return step


# ----------------------------------------------------------------- implementations
# Each builder returns (meta_gradient(batch) -> list of grads, train_step(batch)).


def build_metarun(cfg, net_init, device, compiled: bool):
    algo = make_algorithm(cfg, 1, 1).to(device)
    algo.net.load_state_dict(net_init.state_dict())
    opt = algo.make_optimizer(cfg.train.meta_lr)
    if compiled:  # exactly as `metarun train` compiles (C++ wrapper where it builds)
        cfg = config_mod.resolve(config_mod.to_dict(cfg), ["train.compile=true"])
        if maybe_compile(algo, make_family(cfg.task), cfg, device) is None:
            raise RuntimeError("metarun's meta-loss did not compile")

    def meta_gradient(batch):
        return list(torch.autograd.grad(algo.meta_loss(batch)[0], list(algo.net.parameters())))

    return meta_gradient, lambda batch: algo.meta_step(batch, opt, 0)


def build_loop(cfg, net_init, device):
    """The textbook per-task loop: autograd.grad with create_graph, one task at a time."""
    net = sequential(net_init).to(device)
    params = list(net.parameters())
    a = cfg.algorithm
    opt = torch.optim.Adam(params, lr=cfg.train.meta_lr)

    def forward(weights, x):
        n = len(weights) // 2
        for i in range(n):
            x = x @ weights[2 * i].T + weights[2 * i + 1]
            x = torch.relu(x) if i < n - 1 else x
        return x

    def meta_loss(batch):
        sx, sy, qx, qy = batch.tensors()
        total = 0.0
        for t in range(sx.shape[0]):
            fast = params
            for _ in range(a.inner_steps):
                g = torch.autograd.grad(mse(forward(fast, sx[t]), sy[t]), fast, create_graph=not a.first_order)
                fast = [w - a.inner_lr * gi for w, gi in zip(fast, g)]
            total = total + mse(forward(fast, qx[t]), qy[t])
        return total / sx.shape[0]

    step = training_step(meta_loss, opt)
    return lambda batch: list(torch.autograd.grad(meta_loss(batch), params)), step


def build_vmap(cfg, net_init, device, compiled: bool):
    """The hand-written torch.func reference: functional_call + grad + vmap."""
    net = sequential(net_init).to(device)
    params = dict(net.named_parameters())
    a = cfg.algorithm
    opt = torch.optim.Adam(params.values(), lr=cfg.train.meta_lr)

    def task_loss(p, sx, sy, qx, qy):
        fast = p
        for _ in range(a.inner_steps):
            g = grad(lambda w: mse(functional_call(net, w, (sx,)), sy))(fast)
            if a.first_order:
                g = {k: v.detach() for k, v in g.items()}
            fast = {k: fast[k] - a.inner_lr * g[k] for k in fast}
        return mse(functional_call(net, fast, (qx,)), qy)

    def meta_loss(p, sx, sy, qx, qy):
        return vmap(task_loss, in_dims=(None, 0, 0, 0, 0))(p, sx, sy, qx, qy).mean()

    fn = torch.compile(meta_loss) if compiled else meta_loss

    def step(batch):
        opt.zero_grad(set_to_none=True)
        fn(params, *batch.tensors()).backward()
        opt.step()

    return lambda batch: list(torch.autograd.grad(fn(params, *batch.tensors()), list(params.values()))), step


def import_learn2learn():
    try:
        import torchvision  # noqa: F401
    except ImportError:  # learn2learn imports its vision package eagerly; the MAML wrapper needs none of it
        sys.modules.setdefault("learn2learn.vision", types.ModuleType("learn2learn.vision"))
    import learn2learn

    return learn2learn


def build_learn2learn(cfg, net_init, device):
    l2l = import_learn2learn()
    a = cfg.algorithm
    maml = l2l.algorithms.MAML(sequential(net_init).to(device), lr=a.inner_lr, first_order=a.first_order)
    opt = torch.optim.Adam(maml.parameters(), lr=cfg.train.meta_lr)

    def meta_loss(batch):
        sx, sy, qx, qy = batch.tensors()
        total = 0.0
        for t in range(sx.shape[0]):
            learner = maml.clone()
            for _ in range(a.inner_steps):
                learner.adapt(mse(learner(sx[t]), sy[t]))
            total = total + mse(learner(qx[t]), qy[t])
        return total / sx.shape[0]

    step = training_step(meta_loss, opt)
    return lambda batch: list(torch.autograd.grad(meta_loss(batch), list(maml.parameters()))), step


def build_higher(cfg, net_init, device):
    import higher

    a = cfg.algorithm
    net = sequential(net_init).to(device)
    inner_opt = torch.optim.SGD(net.parameters(), lr=a.inner_lr)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.train.meta_lr)

    def meta_loss(batch):
        sx, sy, qx, qy = batch.tensors()
        total = 0.0
        for t in range(sx.shape[0]):
            with higher.innerloop_ctx(net, inner_opt, copy_initial_weights=False,
                                      track_higher_grads=not a.first_order) as (fnet, diffopt):
                for _ in range(a.inner_steps):
                    diffopt.step(mse(fnet(sx[t]), sy[t]))
                total = total + mse(fnet(qx[t]), qy[t])
        return total / sx.shape[0]

    step = training_step(meta_loss, opt)
    return lambda batch: list(torch.autograd.grad(meta_loss(batch), list(net.parameters()))), step


def whole_train_loop(args, device, runs_dir: Path):
    """Iterations/s of `metarun train` itself: the whole loop of a real run on the
    same config (sampling, meta-step, Adam, metrics.csv rows, validation,
    checkpoints) for --train-iterations iterations, compiled as a 70,000-iteration
    run is. The rate is the run's own `seconds` (run.json: the loop, not set-up
    or compiling)."""
    cfg = config_mod.load(Path(args.config), [*args.set, f"train.iterations={args.train_iterations}",
                                              "train.compile=true", f"device={device}"])

    def measure() -> float:
        run = train(cfg, runs_dir, quiet=True)
        return cfg.train.iterations / json.loads(run.info_path.read_text())["seconds"]

    return measure


def with_threads(measure, threads: int):
    """`measure` run with torch's intra-op thread pool at `threads` (set only when it changes)."""

    def run():
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return measure()

    return run


# ----------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs/maml.yaml"))
    ap.add_argument("--set", action="append", default=[], help="config override section.key=value")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0, help="seconds per implementation per round")
    ap.add_argument("--only", default="", help="comma-separated implementation names (default: all)")
    ap.add_argument("--threads", default="", help="comma-separated CPU thread counts to time every implementation at, "
                    "in the same alternating rounds (default: torch's current setting)")
    ap.add_argument("--train-iterations", type=int, default=1000,
                    help="iterations of each whole `metarun train` run timed per round")
    args = ap.parse_args(argv)

    cfg = config_mod.load(Path(args.config), args.set)
    device = resolve_device(args.device)
    family = make_family(cfg.task)
    torch.manual_seed(cfg.seed)
    net_init = make_algorithm(cfg, 1, 1).net  # one initialisation for everyone
    B = cfg.train.meta_batch_size
    print(f"config {args.config} {' '.join(args.set)} | device {device} | torch {torch.__version__} | "
          f"threads {torch.get_num_threads()} | meta-batch {B}, inner steps {cfg.algorithm.inner_steps}, "
          f"{cfg.algorithm.name}")

    builders = {
        # what `metarun train` runs for >= 10,000 iterations (train.compile: null), then with compile off
        "metarun compiled": lambda: build_metarun(cfg, net_init, device, compiled=True),
        "metarun eager": lambda: build_metarun(cfg, net_init, device, compiled=False),
        "torch.func vmap": lambda: build_vmap(cfg, net_init, device, compiled=False),
        "torch.func vmap compiled": lambda: build_vmap(cfg, net_init, device, compiled=True),
        "plain loop": lambda: build_loop(cfg, net_init, device),
        "learn2learn 0.2.0": lambda: build_learn2learn(cfg, net_init, device),
        "higher 0.2.1": lambda: build_higher(cfg, net_init, device),
    }
    if args.only:
        builders = {k: v for k, v in builders.items() if k in args.only.split(",")}
    impls, notes = {}, []
    for name, build in builders.items():
        try:
            impls[name] = build()
        except ImportError as exc:
            notes.append(f"skipped {name}: not installed ({exc}); see benchmarks/install_peers.sh")
    for note in notes:
        print(note)

    # 1. Same work: every meta-gradient equals metarun's on one batch.
    check = family.sample(B, make_generator(cfg.seed, "benchmark-check", device))
    reference = None
    print("\nmeta-gradient check on one batch (max relative error vs metarun; compile time included in s):")
    for name, (meta_gradient, _) in impls.items():
        start = time.perf_counter()
        g = meta_gradient(check)
        sync(device)
        seconds = time.perf_counter() - start
        reference = g if reference is None else reference
        err = max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(g, reference))
        print(f"  {name:26s} rel. error {err:.1e}  first call {seconds:6.2f} s")
        if err > 1e-3:
            print(f"FAILED: {name} computes a different meta-gradient")
            return 1

    # 2. Warm up (compiles happened above), then alternating timed rounds.
    gen = make_generator(cfg.seed, "benchmark", device)
    steps = {n: (lambda i, s=s: s(family.sample(B, gen))) for n, (_, s) in impls.items()}
    for s in steps.values():
        for i in range(3):
            s(i)
    measures = {n: (lambda s=s: rate(s, args.seconds, device)) for n, s in steps.items()}
    with tempfile.TemporaryDirectory() as runs_dir:
        if not args.only or WHOLE_LOOP in args.only.split(","):  # the product itself, next to the step loops
            measures = {WHOLE_LOOP: whole_train_loop(args, device, Path(runs_dir)), **measures}
        if args.threads:  # one row per (implementation, thread count), interleaved like the rest
            measures = {f"{n} @ {t} thread{'s' * (t > 1)}": with_threads(m, t)
                        for t in map(int, args.threads.split(",")) for n, m in measures.items()}
        rates = interleaved(measures, args.rounds)

    base = next(iter(rates))
    rows = []
    for name, r in rates.items():
        rows.append([name, f"{statistics.median(r):.1f}", f"{min(r):.1f}-{max(r):.1f}",
                     f"{ratio_median(rates[base], r):.2f}x"])
    print(f"\nmeta-iterations/s ({args.rounds} alternating rounds of ~{args.seconds:g} s; "
          f"ratio = {base} / row, median of per-round ratios)")
    print(table(["implementation", "median it/s", "range", f"{base} is"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
