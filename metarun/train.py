"""The meta-training loop: sample a meta-batch, meta-step, log, checkpoint.

Reads top to bottom: set up (device, seeds, family, algorithm), then either a
fresh run directory (`train`) or an existing one restored from its checkpoint
(`resume`), then one loop (`run_loop`). The algorithm owns everything about
inner loops.

What the loop guarantees (docs/reliability.md has the user's view):
- a checkpoint holds everything the next iteration depends on (model, optimiser,
  iteration, best validation loss, task-stream and torch RNG states), so a
  resumed run computes bit-for-bit what the uninterrupted run would have;
- SIGINT/SIGTERM finish the current iteration, save `last.pt`, mark the run
  `interrupted` and stop (exit 130/143);
- a non-finite loss or gradient stops the run before anything derived from it
  is written: no NaN row, no NaN checkpoint, no NaN `best.pt`.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from metarun import config as config_mod
from metarun import distributed, tensorboard_log
from metarun.algorithms import Algorithm, make_algorithm
from metarun.compiling import maybe_compile
from metarun.config import Config
from metarun.errors import UserError
from metarun.progress import TrainProgress
from metarun.rundir import RunDir, UnreadableCheckpoint, load_checkpoint, now_iso, run_info, truncate_metrics
from metarun.tasks import TaskBatch, TaskFamily, make_family, make_generator


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"device: unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device: {name!r} requested but CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device: {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif device.type != "cpu":
        raise UserError(f"device: unsupported device {name!r} (use auto, cpu, cuda or cuda:N)")
    return device


# --------------------------------------------------------------------------- how a run stops


class RunFailed(Exception):
    """Training could not go on (divergence, a write that failed). The CLI prints
    the one-line message and exits 1; the last good checkpoint is kept."""

    run_path: Path | None = None  # set by the loop: the run directory, for the CLI to print


class Divergence(RunFailed):
    def __init__(self, iteration: int, what: str = "loss or gradient"):
        super().__init__(iteration, what)
        self.iteration, self.what = iteration, what
        self.checkpoint_kept = True  # the loop says otherwise when it stopped before its first checkpoint

    def __str__(self) -> str:
        kept = "the last good checkpoint is kept" if self.checkpoint_kept else "no checkpoint had been written yet"
        return f"training diverged at iteration {self.iteration}: non-finite {self.what}; {kept}"


class Interrupted(Exception):
    """SIGINT or SIGTERM: the CLI exits 128 + signal number (130 / 143)."""

    run_path: Path | None = None  # set by the loop, as for RunFailed

    def __init__(self, signum: int, iteration: int, saved: bool):
        name = signal.Signals(signum).name
        kept = "checkpoint saved" if saved else "stopped mid-iteration, the last checkpoint is kept"
        super().__init__(f"interrupted by {name} at iteration {iteration}; {kept}")
        self.exit_code = 128 + signum


class StopSignals:
    """Turns SIGINT/SIGTERM into a flag that the loop reads between iterations,
    so a stop never lands between an optimiser step and the iteration counter.
    A second signal stops at once (without a new checkpoint)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self.iteration = 0  # kept current by the loop, for the second-signal message
        self.previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            raise Interrupted(signum, self.iteration, saved=False)
        self.signum = signum

    def requested(self, device: torch.device) -> bool:
        """Stop now? Under torchrun all ranks must stop at the same iteration, so
        they agree (one tiny all-reduce per iteration, only when distributed)."""
        if not distributed.is_distributed():
            return self.signum is not None
        return bool(agree(torch.tensor(int(self.signum is not None), device=device), dist.ReduceOp.MAX).item())

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


# --------------------------------------------------------------------------- the state of a run


