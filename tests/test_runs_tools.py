"""Tools for many runs: `runs`, `compare`, `plot`, `eval --plot`, `--json`, TensorBoard.

The runs are tiny (a few iterations) and made here. Losses are checked against
an independent per-task SGD loop (tests/reference_maml.py's forward), CIs
against numpy, t quantiles against a numerical integral of the t density.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_config
from reference_maml import forward

from metarun import compare as compare_mod
from metarun import config as config_mod
from metarun import plot as plot_mod
from metarun.evaluate import held_out_tasks, load_algorithm, open_run
from metarun.models import MLP
from metarun.rundir import RunDir
from metarun.tasks import make_family
from metarun.train import train

Z = 1.959963984540054


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three tiny completed runs: maml seed 0, fomaml seed 0, maml seed 1."""
    runs_dir = tmp_path_factory.mktemp("runs")
    made = {}
    for key, algo, seed in (("maml", "maml", 0), ("fomaml", "fomaml", 0), ("maml1", "maml", 1)):
        cfg = tiny_config(name=key, seed=seed, algorithm={"name": algo})
        made[key] = train(cfg, runs_dir, quiet=True).path
    return runs_dir, made


def reference_losses(run_path: Path, n_tasks: int, steps: int) -> torch.Tensor:
    """Query MSE after 0..steps plain SGD steps, task by task with autograd.grad: [n, steps + 1]."""
    run, cfg, _ = open_run(run_path)
    state = run.load_checkpoint("best")
    net = MLP(1, 1, cfg.model.hidden, cfg.model.activation)
    net.load_state_dict({k.removeprefix("net."): v for k, v in state["model"].items()})
    batch = held_out_tasks(make_family(cfg.task), cfg, torch.device("cpu"))
    out = torch.zeros(n_tasks, steps + 1)
    for t in range(n_tasks):
        weights = [p.detach().clone().requires_grad_(True) for p in net.parameters()]
        for k in range(steps + 1):
            out[t, k] = ((forward(net, weights, batch.query_x[t]) - batch.query_y[t]) ** 2).mean().detach()
            loss = ((forward(net, weights, batch.support_x[t]) - batch.support_y[t]) ** 2).mean()
            grads = torch.autograd.grad(loss, weights)
            weights = [(w - cfg.algorithm.inner_lr * g).detach().requires_grad_(True) for w, g in zip(weights, grads)]
    return out


# ---------------------------------------------------------------------------- runs


