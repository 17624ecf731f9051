"""Reptile: the outer step is the interpolation towards adapted weights; meta-lr annealing."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from metarun.algorithms import make_algorithm
from metarun.rundir import read_metrics
from metarun.tasks import TaskBatch
from metarun.train import train


def test_outer_step_equals_hand_computed_interpolation():
    # A 1-1 linear net y = w x + b from w = b = 0; two tasks with one support point (x=1)
    # at y = 3 and y = -1. One inner step of 0.25 on (w x + b - y)^2: grad = 2 (w + b - y)
    # for both w and b, so phi = (1.5, 1.5) and (-0.5, -0.5); their mean is (0.5, 0.5).
    # With epsilon = 0.5: theta = 0 + 0.5 * (0.5 - 0) = 0.25 for both.
    cfg = tiny_config(model={"hidden": []}, algorithm={"name": "reptile", "inner_lr": 0.25, "inner_steps": 1},
                      task={"support_shots": 1, "query_shots": 1}, train={"meta_lr": 0.5})
    algo = make_algorithm(cfg, 1, 1)
    with torch.no_grad():
        for p in algo.parameters():
            p.zero_()
    one = torch.ones(2, 1, 1)
    batch = TaskBatch(one, torch.tensor([3.0, -1.0]).view(2, 1, 1), one, torch.zeros(2, 1, 1), params={})
    algo.meta_step(batch, algo.make_optimizer(0.5), iteration=0)
    assert algo.net.layers[0].weight.item() == pytest.approx(0.25)
    assert algo.net.layers[0].bias.item() == pytest.approx(0.25)


def _logged_meta_lr(tmp_path, **algorithm) -> list[float]:
    cfg = tiny_config(algorithm={"name": "reptile", **algorithm}, train={"iterations": 9, "meta_lr": 0.8, "log_every": 1})
    run = train(cfg, tmp_path, quiet=True)
    return [float(r["meta_lr"]) for r in read_metrics(run.metrics_path)]


def test_logged_meta_lr_falls_linearly_when_annealed(tmp_path):
    lrs = _logged_meta_lr(tmp_path, meta_lr_final=0.0)
    # 0.8 at the first iteration to 0.0 at the ninth: steps of 0.1.
    assert lrs == pytest.approx([0.8 - 0.1 * i for i in range(9)], abs=1e-7)


@pytest.mark.parametrize("final", [0.8, None])
def test_logged_meta_lr_is_constant_when_start_equals_end(tmp_path, final):
    assert _logged_meta_lr(tmp_path, meta_lr_final=final) == pytest.approx([0.8] * 9)


def test_inner_mini_batches_are_distinct_support_points():
    cfg = tiny_config(algorithm={"name": "reptile", "inner_steps": 3, "inner_batch": 2}, task={"support_shots": 5})
    algo = make_algorithm(cfg, 1, 1)
    sx = torch.arange(20.0).view(4, 5, 1)  # task t holds 5t..5t+4
    batch = TaskBatch(sx, -sx, sx, -sx, params={})
    xs, ys = algo.inner_batches(batch)
    assert xs.shape == (4, 3, 2, 1)
    assert torch.equal(ys, -xs)  # pairs stay together
    for t in range(4):
        for s in range(3):
            picked = xs[t, s, :, 0].tolist()
            assert len(set(picked)) == 2 and all(5 * t <= v < 5 * t + 5 for v in picked)


def test_inner_batch_larger_than_support_is_refused():
    from metarun.errors import UserError

    cfg = tiny_config(algorithm={"name": "reptile", "inner_batch": 6}, task={"support_shots": 5})
    with pytest.raises(UserError, match="algorithm.inner_batch"):
        make_algorithm(cfg, 1, 1)
