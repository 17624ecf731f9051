"""Pretrain baseline: one network regressed on all tasks jointly, fine-tuned at evaluation.

Training has no inner loop: each meta-batch is one regression problem over
every support and query point of every task (in the MAML paper, this is the
"pretrained" baseline). Evaluation fine-tunes it on each task's support set
with the same inner loop as MAML (`algorithm.inner_lr`, plain SGD).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metarun.algorithms.base import Stats, mse
from metarun.algorithms.maml import MAML
from metarun.config import AlgorithmConfig, option
from metarun.tasks import TaskBatch


@dataclass
class PretrainConfig(AlgorithmConfig):
    name: str = option("pretrain", "meta-learning algorithm (see `metarun algorithms`)")
    inner_lr: float = option(0.01, "fine-tuning SGD step size at evaluation", gt=0.0)
    inner_steps: int = option(1, "fine-tuning steps scored by validation (training has no inner loop)", min=1)


class Pretrain(MAML):
    name = "pretrain"
    Config = PretrainConfig

    def meta_loss(self, batch: TaskBatch) -> tuple[torch.Tensor, Stats]:
        # The MLP is batched over leading dims: all tasks in one call, no loop.
        support = self.net(batch.support_x)  # [B, K, dy]
        query = self.net(batch.query_x)  # [B, Q, dy]
        k, q = support.shape[1], query.shape[1]
        support_loss, query_loss = mse(support, batch.support_y), mse(query, batch.query_y)
        loss = (k * support_loss + q * query_loss) / (k + q)  # MSE over all K + Q points
        return loss, {"support_loss": support_loss.detach(), "query_loss_pre": query_loss.detach(),
                      "query_loss": query_loss.detach()}