def test_runs_lists_status_losses_and_filters(runs, cli):
    runs_dir, made = runs
    (runs_dir / ".staging.creating").mkdir()  # a half-made run: never listed
    (runs_dir / "notes").mkdir()  # not a run directory
    copy = runs_dir / "crashed"
    copy.mkdir()
    for name in ("config.yaml", "run.json", "metrics.csv"):
        (copy / name).write_bytes((made["maml"] / name).read_bytes())
    # run.json's iteration lags behind metrics.csv between checkpoints: the table shows the logged one
    RunDir(copy).update_info(status="failed", started="2999-01-01T00:00:00+00:00", iteration=0)

    result = cli("runs", runs_dir, "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert [Path(r["run"]).name for r in rows][0] == "crashed"  # newest start first
    status = {Path(r["run"]).name: r["status"] for r in rows}
    assert status == {"crashed": "failed", **{p.name: "completed" for p in made.values()}}
    assert rows[0]["iteration"] == 6
    row = next(r for r in rows if r["run"] == str(made["fomaml"]))
    with open(made["fomaml"] / "metrics.csv", newline="") as f:
        metrics = list(csv.DictReader(f))
    assert row["algorithm"] == "fomaml" and row["family"] == "sinusoid" and row["iteration"] == 6
    assert row["last_query_loss"] == pytest.approx(float(metrics[-1]["query_loss"]))
    assert row["best_val_query_loss"] == pytest.approx(min(float(m["val_query_loss"]) for m in metrics
                                                           if m["val_query_loss"]))

    assert {r["algorithm"] for r in json.loads(cli("runs", runs_dir, "--json", "--algorithm", "fomaml").stdout)} == {"fomaml"}
    assert len(json.loads(cli("runs", runs_dir, "--json", "--status", "failed").stdout)) == 1
    table = cli("runs", runs_dir)
    assert table.exit_code == 0 and made["maml1"].name in table.stdout and "failed" in table.stdout
    bad = cli("runs", runs_dir, "--status", "finished")
    assert bad.exit_code == 2 and "--status" in bad.stderr
    shutil.rmtree(copy)


# ---------------------------------------------------------------------------- compare


def test_compare_losses_match_a_per_task_loop(runs):
    _, made = runs
    _, losses, _, _ = compare_mod.score_runs([made["maml"], made["fomaml"]], device="cpu")
    for i, key in enumerate(("maml", "fomaml")):
        ref = reference_losses(made[key], n_tasks=5, steps=3)
        torch.testing.assert_close(losses[i][:5].float(), ref, rtol=1e-4, atol=1e-5)


def test_compare_self_is_exactly_zero_and_two_runs_differ(runs, cli):
    _, made = runs
    _, losses, _, _ = compare_mod.score_runs([made["maml"], made["maml"]], device="cpu")
    assert torch.equal(losses[0], losses[1])  # same run, same tasks: identical per-task losses
    same = json.loads(cli("compare", made["maml"], made["maml"], "--json", "--device", "cpu").stdout)
    assert same["runs"][1]["difference_to_first"]["mean"] == [0.0] * 4
    assert same["runs"][1]["difference_to_first"]["ci95"] == [0.0] * 4

    result = cli("compare", made["maml"], made["fomaml"], made["maml1"], "--json", "--device", "cpu", "--at", "0,3")
    assert result.exit_code == 0
    out = json.loads(result.stdout)
    assert out["at"] == [0, 3] and out["protocol"]["tasks"] == 20
    _, losses, _, _ = compare_mod.score_runs([made["maml"], made["fomaml"], made["maml1"]], device="cpu")
    diff = (losses[1] - losses[0]).double().numpy()  # paired over the shared tasks
    got = out["runs"][1]["difference_to_first"]
    assert np.allclose(got["mean"], diff.mean(0)) and np.abs(diff.mean(0)).max() > 0
    assert np.allclose(got["ci95"], Z * diff.std(0, ddof=1) / math.sqrt(diff.shape[0]))

    # maml seeds 0 and 1 share everything but the seed: one group of two, t-CI across seeds.
    groups = {tuple(g["seeds"]): g for g in out["seed_groups"]}
    assert set(groups) == {(0, 1), (0,)}
    seed_means = np.stack([losses[0].double().mean(0).numpy(), losses[2].double().mean(0).numpy()])
    g = groups[(0, 1)]["query_mse"]
    assert g["n"] == 2 and np.allclose(g["mean"], seed_means.mean(0))
    assert np.allclose(g["ci95"], 12.7062 * seed_means.std(0, ddof=1) / math.sqrt(2), rtol=1e-4)

    text = cli("compare", made["maml"], made["fomaml"], made["maml1"], "--device", "cpu")
    assert text.exit_code == 0 and "(reference)" in text.stdout and "over seeds" in text.stdout
    bad = cli("compare", made["maml"], "--at", "7", "--device", "cpu")
    assert bad.exit_code == 2 and "--at" in bad.stderr


@pytest.mark.parametrize("df", [1, 2, 4, 10, 30, 31, 60, 200])
def test_t_quantile_against_numerical_integral(df):
    q = compare_mod.t_quantile(df)
    t = np.linspace(-q, q, 400001)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    density = np.exp(log_c - (df + 1) / 2 * np.log1p(t**2 / df))
    assert np.trapezoid(density, t) == pytest.approx(0.95, abs=2e-5)


# ---------------------------------------------------------------------------- plot


def test_predict_after_matches_a_per_task_loop(runs):
    _, made = runs
    run, cfg, _ = open_run(made["maml"])
    algo, family, _ = load_algorithm(run, cfg, "best", torch.device("cpu"))
    batch = held_out_tasks(family, cfg, torch.device("cpu")).slice(0, 3)
    x = torch.linspace(-5, 5, 7).view(1, -1, 1).expand(3, -1, -1)
    net = algo.net
    for steps in (0, 1, 4):
        got = algo.predict_after(batch, x, steps)
        for t in range(3):
            weights = [p.detach().clone().requires_grad_(True) for p in net.parameters()]
            for _ in range(steps):
                loss = ((forward(net, weights, batch.support_x[t]) - batch.support_y[t]) ** 2).mean()
                grads = torch.autograd.grad(loss, weights)
                weights = [(w - cfg.algorithm.inner_lr * g).detach().requires_grad_(True) for w, g in zip(weights, grads)]
            torch.testing.assert_close(got[t], forward(net, weights, x[t]).detach(), rtol=1e-4, atol=1e-5)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])  # IHDR width, height


