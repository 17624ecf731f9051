"""`metarun runs`: one row per run directory under RUNS_DIR, newest first.

Everything is read from the files the trainer and `eval` already write
(run.json, config.yaml, metrics.csv, eval/*.json); nothing is recomputed.
A folder that is not a run directory is skipped, a damaged one is listed
with what could be read.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from rich.table import Table

from metarun import config as config_mod
from metarun.errors import UserError
from metarun.evaluate import table_text
from metarun.rundir import RunDir

STATUSES = ("running", "completed", "failed", "interrupted")


def _float(text: str | None) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def metrics_summary(path: Path) -> dict:
    """Last logged iteration and query loss, and best validation loss, from metrics.csv."""
    last, best, iteration = None, None, None
    try:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                iteration = int(row["iteration"]) if (row.get("iteration") or "").isdigit() else iteration
                last = _float(row.get("query_loss")) if row.get("query_loss") else last
                val = _float(row.get("val_query_loss"))
                if val is not None and (best is None or val < best):
                    best = val
    except (OSError, csv.Error):
        pass
    return {"logged_iteration": iteration, "last_query_loss": last, "best_val_query_loss": best}


def latest_eval(run: RunDir) -> dict | None:
    """The newest eval JSON's headline: query MSE ± CI after its last step."""
    files = sorted(run.eval_dir.glob("*.json")) if run.eval_dir.is_dir() else []
    for path in reversed(files):  # names start with a timestamp
        try:
            result = json.loads(path.read_text())
            q = result["query_mse"]
            return {"file": str(path), "steps": result["steps"], "shots": result["shots"],
                    "checkpoint": result["checkpoint"], "query_mse": q["mean"][-1], "ci95": q["ci95"][-1]}
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            continue
    return None


def run_row(path: Path) -> dict:
    """Everything `runs` shows about one run directory."""
    run = RunDir.open(path)
    info = run.info()
    try:
        cfg = config_mod.read_yaml(run.config_path)
    except UserError:
        cfg = {}
    section = lambda name: cfg.get(name) if isinstance(cfg.get(name), dict) else {}  # noqa: E731
    metrics = metrics_summary(run.metrics_path)
    logged = metrics.pop("logged_iteration")
    # run.json's iteration moves at checkpoints only; a live run's metrics.csv is ahead of it.
    iteration = max(i for i in (info.get("iteration"), logged, 0) if isinstance(i, int))
    return {
        "run": str(run.path),
        "name": info.get("name", cfg.get("name")),
        "algorithm": section("algorithm").get("name"),
        "family": section("task").get("family"),
        "seed": info.get("seed"),
        "status": info.get("status"),
        "iteration": iteration,
        "iterations": section("train").get("iterations"),
        "started": info.get("started"),
        **metrics,
        "latest_eval": latest_eval(run),
    }


def list_runs(runs_dir: Path, algorithm: str | None = None, status: str | None = None,
              family: str | None = None) -> list[dict]:
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise UserError(f"{runs_dir}: no such runs directory")
    if status is not None and status not in STATUSES:
        raise UserError(f"--status: {status!r} is not one of {', '.join(STATUSES)}")
    rows = []
    for path in runs_dir.iterdir():
        if path.name.startswith(".") or not (path / "run.json").is_file():
            continue  # hidden staging folders and anything that is not a run
        try:
            rows.append(run_row(path))
        except UserError:
            continue
    rows = [r for r in rows if (algorithm is None or r["algorithm"] == algorithm)
            and (status is None or r["status"] == status) and (family is None or r["family"] == family)]
    # Newest first: the start time, then the directory name (which starts with a timestamp).
    return sorted(rows, key=lambda r: (r["started"] or "", Path(r["run"]).name), reverse=True)


def fmt_loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def render(rows: list[dict]) -> str:
    t = Table(box=None)
    for column, justify in [("run", "left"), ("algorithm", "left"), ("family", "left"), ("seed", "right"),
                            ("status", "left"), ("iterations", "right"), ("last query", "right"),
                            ("best val", "right"), ("latest eval (query MSE)", "right")]:
        t.add_column(column, justify=justify)
    for r in rows:
        e = r["latest_eval"]
        ev = "-" if e is None else f"{e['query_mse']:.4f} ± {e['ci95']:.4f} ({e['shots']}-shot, {e['steps']} steps)"
        t.add_row(Path(r["run"]).name, str(r["algorithm"]), str(r["family"]), str(r["seed"]), str(r["status"]),
                  f"{r['iteration']}/{r['iterations']}", fmt_loss(r["last_query_loss"]), fmt_loss(r["best_val_query_loss"]), ev)
    return table_text(t, width=200)

