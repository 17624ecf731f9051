"""Reptile (Nichol et al., 2018): move the initialisation towards task-adapted weights.

For each task of the meta-batch, a few plain SGD steps on the support set
(optionally on random mini-batches of it) give adapted weights phi; the outer
step sets the gradient of the initialisation theta to theta - mean(phi) and
takes one SGD step of size epsilon, i.e. theta <- theta + epsilon *
(mean(phi) - theta). No gradient flows through the inner loop. epsilon
(`train.meta_lr`) can be annealed linearly to `algorithm.meta_lr_final`; the
value used at each iteration is the meta_lr column of metrics.csv.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import vmap

from metarun.algorithms.base import Stats
from metarun.algorithms.inner import sgd_step
from metarun.algorithms.maml import MAML
from metarun.config import AlgorithmConfig, Config, option
from metarun.errors import UserError
from metarun.tasks import TaskBatch


@dataclass
class ReptileConfig(AlgorithmConfig):
    name: str = option("reptile", "meta-learning algorithm (see `metarun algorithms`)")
    inner_lr: float = option(0.02, "inner-loop SGD step size (training and evaluation)", gt=0.0)
    inner_steps: int = option(5, "inner-loop SGD steps on the support set during training", min=1)
    inner_batch: int | None = option(None, "support points per inner step, a fresh random subset per step and task "
                                           "(null: the whole support set)", min=1)
    meta_lr_final: float | None = option(None, "outer step size at the last iteration, annealed linearly from "
                                               "train.meta_lr (null: constant)", min=0.0)


class Reptile(MAML):
    """Shares MAML's network, loss and evaluation; replaces the outer step."""

    name = "reptile"
    Config = ReptileConfig
    compiled_method = None  # no meta-loss: its outer step is an interpolation

    def __init__(self, cfg: Config, dx: int, dy: int):
        super().__init__(cfg, dx, dy)
        if self.cfg.inner_batch is not None and self.cfg.inner_batch > cfg.task.support_shots:
            raise UserError(f"algorithm.inner_batch: {self.cfg.inner_batch} is more than task.support_shots "
                            f"({cfg.task.support_shots})")
        self.meta_lr_start = cfg.train.meta_lr
        self.iterations = cfg.train.iterations

    def make_optimizer(self, meta_lr: float) -> torch.optim.Optimizer:
        # Plain SGD on the gradient theta - mean(phi) is exactly the Reptile interpolation.
        return torch.optim.SGD(self.parameters(), lr=meta_lr)

    def outer_lr(self, iteration: int) -> float:
        """Linear from train.meta_lr at iteration 0 to meta_lr_final at the last one."""
        end = self.cfg.meta_lr_final
        if end is None:
            return self.meta_lr_start
        frac = iteration / max(self.iterations - 1, 1)
        return self.meta_lr_start + (end - self.meta_lr_start) * min(frac, 1.0)

    def inner_batches(self, batch: TaskBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Support points for each inner step: [B, steps, b, dx], [B, steps, b, dy]."""
        sx, sy = batch.support_x, batch.support_y  # [B, K, dx], [B, K, dy]
        n_tasks, k = sx.shape[:2]
        steps = self.cfg.inner_steps
        if self.cfg.inner_batch is None or self.cfg.inner_batch >= k:
            return sx.unsqueeze(1).expand(-1, steps, -1, -1), sy.unsqueeze(1).expand(-1, steps, -1, -1)
        # A random subset without replacement per (task, step), from the global RNG (checkpointed).
        idx = torch.rand(n_tasks, steps, k, device=sx.device).argsort(-1)[..., : self.cfg.inner_batch]  # [B, S, b]
        rows = torch.arange(n_tasks, device=sx.device)[:, None, None]
        return sx[rows, idx], sy[rows, idx]

    def adapt(self, params, xs, ys):
        """One task: SGD through its per-step batches xs [steps, b, dx]; (phi, support loss before)."""
        first = None
        for s in range(xs.shape[0]):
            params, loss = sgd_step(self.loss_fn, params, {}, xs[s], ys[s], self.cfg.inner_lr, first_order=True)
            first = loss if first is None else first
        return params, first

    def meta_step(self, batch: TaskBatch, optimizer: torch.optim.Optimizer, iteration: int) -> Stats:
        theta = self.meta_params()
        with torch.no_grad():
            start = {k: v.detach() for k, v in theta.items()}
            xs, ys = self.inner_batches(batch)
            adapted, support_pre = vmap(self.adapt, in_dims=(None, 0, 0))(start, xs, ys)  # each [B, ...]
            per_task_loss = vmap(self.loss_fn, in_dims=(0, 0, 0))
            query_post = per_task_loss(adapted, batch.query_x, batch.query_y)
            query_pre = vmap(self.loss_fn, in_dims=(None, 0, 0))(start, batch.query_x, batch.query_y)
            for k, p in theta.items():
                p.grad = start[k] - adapted[k].mean(0)
        self.reduce_gradients()
        for group in optimizer.param_groups:
            group["lr"] = self.outer_lr(iteration)
        optimizer.step()
        return {"support_loss": support_pre.mean(), "query_loss_pre": query_pre.mean(), "query_loss": query_post.mean()}
