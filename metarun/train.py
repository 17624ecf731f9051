"""The meta-training loop: sample a meta-batch, meta-step, log, checkpoint.

Reads top to bottom: set up (device, seeds, family, algorithm, run directory),
then one loop. The algorithm owns everything about inner loops.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from metarun import config as config_mod
from metarun import distributed, tensorboard_log
from metarun.algorithms import Algorithm, make_algorithm
from metarun.config import Config
from metarun.errors import UserError
from metarun.progress import TrainProgress
from metarun.rundir import RunDir, now_iso, run_info
from metarun.tasks import TaskBatch, make_family, make_generator


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


def rng_state(task_gen: torch.Generator) -> dict:
    state = {"tasks": task_gen.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def checkpoint_state(algo: Algorithm, optimizer: torch.optim.Optimizer, iteration: int,
                     task_gen: torch.Generator, best_val: float) -> dict:
    return {
        "iteration": iteration,
        "model": algo.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": rng_state(task_gen),
        "best_val": best_val,
        "world_size": distributed.world_size(),
    }


def validation_loss(algo: Algorithm, val_batch: TaskBatch, cfg: Config) -> float:
    """Mean query loss on the fixed validation tasks after the training inner steps."""
    return algo.adaptation_losses(val_batch, cfg.algorithm.inner_steps)[:, -1].mean().item()


def train(cfg: Config, runs_dir: Path, quiet: bool = False) -> RunDir:
    dist_ctx = distributed.setup(resolve_device(cfg.device), cfg.train.meta_batch_size)
    device = dist_ctx.device
    torch.manual_seed(cfg.seed)
    family = make_family(cfg.task)
    algo = make_algorithm(cfg, family.dx, family.dy).to(device)
    optimizer = algo.make_optimizer(cfg.train.meta_lr)
    task_gen = make_generator(cfg.seed, "train", device)
    val_batch = family.sample(cfg.train.val_tasks, make_generator(cfg.seed, "validation", device))

    if cfg.train.tensorboard:
        tensorboard_log.require()  # before the run directory exists
    # Only rank 0 writes the run directory; other ranks get no-op stand-ins.
    run = distributed.on_main(RunDir.create, runs_dir, cfg.name, config_mod.dump(cfg),
                              {**run_info(cfg.seed, device, cfg.name), "world_size": dist_ctx.world_size})
    metrics = distributed.on_main(tensorboard_log.metrics_writer, run, cfg.train.tensorboard)
    tcfg = cfg.train
    best_val = math.inf
    iteration = 0
    start = time.perf_counter()
    window_start, window_tasks = start, 0
    status, error = "failed", None
    try:
        with TrainProgress(tcfg.iterations, str(run.path.name), disable=quiet or not dist_ctx.is_main) as progress:
            while iteration < tcfg.iterations:
                batch = distributed.my_share(family.sample(tcfg.meta_batch_size, task_gen))
                stats = algo.meta_step(batch, optimizer, iteration)
                iteration += 1
                window_tasks += tcfg.meta_batch_size

                val = None
                if iteration % tcfg.val_every == 0 or iteration == tcfg.iterations:
                    val = validation_loss(algo, val_batch, cfg)
                if iteration % tcfg.log_every == 0 or val is not None or iteration == tcfg.iterations:
                    values = dict(zip(stats, distributed.mean_over_ranks(torch.stack(list(stats.values()))).tolist()))
                    if not all(math.isfinite(v) for v in values.values()) or (val is not None and not math.isfinite(val)):
                        raise Divergence(iteration)
                    now = time.perf_counter()
                    tasks_per_s = window_tasks / max(now - window_start, 1e-9)
                    metrics.write({"iteration": iteration, **values, "val_query_loss": val,
                                   "meta_lr": optimizer.param_groups[0]["lr"], "seconds": now - start,
                                   "tasks_per_s": tasks_per_s})
                    window_start, window_tasks = now, 0
                    progress.update(iteration, values, val, tasks_per_s)

                if val is not None and val < best_val:
                    best_val = val
                    run.save_checkpoint("best", checkpoint_state(algo, optimizer, iteration, task_gen, best_val))
                if iteration % tcfg.checkpoint_every == 0 or iteration == tcfg.iterations:
                    state = checkpoint_state(algo, optimizer, iteration, task_gen, best_val)
                    run.save_checkpoint("last", state)
                    if iteration % tcfg.checkpoint_every == 0:
                        run.save_checkpoint(f"iter-{iteration}", state)
                    run.update_info(iteration=iteration)
        status = "completed"
    except Divergence as exc:
        error = str(exc)
        raise
    except KeyboardInterrupt:
        status = "interrupted"
        run.save_checkpoint("last", checkpoint_state(algo, optimizer, iteration, task_gen, best_val))
        raise
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        metrics.close()
        run.update_info(status=status, ended=now_iso(), iteration=iteration, error=error,
                        seconds=round(time.perf_counter() - start, 3),
                        best_val_query_loss=best_val if math.isfinite(best_val) else None)
    return run


class Divergence(Exception):
    def __init__(self, iteration: int):
        super().__init__(f"training diverged at iteration {iteration}: non-finite loss; "
                         "the last good checkpoint is kept")
        self.iteration = iteration
