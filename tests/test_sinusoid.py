"""The sinusoid sampler: ranges, formula, seeding."""

from __future__ import annotations

import math

import torch
from conftest import tiny_config

from metarun.tasks import make_family, make_generator


def sample(seed=0, n=2000, **task):
    family = make_family(tiny_config(task=task).task)
    return family.sample(n, make_generator(seed, "test"))


def test_shapes_ranges_and_formula():
    b = sample(support_shots=7, query_shots=3)
    assert b.support_x.shape == (2000, 7, 1) and b.support_y.shape == (2000, 7, 1)
    assert b.query_x.shape == (2000, 3, 1) and b.query_y.shape == (2000, 3, 1)
    a, phi = b.params["amplitude"], b.params["phase"]
    assert 0.1 <= a.min() and a.max() <= 5.0
    assert 0.0 <= phi.min() and phi.max() <= math.pi
    for x in (b.support_x, b.query_x):
        assert -5.0 <= x.min() and x.max() <= 5.0
    # y = A sin(x - phi), recomputed per task in float64
    expected = a.double() * torch.sin(b.support_x.double() - phi.double())
    assert torch.allclose(b.support_y.double(), expected, atol=1e-5)
    # the draws cover their ranges (uniform means)
    assert abs(a.mean().item() - 2.55) < 0.1 and abs(phi.mean().item() - math.pi / 2) < 0.07
    assert abs(b.support_x.mean().item()) < 0.1


def test_custom_ranges_and_noise():
    b = sample(amplitude=[2.0, 3.0], x_range=[0.0, 1.0], noise_std=0.5)
    assert 2.0 <= b.params["amplitude"].min() and b.params["amplitude"].max() <= 3.0
    assert 0.0 <= b.support_x.min() and b.support_x.max() <= 1.0
    clean = b.params["amplitude"] * torch.sin(b.support_x - b.params["phase"])
    residual = b.support_y - clean
    assert abs(residual.std().item() - 0.5) < 0.03


def test_seeding():
    a, b, c = sample(seed=3), sample(seed=3), sample(seed=4)
    for x, y in zip(a.tensors(), b.tensors()):
        assert torch.equal(x, y)
    assert not torch.equal(a.support_x, c.support_x)
    assert not torch.equal(a.params["amplitude"], c.params["amplitude"])


def test_support_and_query_drawn_independently():
    b = sample()
    assert not torch.equal(b.support_x[:, :5], b.query_x[:, :5])


def test_streams_of_different_purposes_differ():
    family = make_family(tiny_config().task)
    train = family.sample(10, make_generator(0, "train"))
    held_out = family.sample(10, make_generator(0, "eval"))
    assert not torch.equal(train.params["amplitude"], held_out.params["amplitude"])
