"""Data-parallel meta-training under `torchrun`; a no-op in a single process.

    torchrun --nproc_per_node=N -m metarun train CONFIG

torchrun starts N copies of the command and sets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT; `setup` joins them into one process group (gloo on
CPU, nccl on CUDA, each rank on `cuda:LOCAL_RANK`).

How a meta-batch is shared. Every rank draws the SAME full meta-batch of
`meta_batch_size` tasks from the same seeded generator, so the generators stay
in lockstep and N ranks see exactly the tasks one process would see; each rank
then keeps its own contiguous slice `[rank*B/N, (rank+1)*B/N)` (`my_share`).
No two ranks train on the same task. Sampling a synthetic batch is cheap next
to the meta-gradient, so drawing it N times costs little.

The contract for algorithms. An algorithm computes its update from its slice
of tasks, writes it into `.grad` of its parameters as a MEAN over its tasks,
and then calls `Algorithm.reduce_gradients()` (which calls
`all_reduce_gradients` here) before `optimizer.step()`. Slices are equal in
size, so the mean over ranks of the per-rank means is the mean over the whole
meta-batch: the update, and so the parameters, are the same on every rank and
the same as one process with the whole meta-batch (up to float rounding).
An algorithm whose update is not the gradient of a loss (Reptile: `.grad =
theta - mean of the adapted weights`, then an SGD step) follows the same
contract: set `.grad`, call `reduce_gradients()`, step.

Only rank 0 writes the run directory: other ranks get a `Muted` stand-in from
`on_main`, whose methods do nothing, so the training loop has no rank tests.
Every collective (`all_reduce_gradients`, `mean_over_ranks`) must be reached
by all ranks at the same iterations; never call one from rank-0-only code.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from metarun.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    return rank() == 0


def _launched_world_size() -> int:
    """The world size torchrun announced (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def check_divisible(meta_batch_size: int, world: int) -> None:
    if meta_batch_size % world:
        raise UserError(f"train.meta_batch_size: {meta_batch_size} tasks cannot be split evenly over "
                        f"{world} processes; use a multiple of {world}")


def check_world_size(saved: int | None, current: int | None = None) -> None:
    """Refuse to resume a run with a different number of processes.

    `saved` is the `world_size` recorded in run.json or a checkpoint (None in
    runs made before it was recorded: those were single-process).
    """
    saved = 1 if saved is None else int(saved)
    current = world_size() if current is None else current
    if saved != current:
        raise UserError(f"resume: the run was trained with world size {saved} but this launch has "
                        f"{current} process(es); relaunch with {saved} in total "
                        f"(torchrun --nnodes x --nproc_per_node = {saved})")


def _rank_device(device: torch.device, local_rank: int, world: int) -> torch.device:
    if device.type != "cuda" or world == 1:
        return device
    if device.index is not None:
        raise UserError(f"device: {device} would put every process on one GPU; "
                        "use cuda or auto under torchrun (each process takes cuda:LOCAL_RANK)")
    if local_rank >= torch.cuda.device_count():
        raise UserError(f"device: process LOCAL_RANK={local_rank} has no GPU "
                        f"(this machine has {torch.cuda.device_count()}); lower --nproc_per_node")
    return torch.device("cuda", local_rank)


def setup(device: torch.device, meta_batch_size: int) -> Context:
    """Join the torchrun process group, if launched by torchrun, and return
    this process's rank, world size and device. Checks come before any
    collective, so a bad config fails the same way on every rank."""
    world = world_size() if is_distributed() else _launched_world_size()
    check_divisible(meta_batch_size, world)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _rank_device(device, local_rank, world)
    if world > 1 and not is_distributed():
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
        atexit.register(shutdown)
    return Context(rank(), world, local_rank, device)


def shutdown() -> None:
    if is_distributed():
        dist.destroy_process_group()


def my_share(batch: T) -> T:
    """This rank's contiguous slice of a meta-batch (`TaskBatch.slice`)."""
    world = world_size()
    if world == 1:
        return batch
    share = len(batch) // world  # divisibility was checked in `setup`
    start = rank() * share
    return batch.slice(start, start + share)


def all_reduce_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Average each parameter's `.grad` over all ranks (see the contract above)."""
    if not is_distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    # One collective for all parameters: flatten, reduce, copy back.
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The mean over ranks of a tensor of per-rank means (e.g. stacked loss stats)."""
    if not is_distributed():
        return values
    values = values.detach().clone()
    dist.all_reduce(values)
    return values / world_size()


class Muted:
    """What ranks other than 0 hold instead of the run directory and metrics
    writer: any attribute is another Muted, any call does nothing."""

    def __getattr__(self, name: str) -> Muted:
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        return None

    def __enter__(self) -> Muted:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def __str__(self) -> str:
        return f"(rank {rank()}: rank 0 writes the run directory)"


def on_main(make: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`make(*args, **kwargs)` on rank 0; a `Muted` stand-in on other ranks."""
    return make(*args, **kwargs) if is_main() else Muted()  # type: ignore[return-value]
