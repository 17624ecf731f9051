"""Shared test helpers: tiny configs and an in-process CLI runner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from metarun import config as config_mod
from metarun.cli import app

torch.set_num_threads(1)  # the CI box has 2 cores; keep tests from fighting over them


def tiny_dict(**sections) -> dict:
    """A config small enough to train in a second; `sections` update it."""
    data = {
        "name": "tiny",
        "seed": 0,
        "device": "cpu",
        "task": {"family": "sinusoid", "support_shots": 5, "query_shots": 5},
        "model": {"hidden": [16, 16]},
        "algorithm": {"name": "maml", "inner_lr": 0.01, "inner_steps": 1},
        "train": {"iterations": 6, "meta_batch_size": 4, "log_every": 1, "checkpoint_every": 3,
                  "val_every": 3, "val_tasks": 8},
        "eval": {"tasks": 20, "steps": 3, "query_shots": 10},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    return data


def tiny_config(**sections) -> config_mod.Config:
    return config_mod.resolve(tiny_dict(**sections))


@pytest.fixture
def write_config(tmp_path):
    """write_config(**sections) -> path of a tiny YAML config."""

    def write(name: str = "tiny.yaml", **sections) -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(tiny_dict(**sections)))
        return path

    return write


@pytest.fixture
def cli():
    """cli(*args) -> result with .exit_code, .stdout, .stderr (in-process)."""
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return invoke


def run_metarun(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m metarun` in a real subprocess (for signals and exit codes)."""
    return subprocess.run([sys.executable, "-m", "metarun", *map(str, args)], capture_output=True, text=True, **kwargs)
