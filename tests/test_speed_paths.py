"""The fast paths against independent references: the MLP's hand-written
backprop against autograd, and the batched (no-vmap) MAML meta-gradient
against the plain per-task loop of tests/reference_maml.py, for every
activation, first and second order, one and several inner steps."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config
from reference_maml import forward, per_task_meta_gradient, per_task_meta_loss

from metarun.algorithms import make_algorithm
from metarun.algorithms.maml import MAML
from metarun.models import MLP, task_mse
from metarun.tasks import make_family, make_generator

ACTIVATIONS = ["relu", "tanh", "gelu", "silu"]


def max_rel_err(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(((x - y).abs().max() / y.abs().max()).item() for x, y in zip(a, b))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_functional_and_mse_grad_match_autograd(activation):
    torch.manual_seed(0)
    net = MLP(1, 1, [8, 8], activation).double()
    x, y = torch.randn(4, 6, 1, dtype=torch.float64), torch.randn(4, 6, 1, dtype=torch.float64)
    params = dict(net.named_parameters())
    weights = list(params.values())
    assert torch.allclose(net.functional(params, x), forward(net, weights, x))
    grads, loss = net.mse_and_grad(params, x, y)
    for t in range(4):  # per-task gradient of the task's own MSE
        ref_loss = ((forward(net, weights, x[t]) - y[t]) ** 2).mean()
        ref = torch.autograd.grad(ref_loss, weights)
        assert torch.allclose(loss[t], ref_loss)
        assert max_rel_err([grads[k][t] for k in params], list(ref)) < 1e-12
    assert torch.allclose(task_mse(net.functional(params, x), y), loss)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("name", ["maml", "fomaml"])
@pytest.mark.parametrize("steps", [1, 3])
def test_batched_meta_gradient_matches_per_task_loop(activation, name, steps):
    torch.set_default_dtype(torch.float64)
    try:
        cfg = tiny_config(algorithm={"name": name, "inner_steps": steps, "inner_lr": 0.1},
                          model={"activation": activation})
        algo = make_algorithm(cfg, 1, 1)
        assert algo.batched()
        batch = make_family(cfg.task).sample(5, make_generator(0, "train"))
        loss, _ = algo.meta_loss(batch)
        got = torch.autograd.grad(loss, list(algo.parameters()))
        ref = per_task_meta_gradient(algo.net, batch, 0.1, steps, first_order=name == "fomaml")
        assert max_rel_err(list(got), ref) < 1e-10
    finally:
        torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("steps", [1, 3])
def test_factored_meta_gradient_matches_per_task_loop(activation, steps):
    """Wide enough (64 > 4 x steps x 5 points) for MAML to keep its inner steps factored."""
    torch.set_default_dtype(torch.float64)
    try:
        cfg = tiny_config(algorithm={"name": "maml", "inner_steps": steps, "inner_lr": 0.1},
                          model={"activation": activation, "hidden": [64, 64]})
        algo = make_algorithm(cfg, 1, 1)
        assert algo.factored(algo.inner_lr(), cfg.task.support_shots)
        batch = make_family(cfg.task).sample(5, make_generator(0, "train"))
        loss, stats = algo.meta_loss(batch)
        got = torch.autograd.grad(loss, list(algo.parameters()))
        ref = per_task_meta_gradient(algo.net, batch, 0.1, steps, first_order=False)
        assert max_rel_err(list(got), ref) < 1e-10
        fomaml = make_algorithm(tiny_config(algorithm={"name": "fomaml", "inner_steps": steps, "inner_lr": 0.1},
                                            model={"activation": activation, "hidden": [64, 64]}), 1, 1)
        assert not fomaml.factored(fomaml.inner_lr(), cfg.task.support_shots)  # first order: explicit weights
        ref_loss = per_task_meta_loss(algo.net, *batch.tensors(), 0.1, steps, first_order=False)
        assert torch.allclose(loss, ref_loss, rtol=1e-12)
        support_pre = ((forward(algo.net, list(algo.parameters()), batch.support_x) - batch.support_y) ** 2).mean()
        assert torch.allclose(stats["support_loss"], support_pre, rtol=1e-12)
    finally:
        torch.set_default_dtype(torch.float32)


def test_factored_steps_are_the_adapted_weights():
    """The factored updates describe exactly the weights of explicit SGD steps."""
    torch.manual_seed(0)
    net = MLP(1, 1, [32, 32], "tanh").double()
    params = dict(net.named_parameters())
    x, y = torch.randn(3, 4, 1, dtype=torch.float64), torch.randn(3, 4, 1, dtype=torch.float64)
    updates, _ = net.adapt_factored(params, x, y, 0.05, 2)
    fast = params
    for _ in range(2):
        grads, _ = net.mse_and_grad(fast, x, y)
        fast = {k: fast[k] - 0.05 * grads[k] for k in fast}
    xq = torch.randn(3, 7, 1, dtype=torch.float64)
    assert torch.allclose(net.functional(params, xq, updates, 0.05), net.functional(fast, xq), atol=1e-12)


class _SubclassedLoss(MAML):
    """A variant that overrides the loss hook: must take the generic vmap + autograd path."""

    def loss_fn(self, params, x, y):
        return ((self.net.functional(params, x) - y) ** 2).mean()


def test_overridden_hooks_fall_back_to_vmap_and_agree():
    torch.manual_seed(0)
    cfg = tiny_config(algorithm={"inner_steps": 2})
    fast = make_algorithm(cfg, 1, 1)
    slow = _SubclassedLoss(cfg, 1, 1)
    slow.load_state_dict(fast.state_dict())
    assert not slow.batched() and slow.grad_fn() is None
    batch = make_family(cfg.task).sample(4, make_generator(0, "train"))
    g_fast = torch.autograd.grad(fast.meta_loss(batch)[0], list(fast.parameters()))
    g_slow = torch.autograd.grad(slow.meta_loss(batch)[0], list(slow.parameters()))
    assert max_rel_err(list(g_fast), list(g_slow)) < 1e-5
    assert torch.allclose(fast.adaptation_losses(batch, 3), slow.adaptation_losses(batch, 3), rtol=1e-5)


def test_maml_init_is_the_reference_codes_truncated_normal():
    torch.manual_seed(0)
    net = MLP(1, 1, [400, 400], "relu", init="maml")
    w = net.layers[1].weight  # [400, 400]
    assert w.abs().max() <= 0.02 and 0.0085 < w.std() < 0.0095  # std of N(0, 0.01) truncated at 2 std: 0.0088
    assert all((layer.bias == 0).all() for layer in net.layers)
    torch.manual_seed(0)
    default = MLP(1, 1, [400, 400], "relu")
    assert default.layers[1].weight.abs().max() > 0.02  # nn.Linear's U(-1/20, 1/20)
