"""Checkpoints and metrics.csv survive kills, truncation, tampering and divergence."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from metarun import rundir
from metarun.rundir import RunDir, UnreadableCheckpoint, atomic_write, load_checkpoint, read_metrics
from metarun.train import Divergence, Session, train


@pytest.fixture(scope="module")
def eight(tmp_path_factory) -> Path:
    """A completed 8-iteration run: iter-3.pt, iter-6.pt, last.pt (iteration 8)."""
    cfg = tiny_config(train={"iterations": 8, "checkpoint_every": 3, "val_every": 2})
    return train(cfg, tmp_path_factory.mktemp("eight"), quiet=True).path


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# --------------------------------------------------------------------------- atomic writes


def test_a_write_killed_midway_leaves_the_previous_file(tmp_path):
    path = tmp_path / "last.pt"
    atomic_write(path, lambda f: f.write(b"previous"))

    def dies_midway(f):
        f.write(b"half of the new")
        raise KeyboardInterrupt  # stands for the process dying at this instant

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, dies_midway)
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


# --------------------------------------------------------------------------- truncation


def test_truncated_checkpoints_are_refused_at_every_offset(eight, cli):
    data = (eight / "checkpoints" / "last.pt").read_bytes()
    offsets = [0, 1, len(data) - 1] + random.Random(5).sample(range(2, len(data) - 1), 25)
    bad = eight.parent / "bad.pt"
    for n in offsets:
        bad.write_bytes(data[:n])
        with pytest.raises(UnreadableCheckpoint, match=r"checkpoint truncated or corrupted$"):
            load_checkpoint(bad)
    result = cli("eval", eight, "--checkpoint", str(bad))
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"metarun: error: {bad}: checkpoint truncated or corrupted"]


def test_resume_skips_a_truncated_last_checkpoint_and_uses_the_previous_one(eight, tmp_path, cli):
    """An interrupted run whose last.pt got truncated (say, by a partial copy) resumes
    from iter-6.pt and still ends exactly where the uninterrupted run ended."""
    run = copy_run(eight, tmp_path / "run")
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "status": "interrupted"}))
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])

    result = cli("resume", run, "-q")
    assert result.exit_code == 0, result.stderr
    assert f"checkpoint truncated or corrupted; resuming from {run / 'checkpoints' / 'iter-6.pt'}" in result.stderr
    got, want = load_checkpoint(last), load_checkpoint(eight / "checkpoints" / "last.pt")
    assert got["iteration"] == want["iteration"] == 8
    for key, tensor in want["model"].items():
        assert torch.equal(got["model"][key], tensor), key
    strip = [{k: v for k, v in r.items() if k not in ("seconds", "tasks_per_s")} for r in read_metrics(run / "metrics.csv")]
    assert strip == [{k: v for k, v in r.items() if k not in ("seconds", "tasks_per_s")}
                     for r in read_metrics(eight / "metrics.csv")]


# --------------------------------------------------------------------------- untrusted files


class Payload:
    """Unpickling this creates a file: proof of code execution if it ever happens."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_checkpoint_carrying_a_pickled_object_is_refused_and_not_executed(eight, tmp_path, cli):
    run = copy_run(eight, tmp_path / "run")
    (run / "run.json").write_text(json.dumps({**json.loads((run / "run.json").read_text()), "status": "interrupted"}))
    marker = tmp_path / "executed"
    last = run / "checkpoints" / "last.pt"
    torch.save({"model": {}, "iteration": 1, "evil": Payload(marker)}, last)

    result = cli("eval", run, "--checkpoint", "last")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"metarun: error: {last}: checkpoint contains pickled objects other than tensors (refused, not loaded)"]
    result = cli("resume", run)  # refused outright, no fallback to iter-6.pt: someone put it there
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "pickled objects" in result.stderr
    assert not marker.exists()

    torch.load(last, weights_only=False)  # the payload is real: an unsafe load does run it
    assert marker.exists()


# --------------------------------------------------------------------------- divergence


# Validation comes after the blow-up here, so the stop is the training loss or gradient.
DIVERGING = {"algorithm": {"inner_lr": 1000.0}, "train": {"iterations": 40, "meta_lr": 1.0, "checkpoint_every": 2,
                                                           "val_every": 20}}


def first_nonfinite_iteration() -> int:
    """Reference: the same run stepped by hand, every loss stat and every gradient
    checked on the host after every iteration."""
    s = Session.build(tiny_config(**DIVERGING))
    for it in range(1, 41):
        stats = s.algo.meta_step(s.family.sample(s.cfg.train.meta_batch_size, s.task_gen), s.optimizer, it - 1)
        values = [v.item() for v in stats.values()] + [g.abs().max().item() for g in (p.grad for p in s.algo.parameters())]
        if not all(math.isfinite(v) for v in values):
            return it
    raise AssertionError("the configuration did not diverge")


