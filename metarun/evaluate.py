"""Held-out evaluation: query MSE after 0..S adaptation steps, mean and 95% CI.

Reads everything from the run directory (its own config and checkpoint) and
draws held-out tasks from the "eval" stream, which no training or validation
stream shares. The same options give the same numbers.
"""

from __future__ import annotations

import io
import math
import secrets
from dataclasses import asdict, fields
from datetime import datetime
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from metarun import config as config_mod
from metarun.algorithms import Algorithm, make_algorithm
from metarun.config import Config, TaskConfig
from metarun.errors import UserError
from metarun.rundir import RunDir, now_iso, write_json
from metarun.tasks import TaskBatch, TaskFamily, make_family, make_generator
from metarun.train import resolve_device

Z95 = 1.959963984540054


def summarize(losses: torch.Tensor) -> dict[str, list[float]]:
    """Per-step mean, std and 95% CI half-width over tasks. losses: [B, S + 1]."""
    losses = losses.double()
    n = losses.shape[0]
    mean = losses.mean(0)
    std = losses.std(0, unbiased=True) if n > 1 else torch.zeros_like(mean)
    return {"mean": mean.tolist(), "std": std.tolist(), "ci95": (Z95 * std / math.sqrt(n)).tolist()}


def load_algorithm(run: RunDir, cfg: Config, checkpoint: str, device: torch.device) -> tuple[Algorithm, TaskFamily, dict]:
    family = make_family(cfg.task)
    algo = make_algorithm(cfg, family.dx, family.dy)
    state = run.load_checkpoint(checkpoint, map_location=device)
    try:
        algo.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"{run.checkpoint_path(checkpoint)}: checkpoint does not fit this run's model ({first})") from None
    return algo.to(device).eval(), family, state


def held_out_tasks(family: TaskFamily, cfg: Config, device: torch.device) -> TaskBatch:
    e = cfg.eval
    gen = make_generator(e.seed, "eval", device)
    return family.sample(e.tasks, gen, support_shots=e.shots or cfg.task.support_shots, query_shots=e.query_shots)


def shifted_config(trained: dict, overrides: list[str]) -> Config:
    """The run's config with the eval `--set` overrides applied.

    A changed `task.family` starts the task section from the new family's
    defaults (keeping only the shared fields: shots and noise), since the old
    family's ranges mean nothing to it. Input and output dimensions must stay
    those the network was trained for; anything else is a legitimate shift.
    """
    before = make_family(config_mod.resolve(trained).task)
    data = trained
    task = config_mod.apply_overrides(trained, overrides).get("task")
    if isinstance(task, dict) and task.get("family", before.name) != before.name:
        shared = {f.name for f in fields(TaskConfig)} - {"family"}
        data = {**trained, "task": {k: v for k, v in trained.get("task", {}).items() if k in shared}}
    cfg = config_mod.resolve(data, overrides)
    after = make_family(cfg.task)
    if (before.dx, before.dy) != (after.dx, after.dy):
        raise UserError(f"task: this run's network takes dx={before.dx}, dy={before.dy} ({before.name}); "
                        f"the --set task overrides give dx={after.dx}, dy={after.dy} ({after.name}); "
                        "evaluation cannot change the input or output dimension")
    return cfg


def open_run(run_path: Path, overrides: list[str] = ()) -> tuple[RunDir, Config, Config]:
    """(run, config with `overrides` applied, config as trained)."""
    run = RunDir.open(run_path)
    trained = config_mod.read_yaml(run.config_path)
    return run, shifted_config(trained, overrides), config_mod.resolve(trained)


def task_losses(algo: Algorithm, batch: TaskBatch, steps: int, inner_lr: float | None) -> torch.Tensor:
    """Query MSE of every task after 0..steps adaptation steps: [B, steps + 1].
    A model-based learner has no inner loop: its one figure fills every step."""
    losses = algo.adaptation_losses(batch, steps if algo.adapts else 0, inner_lr)
    return losses if algo.adapts else losses[:, :1].expand(-1, steps + 1)


