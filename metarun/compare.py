"""`metarun compare`: several runs scored on the very same held-out tasks.

Every run is evaluated on one batch of held-out tasks: the first run's task
distribution and eval protocol (seed, shots, query points, steps), after
`--set` overrides. Because the tasks are shared, the difference of two runs
is taken task by task (a paired difference), whose CI is much tighter than
two overlapping CIs would suggest. Runs whose configs differ only in the seed
are grouped, and each group is summarised as mean ± 95% CI across seeds.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import torch
from rich.table import Table

from metarun import config as config_mod
from metarun.errors import UserError
from metarun.evaluate import Z95, describe_run, held_out_tasks, load_algorithm, open_run, summarize, table_text, task_losses
from metarun.tasks import TaskBatch, TaskFamily, make_family
from metarun.train import resolve_device

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (a few
# seeds are the usual case, where the normal 1.96 would be far too narrow).
T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
        2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
        2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)

# Config keys that do not change what is learnt: runs differing only here are seeds of one setting.
SEED_KEYS = ("seed", "name", "device")


def t_quantile(df: int) -> float:
    """0.975 quantile of Student's t with `df` degrees of freedom."""
    if df < 1:
        raise ValueError("t_quantile needs df >= 1")
    if df <= len(T975):
        return T975[df - 1]
    z = Z95  # Cornish-Fisher expansion; error < 1e-4 past 30 degrees of freedom
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def score_runs(paths: list[Path], checkpoint: str = "best", overrides: list[str] = (),
               device: str = "auto") -> tuple[list[dict], list[torch.Tensor], TaskBatch, TaskFamily]:
    """Evaluate every run on the first run's held-out tasks.

    Returns (one description per run as in `metarun eval`'s JSON, the per-task
    query losses of each run [B, steps + 1], the shared tasks, their family)."""
    if not paths:
        raise UserError("compare: give at least one run directory")
    dev = resolve_device(device)
    _, first, _ = open_run(paths[0], overrides)
    family = make_family(first.task)
    batch = held_out_tasks(family, first, dev)
    descriptions, losses = [], []
    for path in paths:
        run, cfg, trained = open_run(path, overrides)
        # The first run's tasks and protocol for all; each run keeps its own model and inner_lr.
        cfg = replace(cfg, task=first.task, eval=replace(first.eval, inner_lr=cfg.eval.inner_lr))
        algo, _, state = load_algorithm(run, cfg, checkpoint, dev)
        descriptions.append(describe_run(run, cfg, trained, algo, checkpoint, state, dev))
        losses.append(task_losses(algo, batch, first.eval.steps, cfg.eval.inner_lr).cpu())  # [B, S + 1]
    return descriptions, losses, batch, family


def seed_group_key(run_path: str) -> str:
    """The run's resolved config without seed, name and device, as a string."""
    _, _, trained = open_run(Path(run_path))
    data = config_mod.to_dict(trained)
    for key in SEED_KEYS:
        data.pop(key, None)
    return json.dumps(data, sort_keys=True)


def across_seeds(means: torch.Tensor) -> dict:
    """Mean and 95% t-CI across seeds of per-run means: means [R, S + 1]."""
    means = means.double()
    n = means.shape[0]
    mean = means.mean(0)
    if n < 2:
        return {"n": n, "mean": mean.tolist(), "ci95": [None] * mean.shape[0]}
    half = t_quantile(n - 1) * means.std(0, unbiased=True) / math.sqrt(n)
    return {"n": n, "mean": mean.tolist(), "ci95": half.tolist()}


def compare(paths: list[Path], checkpoint: str = "best", overrides: list[str] = (), device: str = "auto",
            at: list[int] | None = None) -> dict:
    descriptions, losses, _, _ = score_runs(paths, checkpoint, overrides, device)
    steps = descriptions[0]["steps"]
    at = sorted(set(at)) if at else sorted({0, min(1, steps), steps})
    for s in at:
        if not 0 <= s <= steps:
            raise UserError(f"--at: step {s} is outside 0..{steps} (raise eval.steps with --steps)")
    runs = []
    for desc, loss in zip(descriptions, losses):
        runs.append({**desc, "query_mse": summarize(loss),
                     # paired over the shared tasks: [B, S + 1] differences to the first run
                     "difference_to_first": summarize(loss - losses[0])})
    groups: dict[str, list[int]] = {}
    for i, desc in enumerate(descriptions):
        members = groups.setdefault(seed_group_key(desc["run"]), [])
        if all(descriptions[j]["run"] != desc["run"] for j in members):  # a run given twice counts once
            members.append(i)
    group_rows = []
    for members in groups.values():
        means = torch.stack([losses[i].double().mean(0) for i in members])  # [R, S + 1]
        first = descriptions[members[0]]
        group_rows.append({"algorithm": first["algorithm"], "runs": [descriptions[i]["run"] for i in members],
                           "seeds": [descriptions[i]["train_seed"] for i in members],
                           "query_mse": across_seeds(means)})
    protocol = {k: descriptions[0][k] for k in ("checkpoint", "eval_seed", "tasks", "shots", "query_shots", "steps", "task")}
    return {"protocol": protocol, "at": at, "runs": runs, "seed_groups": group_rows}


def _cell(mean: float, ci: float | None, signed: bool = False) -> str:
    if ci is None:
        return f"{mean:+.4f}" if signed else f"{mean:.4f}"
    text = f"{mean:+.4f} ± {ci:.4f}" if signed else f"{mean:.4f} ± {ci:.4f}"
    # '*': the 95% CI excludes zero, i.e. the difference is unlikely to be noise.
    return text + (" *" if signed and abs(mean) > ci else "")


def _label(run: str) -> str:
    return Path(run).name


def render(result: dict) -> str:
    p = result["protocol"]
    lines = [f"{len(result['runs'])} runs on the same {p['tasks']} held-out {p['task']['family']} tasks "
             f"({p['shots']}-shot, {p['query_shots']} query points, eval seed {p['eval_seed']}, checkpoint {p['checkpoint']})",
             "query MSE ± 95% CI over tasks; Δ = run − first run, paired task by task (* : CI excludes 0)"]
    t = Table()
    for col in ("run", "algorithm", "seed"):
        t.add_column(col)
    for s in result["at"]:
        t.add_column(f"MSE @{s}", justify="right")
    for s in result["at"]:
        t.add_column(f"Δ @{s}", justify="right")
    for i, r in enumerate(result["runs"]):
        q, d = r["query_mse"], r["difference_to_first"]
        diffs = ["(reference)" if i == 0 else _cell(d["mean"][s], d["ci95"][s], signed=True) for s in result["at"]]
        t.add_row(_label(r["run"]), r["algorithm"], str(r["train_seed"]),
                  *[_cell(q["mean"][s], q["ci95"][s]) for s in result["at"]], *diffs)
    text = "\n".join(lines) + "\n" + table_text(t, width=220)
    if any(g["query_mse"]["n"] > 1 for g in result["seed_groups"]):
        g_table = Table()
        g_table.add_column("setting (runs equal but for the seed)")
        g_table.add_column("seeds", justify="right")
        for s in result["at"]:
            g_table.add_column(f"MSE @{s}, mean ± CI over seeds", justify="right")
        for g in result["seed_groups"]:
            q = g["query_mse"]
            g_table.add_row(f"{g['algorithm']}: {_label(g['runs'][0])}" + (" ..." if len(g["runs"]) > 1 else ""),
                            ",".join(map(str, g["seeds"])), *[_cell(q["mean"][s], q["ci95"][s]) for s in result["at"]])
        text += table_text(g_table, width=220)
    return text
