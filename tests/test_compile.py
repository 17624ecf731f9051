"""`train.compile`: the compiled meta-step computes what the eager one does.

Reference: the same config trained with `train.compile=false` (the eager code
that the per-task-loop and finite-difference tests check)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from metarun.rundir import read_metrics
from metarun.train import Session, train


def flat_params(session: Session) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in session.algo.parameters()])


@pytest.mark.parametrize("algorithm", ["maml", "cnp"])
def test_compiled_training_matches_eager(algorithm, tmp_path, capsys):
    runs = {}
    for compiled in (False, True):
        cfg = tiny_config(algorithm={"name": algorithm}, train={"compile": compiled, "iterations": 8})
        runs[compiled] = train(cfg, tmp_path / str(compiled), quiet=True)
    assert "compile failed" not in capsys.readouterr().err
    eager, compiled = (read_metrics(runs[c].path / "metrics.csv") for c in (False, True))
    assert len(eager) == len(compiled) == 8
    for a, b in zip(eager, compiled):
        for column in ("support_loss", "query_loss"):
            assert float(b[column]) == pytest.approx(float(a[column]), rel=1e-4, abs=1e-6)


def test_compile_replaces_the_declared_method_and_reptile_declares_none(capsys):
    for name, method in (("maml", "meta_loss"), ("cnp", "context_loss")):
        s = Session.build(tiny_config(algorithm={"name": name}, train={"compile": True}))
        assert s.compile_seconds is not None and method in vars(s.algo)  # an instance attribute: the compiled one
    s = Session.build(tiny_config(algorithm={"name": "reptile"}, train={"compile": True}))
    assert s.compile_seconds is None and not vars(s.algo).keys() & {"meta_loss", "meta_step"}
    assert "compile failed" not in capsys.readouterr().err


@pytest.mark.parametrize("working", [{"cpp_wrapper": True}, {}, None])
def test_compile_tries_the_cpp_wrapper_then_the_python_one_then_eager(working, monkeypatch, capsys):
    """Where an option set fails to compile, the next is tried; where all fail,
    training is eager with one warning (stand-in compiler: fails unless told)."""
    tried = []

    def fake_compile(fn, options):
        tried.append(options)
        if options == working:
            return fn

        def broken(*args, **kwargs):
            raise RuntimeError("no compiler for these options")

        return broken

    monkeypatch.setattr(torch, "compile", fake_compile)
    s = Session.build(tiny_config(train={"compile": True}))
    expected = [{"cpp_wrapper": True}, {}]
    assert tried == (expected[:expected.index(working) + 1] if working is not None else expected)
    err = capsys.readouterr().err
    if working is None:
        assert s.compile_seconds is None and "meta_loss" not in vars(s.algo)
        assert err.strip().splitlines() == ["metarun: warning: torch.compile failed (RuntimeError: no compiler for "
                                            "these options); training in eager mode"]
    else:
        assert s.compile_seconds is not None and "meta_loss" in vars(s.algo) and not err
    assert all(p.grad is None for p in s.algo.parameters())  # the warm-up leaves no gradient behind
