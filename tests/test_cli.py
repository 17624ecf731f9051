"""End to end through the CLI: train, eval, the run-directory contract,
determinism, and config errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from metarun.rundir import METRIC_COLUMNS, read_metrics

TIME_COLUMNS = {"seconds", "tasks_per_s"}


def train(cli, config: Path, runs: Path, *extra) -> Path:
    result = cli("train", config, "--runs-dir", runs, "-q", *extra)
    assert result.exit_code == 0, result.stderr
    run = Path(result.stdout.strip().splitlines()[-1])  # the last line names the run directory
    assert run.parent == runs
    return run


def test_train_then_eval_fills_the_run_directory(cli, write_config, tmp_path):
    run = train(cli, write_config(), tmp_path / "runs", "--set", "train.iterations=7", "--seed", "3")

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["train"]["iterations"] == 7 and cfg["seed"] == 3  # overrides resolved into it
    assert cfg["task"]["amplitude"] == [0.1, 5.0]  # defaults too

    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["iteration"] == 7 and info["seed"] == 3
    for key in ("device", "python", "torch", "metarun", "started", "ended", "git_commit"):
        assert key in info

    rows = read_metrics(run / "metrics.csv")
    assert list(rows[0]) == METRIC_COLUMNS
    assert [int(r["iteration"]) for r in rows] == list(range(1, 8))
    assert all(float(r["query_loss"]) >= 0 for r in rows)
    assert rows[2]["val_query_loss"] and not rows[0]["val_query_loss"]  # val_every=3

    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["best.pt", "iter-3.pt", "iter-6.pt", "last.pt"]
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert last["iteration"] == 7 and {"model", "optimizer", "rng"} <= set(last)

    result = cli("eval", run, "--shots", "4", "--steps", "2", "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["shots"] == 4 and out["steps"] == 2 and out["algorithm"] == "maml"
    assert out["eval_seed"] == 0 and out["checkpoint"] == "best"
    assert len(out["query_mse"]["mean"]) == 3 and len(out["query_mse"]["ci95"]) == 3
    saved = json.loads(Path(out["saved"]).read_text())
    assert saved["query_mse"] == out["query_mse"]
    assert Path(out["saved"]).with_suffix(".txt").read_text().count("±") == 3

    again = json.loads(cli("eval", run, "--shots", "4", "--steps", "2", "--json").stdout)
    assert again["query_mse"] == out["query_mse"]  # same options, same numbers
    other = json.loads(cli("eval", run, "--shots", "4", "--steps", "2", "--seed", "1", "--json").stdout)
    assert other["query_mse"]["mean"] != out["query_mse"]["mean"]

    table = cli("eval", run, "--checkpoint", "last", "--steps", "1")
    assert table.exit_code == 0 and "query MSE" in table.stdout and "checkpoint last" in table.stdout


def assert_same_state(a, b, where: str = "") -> None:
    """Equal nested checkpoint contents: every tensor bit for bit, every other value equal."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif where != ".seconds":  # the clock is the one thing allowed to differ
        assert a == b, where


@pytest.mark.parametrize("algorithm", ["maml", "fomaml"])
def test_same_config_and_seed_give_identical_runs(cli, write_config, tmp_path, algorithm):
    config = write_config(algorithm={"name": algorithm})
    a = train(cli, config, tmp_path / "runs")
    b = train(cli, config, tmp_path / "runs")
    assert a != b  # two runs in the same second still get their own directories
    rows_a, rows_b = read_metrics(a / "metrics.csv"), read_metrics(b / "metrics.csv")
    strip = [{k: v for k, v in r.items() if k not in TIME_COLUMNS} for r in rows_a]
    assert strip == [{k: v for k, v in r.items() if k not in TIME_COLUMNS} for r in rows_b]
    for name in ("last.pt", "best.pt", "iter-3.pt"):
        sa = torch.load(a / "checkpoints" / name, weights_only=True)
        sb = torch.load(b / "checkpoints" / name, weights_only=True)
        assert {"model", "optimizer", "rng"} <= set(sa)
        assert_same_state(sa, sb)  # parameters, Adam moments and every RNG state