def test_plot_writes_png_with_expected_panels(runs, cli, tmp_path):
    _, made = runs
    fig = plot_mod.figure([made["maml"], made["fomaml"]], device="cpu", dpi=40)
    # row 1: support loss, query loss, adaptation curves; then 3 fitted-function panels per run
    assert len([ax for ax in fig.axes if ax.axison]) == 3 + 2 * 3
    assert [len(ax.lines) for ax in fig.axes[:3]] == [2, 2, 2]  # one line per run
    assert len(fig.axes[3].lines) == 1 + 3  # true function, predictions after 0, 1 and 10 steps

    out = tmp_path / "fig.png"
    result = cli("plot", made["maml"], made["fomaml"], "-o", out, "--dpi", "40", "--device", "cpu")
    assert result.exit_code == 0 and result.stdout.strip() == str(out)
    # 3 panels of 4.5 x 3.4 inches per row, 3 rows, at 40 dots per inch
    assert png_size(out) == (540, 408)
    import matplotlib.pyplot as plt

    pixels = plt.imread(out)
    assert pixels.std() > 0.05  # something is drawn, not a blank canvas

    no_fit = tmp_path / "curves.png"
    assert cli("plot", made["maml"], "-o", no_fit, "--dpi", "40", "--fit-tasks", "0", "--device", "cpu").exit_code == 0
    assert png_size(no_fit) == (540, 136)
    bad = cli("plot", made["maml"], "-o", tmp_path / "nowhere" / "x.png", "--device", "cpu")
    assert bad.exit_code == 2 and "nowhere" in bad.stderr


def test_eval_json_and_plot(runs, cli):
    _, made = runs
    result = cli("eval", made["fomaml"], "--json", "--plot", "--device", "cpu", "--tasks", "10")
    assert result.exit_code == 0
    out = json.loads(result.stdout)  # JSON only on stdout
    assert out["tasks"] == 10 and len(out["query_mse"]["mean"]) == 4
    assert Path(out["figure"]).is_file() and Path(out["figure"]).stat().st_size > 0
    assert Path(out["figure"]).with_suffix(".json") == Path(out["saved"])


# ---------------------------------------------------------------------------- TensorBoard


def test_tensorboard_events_only_when_switched_on(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    off = train(tiny_config(), tmp_path / "off", quiet=True).path
    assert not (off / "tensorboard").exists()
    on = train(tiny_config(train={"tensorboard": True}), tmp_path / "on", quiet=True).path
    events = list((on / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    acc = EventAccumulator(str(on / "tensorboard"))
    acc.Reload()
    with open(on / "metrics.csv", newline="") as f:
        metrics = list(csv.DictReader(f))
    scalars = acc.Scalars("query_loss")
    assert [s.step for s in scalars] == [int(m["iteration"]) for m in metrics]
    assert [s.value for s in scalars] == pytest.approx([float(m["query_loss"]) for m in metrics], rel=1e-6)


def test_tensorboard_missing_is_one_line_and_no_run_dir(tmp_path, write_config, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    result = cli("train", write_config(train={"tensorboard": True}), "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 2 and "train.tensorboard" in result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_config_field_documented():
    keys = {key for key, _, _ in config_mod.describe()}
    assert "train.tensorboard" in keys
    assert yaml.safe_load(config_mod.dump(tiny_config()))["train"]["tensorboard"] is False


def test_plot_panels_for_families_without_a_1d_curve(tmp_path):
    """random_mlp (dx=10): no fitted-function row; gp (no closed form): fitted row with query points."""
    mlp = train(tiny_config(task={"family": "random_mlp"}), tmp_path, quiet=True).path
    gp = train(tiny_config(task={"family": "gp"}), tmp_path, quiet=True).path
    assert len(plot_mod.figure([mlp], device="cpu", dpi=30).axes) == 3
    fig = plot_mod.figure([gp], device="cpu", dpi=30)
    assert len(fig.axes) == 6 and len(fig.axes[3].lines) == 3  # predictions after 0, 1, 10 steps; no true curve
