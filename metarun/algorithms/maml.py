"""MAML (Finn et al., 2017) and its first-order variant, vectorised over tasks.

The meta-parameters are an initialisation. For each task, a few SGD steps on
the support set give adapted weights; the loss of the adapted weights on the
query set, averaged over the meta-batch, is the meta-loss. Second order
differentiates through the inner steps; first order treats the inner
gradients as constants. Work over the meta-batch is vectorised, never a
Python loop over tasks.

Meta-SGD and ANIL are presets of this class: they override `inner_lr` and
`adapt_keys`.

Speed (see docs/speed.md): with the stock `loss_fn` and `task_losses`, the
whole meta-batch goes through `task_losses` at once as [B, K, d] tensors (the
MLP's hand-written forward and backprop broadcast over tasks), which is
cheaper than `vmap`. A subclass that overrides either hook gets the generic
path: `vmap` over tasks, and autograd for the inner gradient if it changed
the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import vmap

from metarun.algorithms.base import Algorithm, Stats
from metarun.algorithms.inner import GradFn, Params, adaptation_curve, sgd_adapt
from metarun.config import AlgorithmConfig, Config, option
from metarun.errors import UserError
from metarun.models import MLP, task_mse
from metarun.tasks import TaskBatch


@dataclass
class MAMLConfig(AlgorithmConfig):
    first_order: bool = option(False, "drop the second-order terms of the meta-gradient (FOMAML)")


@dataclass
class FOMAMLConfig(MAMLConfig):
    name: str = option("fomaml", "meta-learning algorithm (see `metarun algorithms`)")
    first_order: bool = option(True, "first-order MAML is first order by definition")


class MAML(Algorithm):
    name = "maml"
    Config = MAMLConfig

    def __init__(self, cfg: Config, dx: int, dy: int):
        super().__init__(cfg, dx, dy)
        self.net = MLP(dx, dy, cfg.model.hidden, cfg.model.activation, cfg.model.init)

    # -- hooks for variants ------------------------------------------------------------

    def inner_lr(self, override: float | None = None) -> float | Params:
        return override if override is not None else self.cfg.inner_lr

    def adapt_keys(self) -> list[str] | None:
        """Names of the parameters the inner loop moves; None means all."""
        return None

    # -- the algorithm -----------------------------------------------------------------

    def loss_fn(self, params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """MSE of one task ([K, d] -> scalar), or of each task of a batch ([B, K, d] -> [B])."""
        return task_mse(self.net.functional(params, x), y)

    def grad_fn(self) -> GradFn | None:
        """The inner gradient: hand-written backprop for the stock loss, else None (autograd)."""
        return self.net.mse_and_grad if type(self).loss_fn is MAML.loss_fn else None

    def batched(self) -> bool:
        """Whether `task_losses` may take the whole meta-batch at once (stock hooks only)."""
        return type(self).loss_fn is MAML.loss_fn and type(self).task_losses is MAML.task_losses

    def factored(self, lr: float | Params, shots: int) -> bool:
        """Whether the inner loop keeps its steps factored (`MLP.adapt_factored`):
        second order, stock hooks, one step size, every weight adapting, and few
        enough steps and support points for it to save work. Each step's forward
        pays for all earlier steps, so the gain fades quickly with steps: measured
        on CPU, 1 step of 10 points is 1.15x faster at width 40 and 1.7x at width
        100; 2 steps are 1.4x faster at width 100 but 0.9x at width 40. First
        order keeps the explicit weights, whose saved memory is the same for any
        number of steps (the factors would grow with them)."""
        return (not self.cfg.first_order and self.batched() and not isinstance(lr, dict) and self.adapt_keys() is None
                and 4 * self.cfg.inner_steps * shots <= min(self.model_cfg.hidden, default=0))

    def meta_params(self) -> Params:
        return dict(self.net.named_parameters())

    def task_losses(self, params: Params, lr: float | Params, support_x, support_y, query_x, query_y):
        """One task: (query loss after adaptation, support and query loss before).
        With `batched()`, the same for every task of [B, ...] tensors at once: three [B]."""
        if self.factored(lr, support_x.shape[-2]):
            updates, support_pre = self.net.adapt_factored(params, support_x, support_y, lr, self.cfg.inner_steps)
            query_post = task_mse(self.net.functional(params, query_x, updates, lr), query_y)
        else:
            adapted, support_pre = sgd_adapt(self.loss_fn, params, support_x, support_y, lr, self.cfg.inner_steps,
                                             self.cfg.first_order, self.adapt_keys(), self.grad_fn())
            query_post = self.loss_fn(adapted, query_x, query_y)
        with torch.no_grad():
            query_pre = self.loss_fn(params, query_x, query_y)
        return query_post, support_pre.detach(), query_pre

    def meta_loss(self, batch: TaskBatch) -> tuple[torch.Tensor, Stats]:
        per_task = self.task_losses if self.batched() else vmap(self.task_losses, in_dims=(None, None, 0, 0, 0, 0))
        query_post, support_pre, query_pre = per_task(self.meta_params(), self.inner_lr(), *batch.tensors())
        loss = query_post.mean()
        return loss, {"support_loss": support_pre.mean(), "query_loss_pre": query_pre.mean(),
                      "query_loss": loss.detach()}

    def frozen_inner(self, inner_lr: float | None) -> tuple[Params, float | Params]:
        """(meta-parameters, inner step sizes), detached: for evaluation, not training."""
        params = {k: v.detach() for k, v in self.meta_params().items()}
        lr = self.inner_lr(inner_lr)
        if isinstance(lr, dict):
            lr = {k: v.detach() for k, v in lr.items()}
        return params, lr

    def adaptation_losses(self, batch: TaskBatch, steps: int, inner_lr: float | None = None) -> torch.Tensor:
        params, lr = self.frozen_inner(inner_lr)
        adapt, grad_fn = self.adapt_keys(), self.grad_fn()

        def curve(p, lr, sx, sy, qx, qy):
            return adaptation_curve(self.loss_fn, p, sx, sy, qx, qy, lr, steps, adapt, grad_fn)

        if type(self).loss_fn is not MAML.loss_fn:
            curve = vmap(curve, in_dims=(None, None, 0, 0, 0, 0))
        with torch.no_grad():
            return curve(params, lr, *batch.tensors())  # [B, steps + 1]

    def predict_after(self, batch: TaskBatch, x: torch.Tensor, steps: int, inner_lr: float | None = None) -> torch.Tensor:
        params, lr = self.frozen_inner(inner_lr)
        adapt = self.adapt_keys()

        def predict(p, lr, sx, sy, xs):  # one task: [K, dx], [K, dy], [N, dx] -> [N, dy]
            adapted, _ = sgd_adapt(self.loss_fn, p, sx, sy, lr, steps, first_order=True, adapt=adapt)
            return self.net.functional(adapted, xs)

        with torch.no_grad():
            return vmap(predict, in_dims=(None, None, 0, 0, 0))(params, lr, batch.support_x, batch.support_y, x)


class FOMAML(MAML):
    name = "fomaml"
    Config = FOMAMLConfig

    def __init__(self, cfg: Config, dx: int, dy: int):
        if not cfg.algorithm.first_order:
            raise UserError("algorithm.first_order: fomaml is first order by definition; use name: maml")
        super().__init__(cfg, dx, dy)
