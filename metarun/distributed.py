"""torch.distributed glue: a no-op in a single process."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_reduce_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Average each parameter's gradient over all ranks."""
    if not is_distributed():
        return
    world = dist.get_world_size()
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world
