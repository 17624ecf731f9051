"""Exact resume: a run stopped by a real signal and resumed must equal, row for
row and bit for bit, the same run never stopped (the reference here is that
straight run, trained separately from the same config)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_dict

from metarun import config as config_mod
from metarun.train import train

TIME_COLUMNS = {"seconds", "tasks_per_s"}
# Long enough that a signal sent as soon as iter-10.pt appears lands well before the end,
# short enough that every leg takes about a second.
RESUME_CFG = tiny_dict(train={"iterations": 80, "checkpoint_every": 5, "val_every": 7, "log_every": 1, "val_tasks": 8})


def rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in TIME_COLUMNS} for r in csv.DictReader(f)]


def final_state(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)


def assert_same_run(resumed: Path, straight: Path) -> None:
    got, want = rows(resumed), rows(straight)
    iterations = [int(r["iteration"]) for r in got]
    assert iterations == sorted(set(iterations)), "duplicate or out-of-order iterations after resume"
    assert got == want
    a, b = final_state(resumed), final_state(straight)
    assert a["iteration"] == b["iteration"] == RESUME_CFG["train"]["iterations"]
    assert a["best_val"] == b["best_val"]
    for key, tensor in b["model"].items():
        assert torch.equal(a["model"][key], tensor), key
    for pid, st in b["optimizer"]["state"].items():
        for key, tensor in st.items():
            assert torch.equal(a["optimizer"]["state"][pid][key], tensor), (pid, key)
    assert json.loads((resumed / "run.json").read_text())["status"] == "completed"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("resume")


@pytest.fixture(scope="module")
def config_path(workdir) -> Path:
    path = workdir / "resume.yaml"
    path.write_text(yaml.safe_dump(RESUME_CFG))
    return path


@pytest.fixture(scope="module")
def straight(workdir) -> Path:
    return train(config_mod.resolve(RESUME_CFG), workdir / "straight", quiet=True).path


def start_training(args: list, runs_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same single thread as the in-process straight run
    return subprocess.Popen([sys.executable, "-m", "metarun", *map(str, args), "-q"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(runs_dir: Path, proc: subprocess.Popen, after: int, timeout: float = 60) -> Path:
    """Poll until some checkpoints/iter-N.pt with N > `after` exists; return the run directory."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in runs_dir.glob("[0-9]*"):
            if any(int(p.stem.split("-")[1]) > after for p in (run / "checkpoints").glob("iter-*.pt")):
                return run
        assert proc.poll() is None, f"training ended before it could be stopped: {proc.communicate()}"
        time.sleep(0.005)
    raise AssertionError("no periodic checkpoint appeared")


def stop(proc: subprocess.Popen, sig: int) -> tuple[int, str, str]:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def test_sigint_and_sigterm_then_resume_twice_matches_straight_run(config_path, straight, workdir, cli):
    runs = workdir / "signals"
    proc = start_training(["train", config_path, "--runs-dir", runs], runs)
    run = wait_for_checkpoint(runs, proc, after=5)
    code, out, err = stop(proc, signal.SIGINT)
    assert code == 130, err
    assert "interrupted by SIGINT" in err and "Traceback" not in err
    assert f"continue with `metarun resume {run}`" in err  # the real path, ready to paste
    assert out.strip().splitlines()[-1] == str(run)  # and, as on success, stdout ends with the run directory
    first_stop = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["iteration"]
    assert 10 <= first_stop < 80
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"

    proc = start_training(["resume", run], runs)
    wait_for_checkpoint(runs, proc, after=first_stop)
    code, out, err = stop(proc, signal.SIGTERM)
    assert code == 143, err
    assert out.strip().splitlines()[-1] == str(run)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "interrupted" and info["resumed"][0]["iteration"] == first_stop
    assert info["iteration"] > first_stop

    result = cli("resume", run, "-q")
    assert result.exit_code == 0, result.stderr
    assert_same_run(run, straight)
    assert [r["iteration"] for r in json.loads((run / "run.json").read_text())["resumed"]] == [first_stop, info["iteration"]]


def test_sigkill_after_checkpoint_then_resume_matches_straight_run(config_path, straight, workdir, cli):
    runs = workdir / "kill"
    proc = start_training(["train", config_path, "--runs-dir", runs], runs)
    run = wait_for_checkpoint(runs, proc, after=5)
    code, _, _ = stop(proc, signal.SIGKILL)
    assert code == -signal.SIGKILL
    checkpoint_at = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["iteration"]
    assert checkpoint_at % 5 == 0 and checkpoint_at >= 10
    # A kill in the middle of a row leaves a partial last line: simulate the worst case.
    with open(run / "metrics.csv", "a") as f:
        f.write(f"{checkpoint_at + 1},0.12")

    result = cli("resume", run, "-q")
    assert result.exit_code == 0, result.stderr
    assert_same_run(run, straight)
    # SIGKILL loses at most the iterations since the last periodic checkpoint: resume started there.
    assert json.loads((run / "run.json").read_text())["resumed"][0]["iteration"] == checkpoint_at


def test_resuming_a_completed_run_does_nothing(straight, workdir, cli):
    run = workdir / "completed"
    shutil.copytree(straight, run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    result = cli("resume", run)
    assert result.exit_code == 0
    assert "already completed" in result.stderr
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_resume_refuses_a_changed_config_unless_allowed(straight, workdir, cli):
    run = workdir / "changed"
    shutil.copytree(straight, run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    result = cli("resume", run, "--set", "train.iterations=85")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "metarun: error: --set changes the run's config (train.iterations: 80 -> 85); "
        "pass --allow-config-change to resume with it"]
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before

    result = cli("resume", run, "--set", "train.iterations=85", "--allow-config-change", "-q")
    assert result.exit_code == 0, result.stderr
    assert [int(r["iteration"]) for r in rows(run)] == list(range(1, 86))
    assert rows(run)[:80] == rows(straight)
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["iterations"] == 85
