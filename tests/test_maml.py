"""MAML and first-order MAML against independent references: central finite
differences, the detached-adapted-weights gradient, and a plain per-task loop."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config
from reference_maml import forward, per_task_meta_gradient, per_task_meta_loss

from metarun.algorithms import make_algorithm
from metarun.tasks import make_family, make_generator


def setup(name: str, *, inner_lr=0.1, inner_steps=2, hidden=(6,), activation="tanh", tasks=1, dtype=torch.float64):
    cfg = tiny_config(algorithm={"name": name, "inner_lr": inner_lr, "inner_steps": inner_steps},
                      model={"hidden": list(hidden), "activation": activation})
    torch.manual_seed(0)
    family = make_family(cfg.task)
    algo = make_algorithm(cfg, family.dx, family.dy).to(dtype)
    batch = family.sample(tasks, make_generator(1, "test"))
    batch = type(batch)(*(t.to(dtype) for t in batch.tensors()), params=batch.params)
    return cfg, algo, batch


def meta_gradient(algo, batch) -> list[torch.Tensor]:
    loss, _ = algo.meta_loss(batch)
    return list(torch.autograd.grad(loss, list(algo.parameters())))


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


@pytest.mark.parametrize("hidden, inner_steps", [((6,), 2), ((24,), 1)])  # the second keeps its inner step factored
def test_maml_gradient_matches_central_finite_differences(hidden, inner_steps):
    cfg, algo, batch = setup("maml", hidden=hidden, inner_steps=inner_steps)
    assert algo.factored(algo.inner_lr(), cfg.task.support_shots) == (hidden == (24,))
    analytic = flat(meta_gradient(algo, batch))

    weights = [p.detach().clone() for p in algo.parameters()]
    eps = 1e-6
    numeric = []
    for i, w in enumerate(weights):
        for j in range(w.numel()):
            values = []
            for sign in (1, -1):
                shifted = [v.clone() for v in weights]
                shifted[i].view(-1)[j] += sign * eps
                loss = per_task_meta_loss(algo.net, *batch.tensors(), cfg.algorithm.inner_lr, cfg.algorithm.inner_steps,
                                          first_order=False, weights=[v.requires_grad_() for v in shifted])
                values.append(loss.item())
            numeric.append((values[0] - values[1]) / (2 * eps))
    numeric = torch.tensor(numeric, dtype=torch.float64)
    rel = (analytic - numeric).norm() / numeric.norm()
    assert rel < 1e-4, rel

    _, fo_algo, _ = setup("fomaml", hidden=hidden, inner_steps=inner_steps)
    fo_algo.load_state_dict(algo.state_dict())
    first_order = flat(meta_gradient(fo_algo, batch))
    assert (first_order - analytic).norm() / analytic.norm() > 1e-3  # the flag really drops terms


def test_fomaml_gradient_is_query_gradient_at_detached_adapted_weights():
    cfg, algo, batch = setup("fomaml", inner_steps=3)
    sx, sy, qx, qy = (t[0] for t in batch.tensors())
    fast = [p.detach().clone().requires_grad_() for p in algo.parameters()]
    for _ in range(cfg.algorithm.inner_steps):  # plain SGD by hand
        loss = ((forward(algo.net, fast, sx) - sy) ** 2).mean()
        grads = torch.autograd.grad(loss, fast)
        fast = [(w - cfg.algorithm.inner_lr * g).detach().requires_grad_() for w, g in zip(fast, grads)]
    query_loss = ((forward(algo.net, fast, qx) - qy) ** 2).mean()
    expected = flat(torch.autograd.grad(query_loss, fast))
    assert torch.allclose(flat(meta_gradient(algo, batch)), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,first_order", [("maml", False), ("fomaml", True)])
@pytest.mark.parametrize("inner_steps", [1, 3])
def test_vectorised_meta_gradient_equals_per_task_loop(name, first_order, inner_steps):
    cfg, algo, batch = setup(name, inner_steps=inner_steps, hidden=(16, 16), activation="relu", tasks=5)
    vectorised = meta_gradient(algo, batch)
    loop = per_task_meta_gradient(algo.net, batch, cfg.algorithm.inner_lr, inner_steps, first_order)
    for v, ref in zip(vectorised, loop):
        assert torch.allclose(v, ref, rtol=1e-9, atol=1e-12)


def test_adaptation_losses_match_plain_sgd_loop():
    cfg, algo, batch = setup("maml", tasks=4, hidden=(8,))
    curve = algo.adaptation_losses(batch, steps=3, inner_lr=0.05)  # [B, 4]
    assert curve.shape == (4, 4)
    for t in range(4):
        sx, sy, qx, qy = (x[t] for x in batch.tensors())
        fast = [p.detach().clone().requires_grad_() for p in algo.parameters()]
        for step in range(4):
            q = ((forward(algo.net, fast, qx) - qy) ** 2).mean()
            assert torch.allclose(curve[t, step], q, rtol=1e-10)
            loss = ((forward(algo.net, fast, sx) - sy) ** 2).mean()
            grads = torch.autograd.grad(loss, fast)
            fast = [(w - 0.05 * g).detach().requires_grad_() for w, g in zip(fast, grads)]


@pytest.mark.parametrize("name", ["maml", "fomaml"])
def test_every_meta_parameter_changes(name):
    # tanh: no dead ReLU units, so every single entry must receive gradient
    cfg = tiny_config(algorithm={"name": name}, model={"activation": "tanh"})
    torch.manual_seed(0)
    family = make_family(cfg.task)
    algo = make_algorithm(cfg, family.dx, family.dy)
    optimizer = algo.make_optimizer(cfg.train.meta_lr)
    before = {k: v.detach().clone() for k, v in algo.named_parameters()}
    gen = make_generator(0, "train")
    for it in range(3):
        algo.meta_step(family.sample(4, gen), optimizer, it)
    for k, v in algo.named_parameters():
        assert (v.detach() - before[k]).abs().min() > 0, f"{k} has entries that never moved"


def test_short_training_lowers_post_adaptation_query_loss():
    cfg = tiny_config(model={"hidden": [40, 40]}, task={"support_shots": 10, "query_shots": 10},
                      train={"meta_batch_size": 10, "meta_lr": 0.003})
    torch.manual_seed(0)
    family = make_family(cfg.task)
    algo = make_algorithm(cfg, family.dx, family.dy)
    optimizer = algo.make_optimizer(cfg.train.meta_lr)
    held_out = family.sample(200, make_generator(0, "eval"))
    before = algo.adaptation_losses(held_out, 1)[:, 1].mean()
    gen = make_generator(0, "train")
    for it in range(300):
        algo.meta_step(family.sample(10, gen), optimizer, it)
    after = algo.adaptation_losses(held_out, 1)[:, 1].mean()
    assert after < 0.7 * before, (before.item(), after.item())
