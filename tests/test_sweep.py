"""`metarun sweep` and `metarun train --seeds`: ordinary run directories, one per setting.

With --jobs 2 each point is a real `python -m metarun train` subprocess (the
slow part of these tests); with --jobs 1 they run in-process. Runs have 2 iterations.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import yaml

from metarun.sweep import parse_grid, split_values

FAST = {"train": {"iterations": 2, "val_every": 2, "checkpoint_every": 2, "val_tasks": 4}}


def resolved(run: Path) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())


def test_sweep_2x2_makes_four_runs_with_the_right_configs(write_config, cli, tmp_path):
    config = write_config(**FAST)
    runs_dir = tmp_path / "runs"
    result = cli("sweep", config, "--grid", "algorithm.inner_lr=0.01,0.05", "--grid", "model.hidden=[8],[8,8]",
                 "--runs-dir", runs_dir, "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    made = sorted(p for p in runs_dir.iterdir())
    assert len(made) == 4 and sorted(Path(r["run"]) for r in out) == made
    want = set(itertools.product([0.01, 0.05], [(8,), (8, 8)]))
    got = {(resolved(p)["algorithm"]["inner_lr"], tuple(resolved(p)["model"]["hidden"])) for p in made}
    assert got == want
    for r in out:  # the JSON row says which setting made which directory, and that it completed
        cfg = resolved(Path(r["run"]))
        assert str(cfg["algorithm"]["inner_lr"]) == r["setting"]["algorithm.inner_lr"]
        assert r["exit_code"] == 0 and r["summary"]["status"] == "completed"
        assert cfg["train"]["iterations"] == 2 and cfg["name"].startswith("tiny_inner_lr=")
        assert json.loads((Path(r["run"]) / "run.json").read_text())["status"] == "completed"


def test_sweep_jobs_runs_subprocesses(write_config, cli, tmp_path):
    result = cli("sweep", write_config(**FAST), "--grid", "seed=5,6", "--jobs", "2", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.stderr
    made = sorted((tmp_path / "runs").iterdir())
    assert sorted(resolved(p)["seed"] for p in made) == [5, 6]
    assert all(p.name in result.stdout for p in made) and "completed" in result.stdout  # the summary table
    assert "[2/2]" in result.stderr  # a line as each run ends


def test_sweep_bad_key_fails_before_any_run(write_config, cli, tmp_path):
    result = cli("sweep", write_config(**FAST), "--grid", "algorithm.inner_lr=0.01,-1", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "algorithm.inner_lr" in result.stderr
    assert not (tmp_path / "runs").exists()
    result = cli("sweep", write_config(**FAST), "--grid", "algorithm.inner_lr", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "--grid" in result.stderr


def test_train_seeds_prints_one_run_per_seed(write_config, cli, tmp_path):
    result = cli("train", write_config(**FAST), "--seeds", "3,4", "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    assert [resolved(Path(line))["seed"] for line in lines] == [3, 4]
    clash = cli("train", write_config(**FAST), "--seeds", "1,2", "--seed", "1", "--runs-dir", tmp_path / "runs")
    assert clash.exit_code == 2 and "--seeds" in clash.stderr


def test_grid_parsing():
    assert split_values("[40,40],[80, 80],7") == ["[40,40]", "[80, 80]", "7"]
    assert parse_grid(["a.b=1,2", "seed=0"]) == [("a.b", ["1", "2"]), ("seed", ["0"])]
