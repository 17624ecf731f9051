"""What every algorithm is: a module that owns its meta-parameters and its
meta-step, and can report query losses along an adaptation on held-out tasks.

The trainer only calls `make_optimizer`, `meta_step` and `adaptation_losses`;
inner loops are the algorithm's business.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from metarun.config import AlgorithmConfig, Config
from metarun.tasks import TaskBatch

Stats = dict[str, torch.Tensor]  # 0-d tensors; converted to floats only when logged


def mse(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((pred - y) ** 2).mean()


class Algorithm(nn.Module):
    name: ClassVar[str]
    Config: ClassVar[type[AlgorithmConfig]] = AlgorithmConfig
    # Whether the eval table's "steps" are real adaptation steps (False for
    # model-based learners, which read the support set instead).
    adapts: ClassVar[bool] = True
    # The method `train.compile` compiles: the pure tensor part of the meta-step
    # (None: nothing worth compiling, e.g. an update that is not a loss's gradient).
    compiled_method: ClassVar[str | None] = "meta_loss"

    def __init__(self, cfg: Config, dx: int, dy: int):
        super().__init__()
        self.cfg = cfg.algorithm
        self.model_cfg = cfg.model
        self.dx, self.dy = dx, dy

    def make_optimizer(self, meta_lr: float) -> torch.optim.Optimizer:
        # fused: one kernel for all parameters instead of ~10 small ops per parameter (~2x faster step here)
        return torch.optim.Adam(self.parameters(), lr=meta_lr, fused=True)

    def meta_loss(self, batch: TaskBatch) -> tuple[torch.Tensor, Stats]:
        """The loss whose gradient is the meta-gradient, and stats to log."""
        raise NotImplementedError

    def meta_step(self, batch: TaskBatch, optimizer: torch.optim.Optimizer, iteration: int) -> Stats:
        optimizer.zero_grad(set_to_none=True)
        loss, stats = self.meta_loss(batch)
        loss.backward()
        self.reduce_gradients()
        optimizer.step()
        return stats

    def reduce_gradients(self) -> None:
        """Average gradients across processes when running under torchrun."""
        from metarun import distributed

        distributed.all_reduce_gradients(self.parameters())

    def adaptation_losses(self, batch: TaskBatch, steps: int, inner_lr: float | None = None) -> torch.Tensor:
        """Query MSE of every task after 0..steps adaptation steps: [B, steps + 1]."""
        raise NotImplementedError

    def eval_metrics(self, batch: TaskBatch) -> dict[str, torch.Tensor]:
        """Held-out metrics besides the query MSE curve, name -> per-task values [B] (CNP: NLL)."""
        return {}

    def predict_after(self, batch: TaskBatch, x: torch.Tensor, steps: int, inner_lr: float | None = None) -> torch.Tensor:
        """Predictions at inputs x [B, N, dx] for each task of `batch` after `steps`
        adaptation steps on its support set: [B, N, dy] (for plots of fitted functions).
        Optional; a learner without an inner loop ignores `steps`."""
        raise NotImplementedError(f"{self.name} cannot show its predictions")