@pytest.mark.parametrize("log_every", [1, 3])
def test_divergence_stops_names_the_iteration_and_keeps_finite_checkpoints(tmp_path, cli, write_config, log_every):
    """An absurd inner step size (1000, with meta_lr 1) blows up after a few
    iterations. With log_every=3 the loop reads its on-device finiteness flag only
    every few iterations, yet must name the exact first bad iteration."""
    bad = first_nonfinite_iteration()
    assert bad > 2, "diverges before the first checkpoint: the test would check nothing"
    config = write_config(**{**DIVERGING, "train": {**DIVERGING["train"], "log_every": log_every}})
    result = cli("train", config, "--runs-dir", tmp_path / "runs", "-q")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"metarun: error: training diverged at iteration {bad}: non-finite loss or gradient; the last good checkpoint is kept"]
    [run] = (tmp_path / "runs").iterdir()
    assert result.stdout.strip().splitlines()[-1] == str(run)  # stdout still ends with the run directory
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "failed" and f"iteration {bad}" in info["error"]
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == sorted(["last.pt", *(f"iter-{k}.pt" for k in range(2, bad, 2))])
    for name in names:
        state = load_checkpoint(run / "checkpoints" / name)
        assert state["iteration"] < bad
        assert all(torch.isfinite(t).all() for t in state["model"].values()), name
    assert load_checkpoint(run / "checkpoints" / "last.pt")["iteration"] == max(range(2, bad, 2))
    for row in read_metrics(run / "metrics.csv"):
        assert int(row["iteration"]) < bad
        assert all(math.isfinite(float(v)) for v in row.values() if v)


def test_divergence_before_the_first_checkpoint_says_none_was_kept(tmp_path, cli, write_config):
    bad = first_nonfinite_iteration()
    config = write_config(**{**DIVERGING, "train": {**DIVERGING["train"], "checkpoint_every": 1000}})
    result = cli("train", config, "--runs-dir", tmp_path / "runs", "-q")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"metarun: error: training diverged at iteration {bad}: non-finite loss or gradient; "
        "no checkpoint had been written yet"]
    [run] = (tmp_path / "runs").iterdir()
    assert not any((run / "checkpoints").glob("*.pt"))
    assert "no checkpoint had been written yet" in json.loads((run / "run.json").read_text())["error"]


def test_a_non_finite_validation_loss_never_becomes_best(tmp_path):
    """Same blow-up, validation every 2 iterations: the validation loss overflows
    first. It stops the run; no best.pt, and nothing after the last good state."""
    cfg = tiny_config(**{**DIVERGING, "train": {**DIVERGING["train"], "val_every": 2}})
    with pytest.raises(Divergence, match="non-finite validation loss"):
        train(cfg, tmp_path, quiet=True)
    [run] = tmp_path.iterdir()
    assert not (run / "checkpoints" / "best.pt").exists()
    assert json.loads((run / "run.json").read_text())["status"] == "failed"
    for path in (run / "checkpoints").iterdir():
        assert all(torch.isfinite(t).all() for t in load_checkpoint(path)["model"].values())


# --------------------------------------------------------------------------- metrics.csv


def test_metrics_reader_and_writer_never_see_a_half_row(tmp_path):
    path = tmp_path / "metrics.csv"
    writer = rundir.MetricsWriter(path)
    for i in (1, 2, 3):
        writer.write({"iteration": i, "support_loss": 0.5 * i})
    writer.close()
    with open(path, "a") as f:
        f.write("4,0.")  # a kill in the middle of a row
    assert [r["iteration"] for r in read_metrics(path)] == ["1", "2", "3"]

    rundir.truncate_metrics(path, 2)
    assert path.read_text() == (",".join(rundir.METRIC_COLUMNS) + "\n"
                                "1,0.5,,,,,,\n"
                                "2,1,,,,,,\n")
    with open(path, "a") as f:
        f.write("3,1.")
    rundir.MetricsWriter(path).close()  # reopening for append drops the partial line
    assert path.read_text().endswith("2,1,,,,,,\n")


# --------------------------------------------------------------------------- run directories


def test_runs_created_in_the_same_second_get_distinct_directories(tmp_path, monkeypatch):
    class FrozenClock:
        @staticmethod
        def now(tz=None):
            from datetime import datetime

            return datetime(2024, 1, 2, 3, 4, 5)

    real = rundir.secrets.token_hex
    suffixes = iter(["aaaaaa", "aaaaaa", "bbbbbb"])  # the second run draws a colliding suffix first
    monkeypatch.setattr(rundir, "datetime", FrozenClock)
    monkeypatch.setattr(rundir.secrets, "token_hex", lambda n=None: next(suffixes) if n == 3 else real(n))
    a = RunDir.create(tmp_path, "x", "name: x\n", {"status": "running"})
    b = RunDir.create(tmp_path, "x", "name: x\n", {"status": "running"})
    assert a.path.name == "20240102-030405_x_aaaaaa"
    assert b.path.name == "20240102-030405_x_bbbbbb"
    assert sorted(p.name for p in tmp_path.iterdir()) == [a.path.name, b.path.name]  # no staging left
