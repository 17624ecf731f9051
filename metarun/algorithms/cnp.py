"""Conditional neural process (Garnelo et al., 2018): read the support set, predict the query.

A model-based learner: an encoder maps each support pair (x, y) to a vector,
the vectors are averaged into one task representation r (so the order and
number of support points do not matter), and a decoder maps (r, x*) to a
Gaussian over y* with mean mu and std sigma = std_floor + softplus(raw).
Training minimises the Gaussian negative log-likelihood of the query points;
there are no inner gradient steps. During training each meta-batch uses a
random number of context points in [min_context, support_shots], so one
network serves every shot count at evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from metarun.algorithms.base import Algorithm, Stats, mse
from metarun.config import AlgorithmConfig, Config, option
from metarun.errors import UserError
from metarun.models import MLP
from metarun.tasks import TaskBatch


@dataclass
class CNPConfig(AlgorithmConfig):
    name: str = option("cnp", "meta-learning algorithm (see `metarun algorithms`)")
    representation: int = option(128, "size of the task representation r", min=1)
    encoder_hidden: list[int] = option([128, 128], "hidden widths of the encoder (x, y) -> r")
    decoder_hidden: list[int] = option([128, 128], "hidden widths of the decoder (r, x) -> (mean, std)")
    std_floor: float = option(0.01, "lower bound of the predicted standard deviation", gt=0.0)
    min_context: int = option(1, "fewest support points used as context in a training meta-batch", min=1)


class CNP(Algorithm):
    name = "cnp"
    Config = CNPConfig
    adapts = False
    compiled_method = "context_loss"  # meta_loss draws the context size, outside the compiled graph

    def __init__(self, cfg: Config, dx: int, dy: int):
        super().__init__(cfg, dx, dy)
        c = self.cfg
        if c.min_context > cfg.task.support_shots:
            raise UserError(f"algorithm.min_context: {c.min_context} is more than task.support_shots "
                            f"({cfg.task.support_shots})")
        act = cfg.model.activation
        self.encoder = MLP(dx + dy, c.representation, c.encoder_hidden, act)
        self.decoder = MLP(c.representation + dx, 2 * dy, c.decoder_hidden, act)

    def predict(self, context_x, context_y, target_x, in_context=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) at target_x [B, T, dx], given context [B, C, dx], [B, C, dy]; each [B, T, dy].
        in_context [C] (0/1) keeps only some context points in the average."""
        h = self.encoder(torch.cat([context_x, context_y], -1))  # [B, C, R]
        if in_context is None:
            r = h.mean(1)  # [B, R]
        else:
            r = (h * in_context[:, None]).sum(1) / in_context.sum()
        r = r.unsqueeze(1).expand(-1, target_x.shape[1], -1)  # [B, T, R]
        mean, raw = self.decoder(torch.cat([r, target_x], -1)).chunk(2, dim=-1)
        return mean, self.cfg.std_floor + F.softplus(raw)

    @staticmethod
    def nll(mean, std, y) -> torch.Tensor:
        """Gaussian negative log-likelihood per task, averaged over points and outputs: [B]."""
        per_point = 0.5 * ((y - mean) / std) ** 2 + std.log() + 0.5 * math.log(2 * math.pi)
        return per_point.flatten(1).mean(1)

    def meta_loss(self, batch: TaskBatch) -> tuple[torch.Tensor, Stats]:
        k = batch.support_x.shape[1]
        n = torch.randint(self.cfg.min_context, k + 1, ())  # context size for this meta-batch
        # The first n support points as a mask, not a slice: shapes stay fixed, so a
        # compiled context_loss is traced once rather than once per context size.
        in_context = (torch.arange(k) < n).to(batch.support_x)  # [K]
        return self.context_loss(batch, in_context)

    def context_loss(self, batch: TaskBatch, in_context: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        """Query NLL with the support points where in_context [K] is 1 as context."""
        sx, sy = batch.support_x, batch.support_y
        mean, std = self.predict(sx, sy, batch.query_x, in_context)
        loss = self.nll(mean, std, batch.query_y).mean()
        with torch.no_grad():
            query_mse = mse(mean, batch.query_y)
            context_pred = self.predict(sx, sy, sx, in_context)[0]
            context_mse = (((context_pred - sy) ** 2).mean(-1) * in_context).sum(1).mean() / in_context.sum()
        # No adaptation: the query MSE is both the "pre" and the "post" column; the
        # NLL (the training loss) is an extra stat shown by the progress bar.
        return loss, {"support_loss": context_mse, "query_loss_pre": query_mse, "query_loss": query_mse,
                      "query_nll": loss.detach()}

    def adaptation_losses(self, batch: TaskBatch, steps: int, inner_lr: float | None = None) -> torch.Tensor:
        """Query MSE with the whole support set as context, repeated for 0..steps: [B, steps + 1]."""
        with torch.no_grad():
            mean, _ = self.predict(batch.support_x, batch.support_y, batch.query_x)
            per_task = ((mean - batch.query_y) ** 2).flatten(1).mean(1)  # [B]
        return per_task.unsqueeze(1).expand(-1, steps + 1)

    def predict_after(self, batch: TaskBatch, x: torch.Tensor, steps: int, inner_lr: float | None = None) -> torch.Tensor:
        """Predictive mean at x [B, N, dx] with the support set as context (`steps` is ignored)."""
        with torch.no_grad():
            return self.predict(batch.support_x, batch.support_y, x)[0]

    def eval_metrics(self, batch: TaskBatch) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            mean, std = self.predict(batch.support_x, batch.support_y, batch.query_x)
            return {"query_nll": self.nll(mean, std, batch.query_y)}
