"""Training and evaluation on every task family, and out-of-distribution eval.

- maml trained a few hundred iterations on random_mlp (d = 10) and gp lowers the
  held-out post-adaptation query MSE against the same network untrained;
- every algorithm of the registry x every family (d = 1 and d = 10) trains two
  iterations and evaluates (parametrised from the registries at import time,
  so algorithms added elsewhere are covered);
- `metarun eval --set task.*` records the shifted task settings and says so,
  and refuses an override that changes the network's input dimension.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_config

from metarun.algorithms import ALGORITHMS, make_algorithm
from metarun.evaluate import evaluate, held_out_tasks
from metarun.tasks import FAMILIES, make_family
from metarun.train import train


@pytest.mark.parametrize("task", [{"family": "random_mlp", "dim": 10}, {"family": "gp"}], ids=["random_mlp-d10", "gp"])
def test_maml_lowers_held_out_query_loss(tmp_path, task):
    cfg = tiny_config(task={**task, "support_shots": 10, "query_shots": 10}, model={"hidden": [32, 32]},
                      algorithm={"name": "maml", "inner_lr": 0.01, "inner_steps": 1},
                      train={"iterations": 300, "meta_batch_size": 16, "log_every": 50, "checkpoint_every": 300,
                             "val_every": 100, "val_tasks": 100},
                      eval={"tasks": 500, "steps": 1, "query_shots": 20})
    run = train(cfg, tmp_path, quiet=True)
    trained = evaluate(run.path, "last", [], "cpu")["query_mse"]

    # The same network before any meta-training: the trainer's seed gives its initialisation.
    torch.manual_seed(cfg.seed)
    family = make_family(cfg.task)
    untrained = make_algorithm(cfg, family.dx, family.dy)
    losses = untrained.adaptation_losses(held_out_tasks(family, cfg, torch.device("cpu")), 1).detach().double()
    before_mean = losses[:, 1].mean().item()
    before_ci = 1.96 * losses[:, 1].std().item() / math.sqrt(losses.shape[0])

    after_mean, after_ci = trained["mean"][1], trained["ci95"][1]
    assert after_mean + after_ci < before_mean - before_ci, (after_mean, before_mean)
    assert after_mean < 0.85 * before_mean, (after_mean, before_mean)


# Every family at its defaults (random_mlp is d = 10), plus linear and gp at d = 10.
FAMILY_CASES = [{"family": name} for name in sorted(FAMILIES)] + [{"family": "linear", "dim": 10},
                                                                  {"family": "gp", "dim": 10}]
FAMILY_IDS = [c["family"] + (f"-d{c['dim']}" if "dim" in c else "") for c in FAMILY_CASES]


@pytest.mark.parametrize("task", FAMILY_CASES, ids=FAMILY_IDS)
@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_every_algorithm_on_every_family(cli, write_config, tmp_path, algorithm, task):
    path = write_config(task={**task, "support_shots": 5, "query_shots": 5}, algorithm={"name": algorithm},
                        train={"iterations": 2, "checkpoint_every": 2, "val_every": 2, "val_tasks": 4})
    runs = tmp_path / "runs"
    result = cli("train", path, "--runs-dir", runs, "--quiet")
    assert result.exit_code == 0, result.output
    run_dir = result.stdout.strip().splitlines()[-1]
    result = cli("eval", run_dir, "--json", "--tasks", "8", "--steps", "2", "--device", "cpu")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["task"]["family"] == task["family"] and not out["task_shifted"]
    assert len(out["query_mse"]["mean"]) == 3 and all(math.isfinite(v) for v in out["query_mse"]["mean"])


# --------------------------------------------------------------------------- out-of-distribution evaluation


@pytest.fixture
def trained_run(cli, write_config, tmp_path):
    def make(**task) -> str:
        path = write_config(task={**task, "support_shots": 5, "query_shots": 5})
        result = cli("train", path, "--runs-dir", tmp_path / "runs", "--quiet")
        assert result.exit_code == 0, result.output
        return result.stdout.strip().splitlines()[-1]

    return make


def eval_json(cli, run_dir: str, *args: str) -> dict:
    result = cli("eval", run_dir, "--json", "--device", "cpu", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("family,key,value", [
    ("sinusoid", "amplitude", [5.0, 10.0]),
    ("linear", "slope", [5.0, 6.0]),
    ("harmonic", "center", [6.0, 8.0]),
    ("gp", "scale", [3.0, 4.0]),
    ("random_mlp", "weight_gain", 4.0),
])
def test_eval_on_a_shifted_distribution(cli, trained_run, family, key, value):
    run_dir = trained_run(family=family)
    plain = eval_json(cli, run_dir)
    shifted = eval_json(cli, run_dir, "--set", f"task.{key}={yaml.safe_dump(value, default_flow_style=True).strip()}")
    assert plain["task_shifted"] is False and shifted["task_shifted"] is True
    assert shifted["task"][key] == value and plain["task"][key] != value
    assert {k: v for k, v in shifted["task"].items() if k != key} == {k: v for k, v in plain["task"].items() if k != key}
    # Each shift makes the targets larger or the inputs unfamiliar: the untouched
    # (step 0) prediction of a 6-iteration network gets worse.
    assert shifted["query_mse"]["mean"][0] > plain["query_mse"]["mean"][0]
    text = cli("eval", run_dir, "--device", "cpu", "--set", f"task.{key}={value}".replace(" ", "")).stdout
    assert "SHIFTED" in text and "SHIFTED" not in cli("eval", run_dir, "--device", "cpu").stdout


def test_eval_on_another_family_of_the_same_dimension(cli, trained_run):
    run_dir = trained_run(family="sinusoid", noise_std=0.1)
    out = eval_json(cli, run_dir, "--set", "task.family=sinusoid_line", "--set", "task.line_probability=1.0")
    assert out["task_shifted"] is True
    task = out["task"]
    assert task["family"] == "sinusoid_line" and task["line_probability"] == 1.0
    assert task["noise_std"] == 0.1 and task["support_shots"] == 5  # the shared fields carry over
    assert task["slope"] == list(make_family(tiny_config(task={"family": "sinusoid_line"}).task).cfg.slope)


@pytest.mark.parametrize("family,override", [
    ("random_mlp", "task.dim=3"),
    ("sinusoid", "task.family=random_mlp"),
    ("gp", "task.dim=2"),
])
def test_eval_refuses_a_change_of_input_dimension(cli, trained_run, family, override):
    run_dir = trained_run(family=family)
    result = cli("eval", run_dir, "--set", override, "--device", "cpu")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("metarun: error: task:") and "dx=" in lines[0], result.output
    eval_dir = Path(run_dir) / "eval"
    assert not eval_dir.exists() or not any(eval_dir.iterdir()), "a refused eval wrote a result"
