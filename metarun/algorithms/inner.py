"""The inner loop shared by every gradient-based learner: plain SGD on one
task's support set, over an explicit parameter dict (called under `vmap`).

`lr` is a float or a dict of per-parameter step sizes (Meta-SGD); `adapt`
names the parameters that move (ANIL moves only the head), the rest stay
fixed. `first_order` drops the second-order terms: the inner gradient is
taken at detached weights, so the adapted weights depend on the initial
ones through the identity only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import grad_and_value

Params = dict[str, torch.Tensor]
LossFn = Callable[[Params, torch.Tensor, torch.Tensor], torch.Tensor]  # (params, x, y) -> scalar


def split(params: Params, adapt: list[str] | None) -> tuple[Params, Params]:
    """(fast weights that adapt, frozen weights that do not)."""
    if adapt is None:
        return dict(params), {}
    return {k: params[k] for k in adapt}, {k: v for k, v in params.items() if k not in adapt}


def sgd_step(loss_fn: LossFn, fast: Params, frozen: Params, x: torch.Tensor, y: torch.Tensor,
             lr: float | Params, first_order: bool) -> tuple[Params, torch.Tensor]:
    """One SGD step on the fast weights; returns (new fast weights, loss before the step)."""

    def support_loss(f: Params, fr: Params) -> torch.Tensor:
        return loss_fn({**fr, **f}, x, y)

    if first_order:
        grads, loss = grad_and_value(support_loss)(
            {k: v.detach() for k, v in fast.items()}, {k: v.detach() for k, v in frozen.items()})
    else:
        grads, loss = grad_and_value(support_loss)(fast, frozen)
    step = {k: (lr[k] if isinstance(lr, dict) else lr) * g for k, g in grads.items()}
    return {k: fast[k] - step[k] for k in fast}, loss


def sgd_adapt(loss_fn: LossFn, params: Params, x: torch.Tensor, y: torch.Tensor, lr: float | Params,
              steps: int, first_order: bool = False, adapt: list[str] | None = None) -> tuple[Params, torch.Tensor]:
    """`steps` SGD steps from `params`; returns (adapted params, support loss before adapting)."""
    fast, frozen = split(params, adapt)
    first_loss = None
    for _ in range(steps):
        fast, loss = sgd_step(loss_fn, fast, frozen, x, y, lr, first_order)
        first_loss = loss if first_loss is None else first_loss
    if first_loss is None:
        first_loss = loss_fn(params, x, y)
    return {**frozen, **fast}, first_loss


def adaptation_curve(loss_fn: LossFn, params: Params, support_x: torch.Tensor, support_y: torch.Tensor,
                     query_x: torch.Tensor, query_y: torch.Tensor, lr: float | Params, steps: int,
                     adapt: list[str] | None = None) -> torch.Tensor:
    """Query loss after 0..steps SGD steps on the support set: [steps + 1]."""
    fast, frozen = split(params, adapt)
    losses = [loss_fn(params, query_x, query_y)]
    for _ in range(steps):
        fast, _ = sgd_step(loss_fn, fast, frozen, support_x, support_y, lr, first_order=True)
        losses.append(loss_fn({**frozen, **fast}, query_x, query_y))
    return torch.stack(losses)
