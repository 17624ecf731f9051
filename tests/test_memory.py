"""First-order memory does not grow with inner steps (not timed).

The measure: bytes of every tensor autograd saves for the backward pass of
the meta-loss, counted with `torch.autograd.graph.saved_tensors_hooks`. That
is the memory that scales with inner steps in MAML (each second-order step
keeps its activations); it is exact and does not depend on the allocator.
"""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from metarun.algorithms import make_algorithm
from metarun.tasks import make_family, make_generator


def saved_bytes(name: str, inner_steps: int) -> int:
    torch.manual_seed(0)
    cfg = tiny_config(algorithm={"name": name, "inner_steps": inner_steps})
    algo = make_algorithm(cfg, 1, 1)
    batch = make_family(cfg.task).sample(8, make_generator(0, "train"))
    total = 0

    def pack(t: torch.Tensor):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = algo.meta_loss(batch)
    loss.backward()
    return total


def test_first_order_memory_is_flat_in_inner_steps():
    sizes = [saved_bytes("fomaml", s) for s in (1, 2, 5, 10)]
    assert sizes[0] > 0
    assert len(set(sizes)) == 1, sizes


def test_second_order_memory_grows_with_inner_steps():
    """The measure is sensitive: second-order MAML keeps every step's activations."""
    one, five, ten = (saved_bytes("maml", s) for s in (1, 5, 10))
    assert one < five < ten
    assert (ten - five) / 5 == pytest.approx((five - one) / 4, rel=0.01)  # linear: a fixed cost per step