def describe_run(run: RunDir, cfg: Config, trained_cfg: Config, algo: Algorithm, checkpoint: str,
                 state: dict, dev: torch.device) -> dict:
    """The JSON fields that say what was evaluated and how (all but the losses)."""
    e = cfg.eval
    return {
        "run": str(run.path),
        "algorithm": cfg.algorithm.name,
        "checkpoint": checkpoint,
        "checkpoint_iteration": state.get("iteration"),
        "eval_seed": e.seed,
        "train_seed": cfg.seed,
        "tasks": e.tasks,
        "shots": e.shots or cfg.task.support_shots,
        "query_shots": e.query_shots,
        "steps": e.steps,
        "adapts": algo.adapts,
        "inner_lr": e.inner_lr if e.inner_lr is not None else cfg.algorithm.inner_lr,
        "task": asdict(cfg.task),
        "task_shifted": asdict(cfg.task) != asdict(trained_cfg.task),
        "device": str(dev),
        "created": now_iso(),
    }


def evaluate(run_path: Path, checkpoint: str = "best", overrides: list[str] = (), device: str = "auto") -> dict:
    """Evaluate a run; `overrides` are `--set` strings applied to the run's own
    config (eval.* for the protocol, task.* for an out-of-distribution shift)."""
    run, cfg, trained_cfg = open_run(run_path, overrides)
    dev = resolve_device(device)
    algo, family, state = load_algorithm(run, cfg, checkpoint, dev)
    batch = held_out_tasks(family, cfg, dev)
    losses = task_losses(algo, batch, cfg.eval.steps, cfg.eval.inner_lr)  # [B, steps + 1]
    # Per-task scalars such as the CNP's NLL: {name: {mean, std, ci95}}.
    extra = {name: {k: v[0] for k, v in summarize(values[:, None]).items()}
             for name, values in algo.eval_metrics(batch).items()}
    return {**describe_run(run, cfg, trained_cfg, algo, checkpoint, state, dev), "query_mse": summarize(losses),
            "metrics": extra}


def render(result: dict) -> str:
    """The terminal table, as plain text (also saved next to the JSON)."""
    lines = [f"{result['algorithm']} on {result['task']['family']}: {result['shots']}-shot, "
             f"{result['tasks']} held-out tasks (eval seed {result['eval_seed']}), "
             f"checkpoint {result['checkpoint']} (iteration {result['checkpoint_iteration']})"]
    if result["task_shifted"]:
        lines.append("task distribution SHIFTED from training (see 'task' in the JSON)")
    if not result["adapts"]:
        lines.append("model-based: no inner steps; the same prediction is scored at every step")
    t = Table()
    t.add_column("steps", justify="right")
    t.add_column("query MSE", justify="right")
    t.add_column("95% CI", justify="right")
    q = result["query_mse"]
    for step, (m, ci) in enumerate(zip(q["mean"], q["ci95"])):
        t.add_row(str(step), f"{m:.4f}", f"± {ci:.4f}")
    extra = [f"{name.replace('_', ' ')}: {v['mean']:.4f} ± {v['ci95']:.4f} (95% CI)\n"
             for name, v in result.get("metrics", {}).items()]
    return "\n".join(lines) + "\n" + table_text(t) + "".join(extra)


def table_text(table: Table, width: int = 120) -> str:
    """A rich table as plain text (no colour codes), the same on a terminal and in a pipe."""
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(table)
    return console.export_text()


def save(run_path: Path, result: dict, rendered: str) -> Path:
    run = RunDir.open(run_path)
    label = result["checkpoint"] if result["checkpoint"] in ("best", "last") else Path(result["checkpoint"]).stem
    stem = f"{datetime.now():%Y%m%d-%H%M%S}_{label}_{result['shots']}shot_{secrets.token_hex(2)}"
    path = run.eval_dir / f"{stem}.json"
    run.eval_dir.mkdir(exist_ok=True)
    write_json(path, result)
    (run.eval_dir / f"{stem}.txt").write_text(rendered)
    return path
