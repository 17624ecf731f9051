"""The batch type, seeds and the base class every task family builds on.

A family draws a whole meta-batch at once, as tensors on the target device,
from an explicit `torch.Generator`: same seed, same tasks. The draw order is
fixed (task parameters, then support inputs, then query inputs, then noise),
so changing the number of shots changes the points but not the functions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import ClassVar

import torch

from metarun.config import Range, TaskConfig


@dataclass
class TaskBatch:
    support_x: torch.Tensor  # [B, K, dx]
    support_y: torch.Tensor  # [B, K, dy]
    query_x: torch.Tensor  # [B, Q, dx]
    query_y: torch.Tensor  # [B, Q, dy]
    params: dict[str, torch.Tensor]  # each [B, ...]: the functions' parameters, for plots and tests

    def __len__(self) -> int:
        return self.support_x.shape[0]

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.support_x, self.support_y, self.query_x, self.query_y

    def slice(self, start: int, stop: int) -> TaskBatch:
        """Tasks start..stop-1 (a rank's share of a meta-batch, or a chunk)."""
        return TaskBatch(*(t[start:stop] for t in self.tensors()),
                         params={k: v[start:stop] for k, v in self.params.items()})

    def to(self, device: torch.device | str) -> TaskBatch:
        return TaskBatch(*(t.to(device) for t in self.tensors()),
                         params={k: v.to(device) for k, v in self.params.items()})


# --------------------------------------------------------------------------- seeds


def stream_seed(seed: int, purpose: str) -> int:
    """A seed for one random stream ("train", "validation", "eval", ...).

    Streams of different purposes never coincide, even for equal seeds, so the
    held-out tasks of `eval` are never the tasks a run trained on.
    """
    digest = hashlib.sha256(f"metarun:{purpose}:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def make_generator(seed: int, purpose: str, device: torch.device | str = "cpu") -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(stream_seed(seed, purpose))
    return gen


def uniform(bounds: Range, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    low, high = bounds
    return low + (high - low) * torch.rand(shape, generator=gen, device=gen.device)


def normal(mean: float, std: float, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    return mean + std * torch.randn(shape, generator=gen, device=gen.device)


def tasks_in(params: dict[str, torch.Tensor]) -> int:
    """The number of tasks B of a parameter dict (every entry is [B, ...])."""
    return next(iter(params.values())).shape[0]


# --------------------------------------------------------------------------- families


class TaskFamily:
    """Base class: subclasses set `name`, `Config`, and the three hooks below."""

    name: ClassVar[str]
    Config: ClassVar[type[TaskConfig]] = TaskConfig

    def __init__(self, cfg: TaskConfig):
        self.cfg = cfg

    @property
    def dx(self) -> int:
        """Input dimension: the config's `dim` where the family has one, else 1."""
        return getattr(self.cfg, "dim", 1)

    @property
    def dy(self) -> int:
        return 1

    def sample_params(self, n_tasks: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def sample_inputs(self, params: dict[str, torch.Tensor], n_points: int, gen: torch.Generator) -> torch.Tensor:
        """Default: x ~ U[x_range] independently in every input dimension. [B, n_points, dx]"""
        return uniform(self.cfg.x_range, (tasks_in(params), n_points, self.dx), gen)

    def function(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # noiseless targets [B, N, dy]

    def sample(self, n_tasks: int, gen: torch.Generator, support_shots: int | None = None,
               query_shots: int | None = None) -> TaskBatch:
        k = support_shots or self.cfg.support_shots
        q = query_shots or self.cfg.query_shots
        params = self.sample_params(n_tasks, gen)
        support_x = self.sample_inputs(params, k, gen)
        query_x = self.sample_inputs(params, q, gen)
        support_y = self.noisy(self.function(params, support_x), gen)
        query_y = self.noisy(self.function(params, query_x), gen)
        return TaskBatch(support_x, support_y, query_x, query_y, params)

    def noisy(self, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.cfg.noise_std == 0:
            return y
        return y + self.cfg.noise_std * torch.randn(y.shape, generator=gen, device=y.device)
