"""Every user mistake: one line naming the key, value or path, exit 2, no
traceback, and nothing written (no run directory, no change to an existing one)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_config, tiny_dict

from metarun.train import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return train(tiny_config(), tmp_path_factory.mktemp("trained"), quiet=True).path


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in root.rglob("*")}


# Each row: (id, setup(tmp, trained) -> argv, expected text in the one line). In `argv`,
# RUNS stands for the runs directory that must stay absent.
def config_file(tmp: Path, text: str) -> Path:
    path = tmp / "config.yaml"
    path.write_text(text)
    return path


def good_config(tmp: Path, **sections) -> Path:
    return config_file(tmp, yaml.safe_dump(tiny_dict(**sections)))


def run_copy(tmp: Path, trained: Path, mutate=None) -> Path:
    run = tmp / "run"
    shutil.copytree(trained, run)
    if mutate:
        mutate(run)
    return run


def interrupted(run: Path) -> None:
    """Make the copied run look stopped mid-way, so that resume has work to do."""
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "status": "interrupted"}))


def truncate_last(run: Path) -> None:
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:100])


def no_checkpoints(run: Path) -> None:
    interrupted(run)
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").mkdir()


def only_truncated_last(run: Path) -> None:
    interrupted(run)
    for p in (run / "checkpoints").glob("iter-*.pt"):
        p.unlink()
    truncate_last(run)


def garbage_best(run: Path) -> None:
    (run / "checkpoints" / "best.pt").write_bytes(b"x" * 64)


def train_args(config: Path, *extra: str) -> list:
    return ["train", config, "--runs-dir", "RUNS", *extra]


ROWS = [
    ("config missing", lambda t, r: train_args(t / "nope.yaml"), "nope.yaml: config file not found"),
    ("not YAML", lambda t, r: train_args(config_file(t, "train: [1, 2\n")), "config.yaml: not valid YAML (line 2)"),
    ("not a mapping", lambda t, r: train_args(config_file(t, "- 1\n- 2\n")),
     "config.yaml: a config must be a mapping of sections, got list"),
    ("python tag", lambda t, r: train_args(config_file(t, f"seed: !!python/object/apply:os.system ['touch {t}/pwned']\n")),
     "refused YAML tag tag:yaml.org,2002:python/object/apply:os.system"),
    ("unknown algorithm", lambda t, r: train_args(good_config(t), "--set", "algorithm.name=mamal"),
     "algorithm.name: unknown algorithm 'mamal'; choose from "),
    ("unknown family", lambda t, r: train_args(good_config(t, task={"family": "sine"})),
     "task.family: unknown task family 'sine'; choose from "),
    ("unknown key", lambda t, r: train_args(good_config(t, train={"iteratons": 5})),
     "train.iteratons: unknown key (valid here: "),
    ("wrong type", lambda t, r: train_args(good_config(t), "--set", "train.iterations=many"),
     "train.iterations: expected int, got 'many'"),
    ("out of range", lambda t, r: train_args(good_config(t), "--set", "algorithm.inner_lr=-0.5"),
     "algorithm.inner_lr: must be > 0.0, got -0.5"),
    ("--set without =", lambda t, r: train_args(good_config(t), "--set", "train.iterations"),
     "--set 'train.iterations': expected section.key=value"),
    ("--set unknown path", lambda t, r: train_args(good_config(t), "--set", "trian.iterations=5"), "trian: unknown key"),
    ("unwritable runs dir", lambda t, r: ["train", good_config(t), "--runs-dir", config_file(t, "") / "runs"],
     "config.yaml/runs: cannot create runs directory (Not a directory)"),
    ("eval: not a run dir", lambda t, r: ["eval", t], "not a metarun run directory (no config.yaml and run.json)"),
    ("resume: no such dir", lambda t, r: ["resume", t / "nowhere"], "nowhere: no such run directory"),
    ("resume: not a run dir", lambda t, r: ["resume", t], "not a metarun run directory (no config.yaml and run.json)"),
    ("eval: no checkpoint", lambda t, r: ["eval", run_copy(t, r, no_checkpoints)], "best.pt: no such checkpoint"),
    ("resume: no checkpoint", lambda t, r: ["resume", run_copy(t, r, no_checkpoints)], "no checkpoint to resume from"),
    ("eval: truncated", lambda t, r: ["eval", run_copy(t, r, truncate_last), "--checkpoint", "last"],
     "last.pt: checkpoint truncated or corrupted"),
    ("resume: truncated", lambda t, r: ["resume", run_copy(t, r, only_truncated_last)],
     "no readable checkpoint ("),
    ("eval: corrupted", lambda t, r: ["eval", run_copy(t, r, garbage_best)],
     "best.pt: checkpoint truncated or corrupted"),
    ("resume: changed config", lambda t, r: ["resume", run_copy(t, r), "--set", "seed=3"],
     "--set changes the run's config (seed: 0 -> 3); pass --allow-config-change"),
    ("unknown device", lambda t, r: train_args(good_config(t), "--device", "tpu"), "device: unknown device 'tpu'"),
    ("cuda without CUDA", lambda t, r: train_args(good_config(t), "--device", "cuda"),
     "device: 'cuda' requested but CUDA is not available on this machine"),
]
NEEDS_NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


@pytest.mark.parametrize("case, make_args, expected", [
    pytest.param(*row, id=row[0], marks=[NEEDS_NO_CUDA] if "CUDA" in row[0] else []) for row in ROWS])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, make_args, expected, tmp_path, trained, cli):
    work = tmp_path / "work"
    work.mkdir()
    runs = tmp_path / "runs"
    args = [runs if a == "RUNS" else a for a in make_args(work, trained)]
    before = snapshot(work)

    result = cli(*args)

    assert result.exit_code == 2, (case, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("metarun: error: "), lines
    assert expected in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert not runs.exists(), "a runs directory was created"
    assert snapshot(work) == before, "something was written"
