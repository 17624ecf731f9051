"""Every algorithm trains and evaluates; every inner loop's vectorised (vmap)
result equals an independent per-task loop (tests/reference_algorithms.py)."""

from __future__ import annotations

import json
import math

import pytest
import reference_algorithms as ref
import torch
from conftest import tiny_config

from metarun.algorithms import ALGORITHMS, make_algorithm
from metarun.evaluate import evaluate
from metarun.rundir import read_metrics
from metarun.tasks import make_family, make_generator
from metarun.train import train

SUITE = ["maml", "fomaml", "metasgd", "anil", "reptile", "cnp", "pretrain", "scratch"]
GRADIENT_META = ["maml", "fomaml", "metasgd", "anil"]  # meta-gradient through an inner loop
FINE_TUNED = ["maml", "fomaml", "metasgd", "anil", "reptile", "pretrain", "scratch"]  # SGD at evaluation


def test_registry_has_the_whole_suite():
    assert set(SUITE) <= set(ALGORITHMS)


@pytest.mark.parametrize("inner_steps", [1, 2, 5])
@pytest.mark.parametrize("name", SUITE)
def test_trains_and_evaluates_cleanly(tmp_path, name, inner_steps):
    cfg = tiny_config(algorithm={"name": name, "inner_steps": inner_steps}, train={"iterations": 4, "val_every": 2})
    run = train(cfg, tmp_path, quiet=True)
    info = json.loads(run.info_path.read_text())
    assert info["status"] == "completed" and info["iteration"] == 4
    rows = read_metrics(run.metrics_path)
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]
    for row in rows:
        for key in ("support_loss", "query_loss_pre", "query_loss", "meta_lr"):
            assert math.isfinite(float(row[key])), (key, row)
    result = evaluate(run.path, "last", ["eval.tasks=8", "eval.steps=2"])
    assert result["algorithm"] == name
    assert len(result["query_mse"]["mean"]) == 3
    assert all(math.isfinite(v) for v in result["query_mse"]["mean"])


def _setup(name: str, inner_steps: int, n_tasks: int = 3, **sections):
    """A float64 algorithm with non-uniform step sizes (Meta-SGD) and a batch."""
    torch.manual_seed(1)
    cfg = tiny_config(algorithm={"name": name, "inner_steps": inner_steps, "inner_lr": 0.05},
                      model={"hidden": [8, 8], "activation": "tanh"}, **sections)
    family = make_family(cfg.task)
    algo = make_algorithm(cfg, family.dx, family.dy).double()
    if name == "metasgd":
        with torch.no_grad():
            for p in algo.step_sizes.values():
                p.uniform_(0.01, 0.1)
    batch = family.sample(n_tasks, make_generator(3, "test"))
    batch = type(batch)(*(t.double() for t in batch.tensors()), params={})
    return algo, batch


def _reference_setup(algo):
    """Leaf copies of the weights and step sizes, and which weights adapt."""
    names = [k for k, _ in algo.net.named_parameters()]
    weights = [p.detach().clone().requires_grad_() for p in algo.net.parameters()]
    lr = algo.inner_lr()
    lrs = [lr[k].detach().clone().requires_grad_() for k in names] if isinstance(lr, dict) else [lr] * len(names)
    keys = algo.adapt_keys()
    adapt = [keys is None or k in keys for k in names]
    return names, weights, lrs, adapt


@pytest.mark.parametrize("inner_steps", [1, 2, 5])
@pytest.mark.parametrize("name", GRADIENT_META + ["metasgd-first-order", "anil-first-order"])
def test_vectorised_meta_gradient_equals_per_task_loop(name, inner_steps):
    name, _, first_order = name.partition("-")
    algo, batch = _setup(name, inner_steps)
    if first_order:  # Meta-SGD's step sizes still get a gradient, through alpha * g
        algo.cfg.first_order = True
    loss, _ = algo.meta_loss(batch)
    loss.backward()
    names, weights, lrs, adapt = _reference_setup(algo)
    expected = ref.meta_loss(algo.net, weights, lrs, adapt, batch, inner_steps, algo.cfg.first_order)
    torch.testing.assert_close(loss.detach(), expected.detach(), rtol=1e-10, atol=1e-12)
    leaves = weights + ([lr for lr in lrs] if name == "metasgd" else [])
    grads = torch.autograd.grad(expected, leaves)
    got = [p.grad for p in algo.net.parameters()]
    if name == "metasgd":
        got += [algo.inner_lr()[k].grad for k in names]
    for g, e in zip(got, grads):
        torch.testing.assert_close(g, e, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", FINE_TUNED)
def test_vectorised_adaptation_curve_equals_per_task_loop(name):
    algo, batch = _setup(name, 1)
    got = algo.adaptation_losses(batch, steps=4)
    _, weights, lrs, adapt = _reference_setup(algo)
    expected = ref.adaptation_curve(algo.net, weights, [lr.detach() if torch.is_tensor(lr) else lr for lr in lrs],
                                    adapt, batch, 4)
    assert got.shape == (len(batch), 5)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("inner_steps", [1, 2, 5])
def test_reptile_vectorised_step_equals_per_task_loop(inner_steps):
    epsilon = 0.3
    algo, batch = _setup("reptile", inner_steps, n_tasks=4, train={"meta_lr": epsilon})
    _, weights, _, _ = _reference_setup(algo)
    optimizer = algo.make_optimizer(epsilon)
    algo.meta_step(batch, optimizer, iteration=0)
    expected = ref.reptile_update(algo.net, weights, batch, 0.05, inner_steps, epsilon)
    for p, e in zip(algo.net.parameters(), expected):
        torch.testing.assert_close(p.detach(), e, rtol=1e-10, atol=1e-12)


def test_cnp_batched_prediction_equals_per_task_loop():
    algo, batch = _setup("cnp", 1, n_tasks=5)
    mean, std = algo.predict(batch.support_x, batch.support_y, batch.query_x)
    for t in range(len(batch)):
        m, s = algo.predict(batch.support_x[t:t + 1], batch.support_y[t:t + 1], batch.query_x[t:t + 1])
        torch.testing.assert_close(mean[t:t + 1], m, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(std[t:t + 1], s, rtol=1e-12, atol=1e-12)
