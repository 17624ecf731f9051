"""`metarun sweep` and `metarun train --seeds`: many ordinary runs from one config.

`--grid algorithm.inner_lr=0.001,0.01 --grid algorithm.inner_steps=1,5` is the
cross product (4 runs), each an ordinary run directory. With `--jobs 1` they
train one after another in this process; with `--jobs N` as N plain
`python -m metarun train CONFIG --set ... --quiet` subprocesses at once. A
failed run is recorded and the others go on. Every setting is validated
before the first run starts: a typo fails fast, with no run directory written.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from rich.table import Table

from metarun import config as config_mod
from metarun.errors import UserError
from metarun.evaluate import table_text
from metarun.runs_table import fmt_loss, run_row

Grid = list[tuple[str, list[str]]]  # (section.key, values as written on the command line)


def split_values(text: str) -> list[str]:
    """Split on commas outside brackets, so `model.hidden=[40,40],[80,80]` is two values."""
    values, depth, current = [], 0, ""
    for ch in text:
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += ch
    values.append(current.strip())
    return values


def parse_grid(specs: list[str], option: str = "--grid") -> Grid:
    grid: Grid = []
    for spec in specs:
        key, sep, raw = spec.partition("=")
        values = split_values(raw) if sep else []
        if not key.strip() or not values or not all(values):
            raise UserError(f"{option} {spec!r}: expected section.key=value1,value2,...")
        if any(key.strip() == k for k, _ in grid):
            raise UserError(f"{option} {spec!r}: {key.strip()} is swept twice")
        grid.append((key.strip(), values))
    return grid


def run_name(base: str, setting: list[tuple[str, str]]) -> str:
    """`maml-sinusoid_inner_lr=0.01_inner_steps=5`: the last part of each key and its value."""
    return "_".join([base, *(f"{key.split('.')[-1]}={value}" for key, value in setting)])


def plan(config: Path, overrides: list[str], grid: Grid) -> list[dict]:
    """One entry per point of the cross product, each validated (raises UserError)."""
    base = config_mod.load(config, overrides)
    points = []
    for values in itertools.product(*(vals for _, vals in grid)):
        setting = [(key, value) for (key, _), value in zip(grid, values)]
        sets = [*overrides, *(f"{k}={v}" for k, v in setting)]
        # A quoted name survives YAML parsing as a string whatever the values look like.
        sets.append(f"name={json.dumps(run_name(base.name, setting))}")
        config_mod.load(config, sets)
        points.append({"setting": dict(setting), "sets": sets})
    return points


def launch(config: Path, sets: list[str], runs_dir: Path, threads: int | None) -> dict:
    """Train one point in a subprocess; returns its exit code, run directory and last error line."""
    cmd = [sys.executable, "-m", "metarun", "train", str(config), "--runs-dir", str(runs_dir), "--quiet"]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ)
    if threads is not None:
        env.setdefault("OMP_NUM_THREADS", str(threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    out = proc.stdout.strip().splitlines()
    err = proc.stderr.strip().splitlines()
    # The trainer prints the run directory on its last line (also on failure, none is printed).
    run = out[-1] if proc.returncode == 0 and out else None
    return {"exit_code": proc.returncode, "run": run, "error": err[-1] if proc.returncode and err else None}


def train_here(config: Path, sets: list[str], runs_dir: Path, threads: int | None) -> dict:
    """Train one point in this process; the same result fields as `launch`."""
    from metarun.train import Divergence, train

    try:
        run = train(config_mod.load(config, sets), runs_dir, quiet=True)
    except UserError as exc:
        return {"exit_code": 2, "run": None, "error": f"metarun: error: {exc}"}
    except Divergence as exc:
        return {"exit_code": 1, "run": None, "error": f"metarun: error: {exc}"}
    return {"exit_code": 0, "run": str(run.path), "error": None}


def run_sweep(config: Path, overrides: list[str], grid: Grid, runs_dir: Path, jobs: int = 1,
              report: Callable[[str], None] | None = None) -> list[dict]:
    """Run every point (in grid order in the result); `report` gets a line as each one ends."""
    if jobs < 1:
        raise UserError(f"--jobs: must be >= 1, got {jobs}")
    points = plan(config, overrides, grid)
    # N torch processes on N cores: one thread each unless the user chose otherwise.
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    runner = launch if jobs > 1 else train_here
    results: list[dict | None] = [None] * len(points)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(runner, config, p["sets"], runs_dir, threads): i for i, p in enumerate(points)}
        for done, future in enumerate(as_completed(futures), start=1):
            i = futures[future]
            results[i] = {"setting": points[i]["setting"], **future.result()}
            if report:
                r = results[i]
                outcome = r["run"] if r["exit_code"] == 0 else f"exit {r['exit_code']}: {r['error']}"
                report(f"[{done}/{len(points)}] {_setting_text(r['setting'])} -> {outcome}")
    for r in results:
        r["summary"] = run_row(Path(r["run"])) if r["run"] else None
    return results


def _setting_text(setting: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in setting.items())


def render(results: list[dict]) -> str:
    keys = list(results[0]["setting"]) if results else []
    t = Table()
    for key in keys:
        t.add_column(key, justify="right")
    t.add_column("status")
    t.add_column("best val", justify="right")
    t.add_column("last query", justify="right")
    t.add_column("run")
    for r in results:
        s = r["summary"] or {}
        status = s.get("status") or f"exit {r['exit_code']}"
        t.add_row(*(str(r["setting"][k]) for k in keys), status, fmt_loss(s.get("best_val_query_loss")),
                  fmt_loss(s.get("last_query_loss")), Path(r["run"]).name if r["run"] else (r["error"] or "-"))
    return table_text(t, width=200)
