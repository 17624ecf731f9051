"""ANIL: the inner loop moves the head only; the outer step moves the body too."""

from __future__ import annotations

import torch
from conftest import tiny_config

from metarun.algorithms import make_algorithm
from metarun.algorithms.inner import sgd_adapt
from metarun.tasks import make_family, make_generator


def _anil(inner_steps: int = 3):
    torch.manual_seed(0)
    cfg = tiny_config(algorithm={"name": "anil", "inner_lr": 0.1, "inner_steps": inner_steps}, train={"meta_lr": 0.01})
    family = make_family(cfg.task)
    return make_algorithm(cfg, family.dx, family.dy), family.sample(4, make_generator(0, "anil"))


def test_adapt_keys_are_the_last_layer():
    algo, _ = _anil()
    assert algo.adapt_keys() == ["layers.2.weight", "layers.2.bias"]  # 1-16-16-1: layers 0, 1, 2


def test_inner_loop_changes_only_head_parameters():
    algo, batch = _anil()
    params = {k: v.detach() for k, v in algo.meta_params().items()}
    # The inner loop ANIL's meta-loss runs, for one task.
    adapted, _ = sgd_adapt(algo.loss_fn, params, batch.support_x[0], batch.support_y[0], algo.inner_lr(),
                           algo.cfg.inner_steps, adapt=algo.adapt_keys())
    head = set(algo.net.head_keys())
    for k in params:
        if k in head:
            assert not torch.equal(adapted[k], params[k]), k
        else:
            assert torch.equal(adapted[k], params[k]), k


def test_outer_step_changes_body_parameters_too():
    algo, batch = _anil()
    before = {k: v.detach().clone() for k, v in algo.meta_params().items()}
    optimizer = algo.make_optimizer(0.01)
    algo.meta_step(batch, optimizer, 0)
    for k, v in algo.meta_params().items():
        assert not torch.equal(v.detach(), before[k]), k
    body = [k for k in before if k not in algo.net.head_keys()]
    assert body and all(algo.meta_params()[k].grad.abs().sum() > 0 for k in body)