@dataclass
class Session:
    """Everything the loop reads and updates; `checkpoint()` and `restore()`
    are the two halves of exact resume."""

    cfg: Config
    device: torch.device
    family: TaskFamily
    algo: Algorithm
    optimizer: torch.optim.Optimizer
    task_gen: torch.Generator
    val_batch: TaskBatch
    iteration: int = 0
    best_val: float = math.inf
    seconds: float = 0.0  # training time before this process (a resumed run continues the clock)
    compile_seconds: float | None = None  # None: the meta-loss runs eagerly

    @classmethod
    def build(cls, cfg: Config) -> Session:
        if cfg.train.tensorboard:
            tensorboard_log.require()  # a missing extra is bad input, reported before anything is written
        device = distributed.setup(resolve_device(cfg.device), cfg.train.meta_batch_size).device
        torch.manual_seed(cfg.seed)
        family = make_family(cfg.task)
        algo = make_algorithm(cfg, family.dx, family.dy).to(device)
        optimizer = algo.make_optimizer(cfg.train.meta_lr)
        compile_seconds = maybe_compile(algo, family, cfg, device)
        task_gen = make_generator(cfg.seed, "train", device)
        # The validation tasks come from their own stream and are redrawn, identically, on resume.
        val_batch = family.sample(cfg.train.val_tasks, make_generator(cfg.seed, "validation", device))
        return cls(cfg, device, family, algo, optimizer, task_gen, val_batch, compile_seconds=compile_seconds)

    def checkpoint(self, seconds: float) -> dict:
        rng = {"tasks": self.task_gen.get_state(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {"iteration": self.iteration, "model": self.algo.state_dict(),
                "optimizer": self.optimizer.state_dict(), "rng": rng, "best_val": self.best_val,
                "seconds": seconds, "device": str(self.device), "world_size": distributed.world_size()}

    def restore(self, state: dict, path: Path) -> None:
        try:
            self.algo.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            rng = state["rng"]
            self.task_gen.set_state(rng["tasks"])
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
            self.iteration = int(state["iteration"])
            self.best_val = float(state["best_val"])
            self.seconds = float(state.get("seconds", 0.0))
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            saved_on = state.get("device", "?") if isinstance(state, dict) else "?"
            raise UserError(f"{path}: checkpoint does not fit this run (written on {saved_on}, "
                            f"resuming on {self.device}): {first}") from None


def validation_loss(algo: Algorithm, val_batch: TaskBatch, cfg: Config) -> float:
    """Mean query loss on the fixed validation tasks after the training inner steps."""
    return algo.adaptation_losses(val_batch, cfg.algorithm.inner_steps)[:, -1].mean().item()


class FiniteWatch:
    """Watches every iteration's loss stats and gradients for NaN/inf without a
    host sync: two tiny on-device accumulators, read only where the loop syncs
    anyway (a metrics row, a validation, a checkpoint). So log_every > 1 keeps
    its speed, the iteration named is still exact, and nothing derived from a
    bad step is written, since the read comes before every write."""

    def __init__(self, start_iteration: int, device: torch.device, params: list[torch.nn.Parameter]):
        self.start = start_iteration
        self.params = params
        self.all_finite = torch.ones((), dtype=torch.bool, device=device)  # every iteration so far
        self.finite_steps = torch.zeros((), dtype=torch.long, device=device)  # iterations before the first bad one

    def update(self, stats: dict[str, torch.Tensor]) -> None:
        # The parameter list is kept from the start: walking the module tree every
        # iteration cost a third of this check on the MAML config.
        grads = [p.grad.reshape(-1) for p in self.params if p.grad is not None]
        finite = torch.isfinite(torch.cat([torch.stack(list(stats.values())), *grads])).all()
        self.all_finite.logical_and_(finite)
        self.finite_steps.add_(self.all_finite)

    def check(self, iteration: int, val: float | None = None) -> None:
        """Raise Divergence naming the first bad iteration up to `iteration` (one host read)."""
        finite_steps = int(agree(self.finite_steps, dist.ReduceOp.MIN).item())
        if self.start + finite_steps < iteration:
            raise Divergence(self.start + finite_steps + 1)
        if val is not None and not math.isfinite(val):
            raise Divergence(iteration, "validation loss")


def agree(value: torch.Tensor, op: dist.ReduceOp) -> torch.Tensor:
    """Under torchrun, one verdict for all ranks (every rank reaches this at the
    same iterations); in one process, the value itself, with no collective."""
    if not distributed.is_distributed():
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=op)
    return value


# --------------------------------------------------------------------------- entry points


def train(cfg: Config, runs_dir: Path, quiet: bool = False) -> RunDir:
    session = Session.build(cfg)  # every config / device error is raised before anything is written
    # Only rank 0 writes the run directory; other ranks get no-op stand-ins.
    run = distributed.on_main(RunDir.create, runs_dir, cfg.name, config_mod.dump(cfg),
                              {**run_info(cfg.seed, session.device, cfg.name), "world_size": distributed.world_size(),
                               "compile_seconds": session.compile_seconds})
    run_loop(run, session, quiet)
    return run


def config_changes(old: Config, new: Config) -> list[str]:
    """`key: old -> new` for every leaf that differs."""

    def leaves(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    a, b = leaves(config_mod.to_dict(old)), leaves(config_mod.to_dict(new))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]


def resume_checkpoint(run: RunDir) -> tuple[dict, Path]:
    """The newest readable checkpoint: `last.pt`, else the newest `iter-N.pt`.

    A truncated or corrupted file is skipped with a warning (the atomic writes
    make that an outside accident, e.g. a partial copy); a file that carries
    pickled objects is refused outright, since someone put it there."""
    candidates = [run.checkpoint_path("last"), *run.periodic_checkpoints()]
    candidates = [p for p in candidates if p.is_file()]
    if not candidates:
        raise UserError(f"{run.path}: no checkpoint to resume from (the run stopped before its first one); "
                        "start it again with `metarun train`")
    skipped = []
    for path in candidates:
        try:
            state = load_checkpoint(path)
        except UnreadableCheckpoint as exc:
            skipped.append(str(exc))
            continue
        for reason in skipped:
            print(f"metarun: warning: {reason}; resuming from {path}", file=sys.stderr)
        return state, path
    raise UserError(f"{run.path}: no readable checkpoint ({skipped[0]})")


def resume(run_path: Path, overrides: list[str] = (), allow_config_change: bool = False,
           quiet: bool = False) -> tuple[RunDir, str | None]:
    """Continue a run from its newest readable checkpoint. Returns the run and,
    when there was nothing to do, the reason (the run is left untouched)."""
    run = RunDir.open(run_path)
    saved_cfg = config_mod.load(run.config_path)
    cfg = config_mod.load(run.config_path, overrides)
    changes = config_changes(saved_cfg, cfg)
    if changes and not allow_config_change:
        raise UserError(f"--set changes the run's config ({'; '.join(changes)}); "
                        "pass --allow-config-change to resume with it")
    info = run.info()
    if info.get("status") == "running" and info.get("host") == os.uname().nodename and _alive(info.get("pid")):
        raise UserError(f"{run.path}: still running (pid {info['pid']}); stop it before resuming")
    if info.get("status") == "completed" and not changes:
        return run, f"{run.path}: already completed ({info.get('iteration')} iterations); nothing to do"

    session = Session.build(cfg)
    distributed.check_world_size(info.get("world_size"))
    state, path = resume_checkpoint(run)
    distributed.check_world_size(state.get("world_size"))
    session.restore(state, path)
    if session.iteration >= cfg.train.iterations:
        return run, (f"{run.path}: checkpoint is at iteration {session.iteration} of "
                     f"{cfg.train.iterations}; nothing to do")
    writer = distributed.on_main(lambda: run)  # rank 0 alone writes, as in `train`
    if changes:
        writer.write_config(config_mod.dump(cfg))
    # Rows after the checkpoint are redone; drop them (and any half-written last line) atomically.
    distributed.on_main(truncate_metrics, run.metrics_path, session.iteration)
    resumed = [*info.get("resumed", []), {"at": now_iso(), "iteration": session.iteration,
                                          "checkpoint": path.name, "config_changes": changes}]
    writer.update_info(status="running", pid=os.getpid(), host=os.uname().nodename, ended=None, error=None,
                       device=str(session.device), resumed=resumed)
    run_loop(writer, session, quiet)
    return run, None


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------- the loop


def run_loop(run: RunDir, s: Session, quiet: bool = False) -> None:
    tcfg, algo, optimizer = s.cfg.train, s.algo, s.optimizer
    metrics = distributed.on_main(tensorboard_log.metrics_writer, run, s.cfg.train.tensorboard)
    start = time.perf_counter() - s.seconds
    window_start, window_tasks = time.perf_counter(), 0
    watch = FiniteWatch(s.iteration, s.device, list(algo.parameters()))
    status, error = "failed", None
    has_checkpoint = s.iteration > 0  # a resumed run started from one
    run_path = run.path if isinstance(run, RunDir) else None  # what a stop reports (rank 0 holds the directory)

    def save(which: str) -> None:
        nonlocal has_checkpoint
        try:
            run.save_checkpoint(which, s.checkpoint(time.perf_counter() - start))
            has_checkpoint = True
        except OSError as exc:
            raise RunFailed(f"{run.checkpoint_path(which)}: cannot write checkpoint ({exc.strerror}); "
                            "the previous one is kept") from None

    try:
        with (StopSignals() as stop,
              TrainProgress(tcfg.iterations, str(run.path.name), disable=quiet or not distributed.is_main()) as progress):
            while s.iteration < tcfg.iterations:
                if stop.requested(s.device):
                    watch.check(s.iteration)
                    save("last")
                    raise Interrupted(stop.signum or signal.SIGTERM, s.iteration, saved=True)
                batch = distributed.my_share(s.family.sample(tcfg.meta_batch_size, s.task_gen))
                stats = algo.meta_step(batch, optimizer, s.iteration)
                s.iteration += 1
                stop.iteration = s.iteration
                it = s.iteration
                window_tasks += tcfg.meta_batch_size
                watch.update(stats)

                final = it == tcfg.iterations
                val = validation_loss(algo, s.val_batch, s.cfg) if it % tcfg.val_every == 0 or final else None
                logged = it % tcfg.log_every == 0 or val is not None or final
                periodic = it % tcfg.checkpoint_every == 0
                if not (logged or periodic):
                    continue
                # Here the host syncs anyway (a row, a validation or a checkpoint), so the
                # finiteness flags are read for free, before anything below is written.
                watch.check(it, val)

                if logged:
                    values = dict(zip(stats, distributed.mean_over_ranks(torch.stack(list(stats.values()))).tolist()))
                    now = time.perf_counter()
                    tasks_per_s = window_tasks / max(now - window_start, 1e-9)
                    metrics.write({"iteration": it, **values, "val_query_loss": val,
                                   "meta_lr": optimizer.param_groups[0]["lr"], "seconds": now - start,
                                   "tasks_per_s": tasks_per_s})
                    window_start, window_tasks = now, 0
                    progress.update(it, values, val, tasks_per_s)

                if val is not None and val < s.best_val:
                    s.best_val = val
                    save("best")
                if periodic or final:
                    save("last")
                    if periodic:
                        save(f"iter-{it}")
                    run.update_info(iteration=it)
        status = "completed"
    except Interrupted as exc:
        status = "interrupted"
        exc.run_path = run_path
        raise
    except KeyboardInterrupt:  # no handler installed (not the main thread): the state may be mid-step, save nothing
        status = "interrupted"
        raise
    except RunFailed as exc:
        if isinstance(exc, Divergence):
            exc.checkpoint_kept = has_checkpoint
        exc.run_path = run_path
        error = str(exc)
        raise
    except OSError as exc:  # e.g. the disk filled while writing metrics.csv or run.json
        error = f"cannot write the run directory ({exc.strerror or exc}); the last checkpoint is kept"
        failed = RunFailed(f"{run.path}: {error}")
        failed.run_path = run_path
        raise failed from None
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        metrics.close()
        try:
            run.update_info(status=status, ended=now_iso(), iteration=s.iteration, error=error,
                            seconds=round(time.perf_counter() - start, 3),
                            best_val_query_loss=s.best_val if math.isfinite(s.best_val) else None)
        except OSError:  # a full disk must not hide the error that stopped the run
            pass
