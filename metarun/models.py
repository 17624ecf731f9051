"""Networks: the MLP that gradient-based learners adapt.

Model-based learners (the CNP and friends) live next to their algorithm.
"""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}


class MLP(nn.Module):
    """dx -> hidden... -> dy. Parameter names are `layers.<i>.weight|bias`;
    the last layer is the head (what ANIL adapts)."""

    def __init__(self, dx: int, dy: int, hidden: list[int], activation: str = "relu"):
        super().__init__()
        widths = [dx, *hidden, dy]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.act = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., dx] -> [..., dy]
        for layer in self.layers[:-1]:
            x = self.act(layer(x))
        return self.layers[-1](x)

    def head_keys(self) -> list[str]:
        last = len(self.layers) - 1
        return [f"layers.{last}.weight", f"layers.{last}.bias"]
