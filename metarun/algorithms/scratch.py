"""Scratch baseline: a freshly initialised network, fine-tuned on each task's support set.

Nothing is learned across tasks: the meta-step changes no weight (it only
reports the losses of the initial network), so one iteration is enough.
Evaluation fine-tunes the saved initial weights (seeded by `seed`) with the
same inner loop as MAML (`algorithm.inner_lr`, plain SGD).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metarun.algorithms.base import Stats, mse
from metarun.algorithms.maml import MAML
from metarun.config import AlgorithmConfig, option
from metarun.tasks import TaskBatch


@dataclass
class ScratchConfig(AlgorithmConfig):
    name: str = option("scratch", "meta-learning algorithm (see `metarun algorithms`)")
    inner_lr: float = option(0.01, "fine-tuning SGD step size at evaluation", gt=0.0)


class Scratch(MAML):
    name = "scratch"
    Config = ScratchConfig

    def meta_step(self, batch: TaskBatch, optimizer: torch.optim.Optimizer, iteration: int) -> Stats:
        with torch.no_grad():
            query = mse(self.net(batch.query_x), batch.query_y)
            return {"support_loss": mse(self.net(batch.support_x), batch.support_y),
                    "query_loss_pre": query, "query_loss": query}
