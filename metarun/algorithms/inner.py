"""The inner loop shared by every gradient-based learner: plain SGD on one
task's support set, over an explicit parameter dict (called under `vmap`).

`lr` is a float or a dict of per-parameter step sizes (Meta-SGD); `adapt`
names the parameters that move (ANIL moves only the head), the rest stay
fixed. `first_order` drops the second-order terms: the inner gradient is
taken at detached weights, so the adapted weights depend on the initial
ones through the identity only.

Speed: a `grad_fn` (params, x, y) -> (grads, loss) may stand in for
`torch.func.grad_and_value(loss_fn)`, e.g. the MLP's hand-written backprop
(`MLP.mse_and_grad`). The functions here are also correct on a whole
meta-batch at once (x [B, K, dx], loss_fn returning [B]) when the loss and
gradient broadcast over the task dimension: the gradient of the summed
per-task losses is each task's own gradient, so no `vmap` is needed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import grad_and_value

Params = dict[str, torch.Tensor]
LossFn = Callable[[Params, torch.Tensor, torch.Tensor], torch.Tensor]  # (params, x, y) -> scalar
GradFn = Callable[[Params, torch.Tensor, torch.Tensor], tuple[Params, torch.Tensor]]  # -> (grads, loss)


def split(params: Params, adapt: list[str] | None) -> tuple[Params, Params]:
    """(fast weights that adapt, frozen weights that do not)."""
    if adapt is None:
        return dict(params), {}
    return {k: params[k] for k in adapt}, {k: v for k, v in params.items() if k not in adapt}


def sgd_step(loss_fn: LossFn, fast: Params, frozen: Params, x: torch.Tensor, y: torch.Tensor,
             lr: float | Params, first_order: bool, grad_fn: GradFn | None = None) -> tuple[Params, torch.Tensor]:
    """One SGD step on the fast weights; returns (new fast weights, loss before the step)."""
    if first_order:  # the gradient at detached weights: a constant for the outer loop
        fast_in, frozen_in = {k: v.detach() for k, v in fast.items()}, {k: v.detach() for k, v in frozen.items()}
    else:
        fast_in, frozen_in = fast, frozen
    if grad_fn is not None:
        grads, loss = grad_fn({**frozen_in, **fast_in}, x, y)
    else:
        def support_loss(f: Params, fr: Params) -> torch.Tensor:
            return loss_fn({**fr, **f}, x, y)

        grads, loss = grad_and_value(support_loss)(fast_in, frozen_in)
    return {k: fast[k] - (lr[k] if isinstance(lr, dict) else lr) * grads[k] for k in fast}, loss


def sgd_adapt(loss_fn: LossFn, params: Params, x: torch.Tensor, y: torch.Tensor, lr: float | Params,
              steps: int, first_order: bool = False, adapt: list[str] | None = None,
              grad_fn: GradFn | None = None) -> tuple[Params, torch.Tensor]:
    """`steps` SGD steps from `params`; returns (adapted params, support loss before adapting)."""
    fast, frozen = split(params, adapt)
    first_loss = None
    for _ in range(steps):
        fast, loss = sgd_step(loss_fn, fast, frozen, x, y, lr, first_order, grad_fn)
        first_loss = loss if first_loss is None else first_loss
    if first_loss is None:
        first_loss = loss_fn(params, x, y)
    return {**frozen, **fast}, first_loss


def adaptation_curve(loss_fn: LossFn, params: Params, support_x: torch.Tensor, support_y: torch.Tensor,
                     query_x: torch.Tensor, query_y: torch.Tensor, lr: float | Params, steps: int,
                     adapt: list[str] | None = None, grad_fn: GradFn | None = None) -> torch.Tensor:
    """Query loss after 0..steps SGD steps on the support set: [steps + 1] ([B, steps + 1] batched)."""
    fast, frozen = split(params, adapt)
    losses = [loss_fn(params, query_x, query_y)]
    for _ in range(steps):
        fast, _ = sgd_step(loss_fn, fast, frozen, support_x, support_y, lr, first_order=True, grad_fn=grad_fn)
        losses.append(loss_fn({**frozen, **fast}, query_x, query_y))
    return torch.stack(losses, dim=-1)