@pytest.mark.parametrize("sections,extra,expected", [
    ({"task": {"supprot_shots": 5}}, [], "task.supprot_shots: unknown key"),
    ({"algorithm": {"inner_lr": -0.01}}, [], "algorithm.inner_lr: must be > 0.0, got -0.01"),
    ({"task": {"support_shots": 0}}, [], "task.support_shots: must be >= 1, got 0"),
    ({"train": {"iterations": 0}}, [], "train.iterations: must be >= 1, got 0"),
    ({"task": {"amplitude": [5, 1]}}, [], "task.amplitude: empty range"),
    ({"algorithm": {"inner_steps": "two"}}, [], "algorithm.inner_steps: expected int, got 'two'"),
    ({"algorithm": {"name": "mamll"}}, [], "algorithm.name: unknown algorithm 'mamll'; choose from"),
    ({}, ["--set", "algorithm.inner_lr=0"], "algorithm.inner_lr: must be > 0.0, got 0.0"),
    ({}, ["--set", "train.itrations=5"], "train.itrations: unknown key"),
    ({}, ["--set", "train.iterations"], "expected section.key=value"),
])
def test_bad_config_is_one_line_exit_2_and_no_run(cli, write_config, tmp_path, sections, extra, expected):
    runs = tmp_path / "runs"
    result = cli("train", write_config(**sections), "--runs-dir", runs, *extra)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not runs.exists() or not any(runs.iterdir())


def test_missing_config_file(cli, tmp_path):
    result = cli("train", tmp_path / "nope.yaml", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "nope.yaml: config file not found" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_shipped_configs_resolve():
    from metarun import config

    for path in sorted(Path(__file__).parent.parent.glob("configs/*.yaml")):
        config.load(path)  # raises on any schema error


@pytest.mark.parametrize("path", sorted((Path(__file__).parent.parent / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_config_trains_and_evaluates(cli, tmp_path, path):
    """Every config in configs/ runs through `metarun train` and `metarun eval` (a few iterations)."""
    run = train(cli, path, tmp_path / "runs", "--device", "cpu", "--set", "train.iterations=3",
                "--set", "train.val_every=3", "--set", "train.val_tasks=8", "--set", "train.checkpoint_every=3")
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    result = cli("eval", run, "--tasks", "10", "--steps", "2", "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["algorithm"] == yaml.safe_load(path.read_text())["algorithm"]["name"]
    assert len(out["query_mse"]["mean"]) == 3 and all(m >= 0 for m in out["query_mse"]["mean"])
    assert Path(out["saved"]).parent == run / "eval"


def test_numbers_in_scientific_notation_are_floats(cli, write_config, tmp_path):
    """1e-3 is a float in a YAML file and in --set (PyYAML alone, following YAML 1.1, reads it as a string)."""
    path = write_config()
    text = path.read_text().replace("inner_lr: 0.01", "inner_lr: 1e-2")
    assert "inner_lr: 1e-2" in text
    path.write_text(text)
    run = train(cli, path, tmp_path / "runs", "--set", "train.meta_lr=5E-4", "--set", "task.amplitude=[1e-1, 5e0]")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["algorithm"]["inner_lr"] == 0.01 and cfg["train"]["meta_lr"] == 0.0005
    assert cfg["task"]["amplitude"] == [0.1, 5.0]


@pytest.mark.parametrize("args,expected", [
    (["eval", "RUN", "--tasks", "abc"], "Invalid value for '--tasks'"),
    (["resume", "RUN", "--seed", "3"], "No such option: --seed"),
    (["train"], "Missing argument 'config'"),
    (["nosuch"], "No such command 'nosuch'"),
])
def test_bad_options_are_one_line_and_exit_2(tmp_path, args, expected):
    from conftest import run_metarun

    result = run_metarun(*[str(tmp_path) if a == "RUN" else a for a in args])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("metarun: error: ") and expected in lines[0], result.stderr
