"""Networks: the MLP that gradient-based learners adapt.

Model-based learners (the CNP and friends) live next to their algorithm.

Speed: the inner loop of MAML runs the MLP over an explicit parameter dict
thousands of times per second, so it gets a hand-written forward
(`MLP.functional`, the same math as `nn.Linear`) and a hand-written
gradient of the squared error (`MLP.mse_and_grad`, plain backprop). Both
broadcast over a leading task dimension: parameters may be shared
(`[out, in]`) or per task (`[B, out, in]`), inputs `[K, dx]` or `[B, K, dx]`.
Because the gradient is ordinary tensor algebra, autograd can differentiate
through it (second-order MAML) without `create_graph`, and `torch.compile`
can trace it without functorch transforms.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}
Params = dict[str, torch.Tensor]


def task_mse(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each task: [K, dy] -> scalar, [B, K, dy] -> [B]."""
    return ((pred - y) ** 2).mean((-2, -1))


def _act(name: str, z: torch.Tensor) -> torch.Tensor:
    if name == "relu":
        return torch.relu(z)
    if name == "tanh":
        return torch.tanh(z)
    if name == "gelu":
        return F.gelu(z)
    return F.silu(z)


def _act_derivative(name: str, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """d act(z) / dz, given z and h = act(z)."""
    if name == "relu":
        return (z > 0).to(z.dtype)
    if name == "tanh":
        return 1 - h * h
    if name == "gelu":  # exact (erf) GELU: Phi(z) + z * phi(z)
        return 0.5 * (1 + torch.erf(z / math.sqrt(2))) + z * torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    s = torch.sigmoid(z)  # silu: s + z s (1 - s)
    return s * (1 + z * (1 - s))


class MLP(nn.Module):
    """dx -> hidden... -> dy. Parameter names are `layers.<i>.weight|bias`;
    the last layer is the head (what ANIL adapts)."""

    def __init__(self, dx: int, dy: int, hidden: list[int], activation: str = "relu", init: str = "torch"):
        super().__init__()
        widths = [dx, *hidden, dy]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        if init == "maml":
            # cbfinn/maml's fully connected nets: tf.truncated_normal(stddev=0.01) weights, zero biases.
            for layer in self.layers:
                nn.init.trunc_normal_(layer.weight, std=0.01, a=-0.02, b=0.02)
                nn.init.zeros_(layer.bias)
        self.activation = activation
        self.act = ACTIVATIONS[activation]()
        self.param_keys = [(f"layers.{i}.weight", f"layers.{i}.bias") for i in range(len(self.layers))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., dx] -> [..., dy]
        for layer in self.layers[:-1]:
            x = self.act(layer(x))
        return self.layers[-1](x)

    def head_keys(self) -> list[str]:
        return list(self.param_keys[-1])

    def functional(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """The forward pass with explicit weights: [(B,) K, dx] -> [(B,) K, dy]."""
        return self._forward_cached(params, x)[0][-1]

    def _forward_cached(self, params: Params, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(layer inputs h_0..h_L with h_L the output, pre-activations z_1..z_{L-1})."""
        hs, zs = [x], []
        last = len(self.param_keys) - 1
        for i, (w, b) in enumerate(self.param_keys):
            z = hs[-1] @ params[w].mT + params[b].unsqueeze(-2)  # [(B,) K, out]
            if i < last:
                zs.append(z)
                z = _act(self.activation, z)
            hs.append(z)
        return hs, zs

    def mse_and_grad(self, params: Params, x: torch.Tensor, y: torch.Tensor) -> tuple[Params, torch.Tensor]:
        """(gradient of each task's MSE w.r.t. every parameter, per-task MSE).

        Plain backprop written out, equal to `torch.autograd.grad` of
        `task_mse(functional(params, x), y)` (tests check it). Gradients are per
        task ([B, out, in]) when x is batched, even for shared parameters.
        """
        hs, zs = self._forward_cached(params, x)
        residual = hs[-1] - y  # [(B,) K, dy]
        loss = (residual**2).mean((-2, -1))
        delta = residual * (2.0 / (residual.shape[-2] * residual.shape[-1]))  # dL/d output
        grads: Params = {}
        for i in range(len(self.param_keys) - 1, -1, -1):
            w, b = self.param_keys[i]
            grads[w] = delta.mT @ hs[i]  # [(B,) out, in]
            grads[b] = delta.sum(-2)  # [(B,) out]
            if i > 0:
                delta = (delta @ params[w]) * _act_derivative(self.activation, zs[i - 1], hs[i])
        return grads, loss
