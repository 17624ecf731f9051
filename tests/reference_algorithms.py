"""Independent per-task references for the algorithm suite: plain Python loops
over tasks with `torch.autograd.grad` and explicit weight lists, in the style
of reference_maml.py. They share no code with metarun's algorithms (only the
MLP's parameter order), so agreement with them is evidence.

Weights are lists [W0, b0, W1, b1, ...]; `lrs` is one step size per weight
(a float or a tensor of the weight's shape: Meta-SGD); `adapt` says which
weights the inner loop moves (ANIL: only the last two).
"""

from __future__ import annotations

import torch
from reference_maml import forward
from torch import nn


def adapt_one_task(net: nn.Module, weights, lrs, adapt, x, y, steps: int, create_graph: bool):
    fast = list(weights)
    for _ in range(steps):
        loss = ((forward(net, fast, x) - y) ** 2).mean()
        moving = [i for i, a in enumerate(adapt) if a]
        grads = torch.autograd.grad(loss, [fast[i] for i in moving], create_graph=create_graph)
        for i, g in zip(moving, grads):
            fast[i] = fast[i] - lrs[i] * g
    return fast


def meta_loss(net: nn.Module, weights, lrs, adapt, batch, steps: int, first_order: bool) -> torch.Tensor:
    """Mean over tasks of the query MSE after `steps` inner steps, one task at a time.
    First order: inner gradients are constants (no graph), step sizes still multiply them."""
    total = 0.0
    sx, sy, qx, qy = batch.tensors()
    for t in range(sx.shape[0]):
        fast = adapt_one_task(net, weights, lrs, adapt, sx[t], sy[t], steps, create_graph=not first_order)
        total = total + ((forward(net, fast, qx[t]) - qy[t]) ** 2).mean()
    return total / sx.shape[0]


def adaptation_curve(net: nn.Module, weights, lrs, adapt, batch, steps: int) -> torch.Tensor:
    """[B, steps + 1] query MSE after 0..steps SGD steps on the support set, task by task."""
    sx, sy, qx, qy = batch.tensors()
    rows = []
    for t in range(sx.shape[0]):
        fast = [w.detach().requires_grad_() for w in weights]
        row = [((forward(net, fast, qx[t]) - qy[t]) ** 2).mean().item()]
        for _ in range(steps):
            fast = [w.detach().requires_grad_() for w in adapt_one_task(net, fast, lrs, adapt, sx[t], sy[t], 1, False)]
            row.append(((forward(net, fast, qx[t]) - qy[t]) ** 2).mean().item())
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


def reptile_update(net: nn.Module, weights, batch, inner_lr: float, steps: int, epsilon: float):
    """theta + epsilon * (mean over tasks of the adapted weights - theta), task by task."""
    sx, sy = batch.support_x, batch.support_y
    adapted = []
    for t in range(sx.shape[0]):
        start = [w.detach().clone().requires_grad_() for w in weights]
        fast = adapt_one_task(net, start, [inner_lr] * len(start), [True] * len(start), sx[t], sy[t], steps, False)
        adapted.append([w.detach() for w in fast])
    mean = [torch.stack([a[i] for a in adapted]).mean(0) for i in range(len(weights))]
    return [w.detach() + epsilon * (m - w.detach()) for w, m in zip(weights, mean)]
