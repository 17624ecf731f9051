"""An independent MAML reference: a plain Python loop over tasks with
`torch.autograd.grad`, written the way the textbooks write it. It shares no
code with metarun's algorithms (only the MLP module, for its parameters), so
agreement with it is evidence, not tautology.
"""

from __future__ import annotations

import torch
from torch import nn


def forward(net: nn.Module, weights: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The MLP of metarun.models with explicit weights [W0, b0, W1, b1, ...]."""
    n_layers = len(weights) // 2
    for i in range(n_layers):
        x = x @ weights[2 * i].T + weights[2 * i + 1]
        if i < n_layers - 1:
            x = net.act(x)
    return x


def per_task_meta_loss(net: nn.Module, support_x, support_y, query_x, query_y, inner_lr: float,
                       inner_steps: int, first_order: bool, weights: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Mean over tasks of the post-adaptation query MSE, one task at a time."""
    weights = list(net.parameters()) if weights is None else weights
    total = 0.0
    for t in range(support_x.shape[0]):
        fast = list(weights)
        for _ in range(inner_steps):
            loss = ((forward(net, fast, support_x[t]) - support_y[t]) ** 2).mean()
            grads = torch.autograd.grad(loss, fast, create_graph=not first_order)
            fast = [w - inner_lr * g for w, g in zip(fast, grads)]
        total = total + ((forward(net, fast, query_x[t]) - query_y[t]) ** 2).mean()
    return total / support_x.shape[0]


def per_task_meta_gradient(net: nn.Module, batch, inner_lr: float, inner_steps: int,
                           first_order: bool) -> list[torch.Tensor]:
    loss = per_task_meta_loss(net, *batch.tensors(), inner_lr, inner_steps, first_order)
    return list(torch.autograd.grad(loss, list(net.parameters())))
