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
can trace it without functorch transforms. `MLP.adapt_factored` goes one step
further for few-shot MAML: it never forms the per-task adapted weights.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}
Params = dict[str, torch.Tensor]
# SGD steps in factored form: for each layer, one (inputs H [B, K, in], output gradients D [B, K, out]) per step
Updates = list[list[tuple[torch.Tensor, torch.Tensor]]]


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

    def functional(self, params: Params, x: torch.Tensor, updates: Updates | None = None,
                   lr: float = 0.0) -> torch.Tensor:
        """The forward pass with explicit weights: [(B,) K, dx] -> [(B,) K, dy]; with
        `updates`, of the adapted weights they describe (see `adapt_factored`)."""
        return self._forward_cached(params, x, updates, lr)[0][-1]

    def _forward_cached(self, params: Params, x: torch.Tensor, updates: Updates | None = None,
                        lr: float = 0.0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(layer inputs h_0..h_L with h_L the output, pre-activations z_1..z_{L-1})."""
        hs, zs = [x], []
        last = len(self.param_keys) - 1
        for i, (w, b) in enumerate(self.param_keys):
            h = hs[-1]
            z = h @ params[w].mT + params[b].unsqueeze(-2)  # [(B,) K, out]
            for h_s, d_s in updates[i] if updates else ():
                # (W - lr D^T H) h + (b - lr sum_k D): the ones add each step's bias gradient
                z = z - lr * ((h @ h_s.mT + 1.0) @ d_s)
            if i < last:
                zs.append(z)
                z = _act(self.activation, z)
            hs.append(z)
        return hs, zs

    def _output_gradients(self, params: Params, hs: list[torch.Tensor], zs: list[torch.Tensor], y: torch.Tensor,
                          updates: Updates | None = None, lr: float = 0.0) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Backprop of each task's MSE: (dL/dz of every layer's output [(B,) K, out], per-task MSE)."""
        residual = hs[-1] - y  # [(B,) K, dy]
        loss = (residual**2).mean((-2, -1))
        delta = residual * (2.0 / (residual.shape[-2] * residual.shape[-1]))  # dL/d output
        deltas = [delta] * len(self.param_keys)
        for i in range(len(self.param_keys) - 1, 0, -1):
            deltas[i] = delta
            back = delta @ params[self.param_keys[i][0]]
            for h_s, d_s in updates[i] if updates else ():
                back = back - lr * ((delta @ d_s.mT) @ h_s)  # through W - lr D^T H
            delta = back * _act_derivative(self.activation, zs[i - 1], hs[i])
        deltas[0] = delta
        return deltas, loss

    def mse_and_grad(self, params: Params, x: torch.Tensor, y: torch.Tensor) -> tuple[Params, torch.Tensor]:
        """(gradient of each task's MSE w.r.t. every parameter, per-task MSE).

        Plain backprop written out, equal to `torch.autograd.grad` of
        `task_mse(functional(params, x), y)` (tests check it). Gradients are per
        task ([B, out, in]) when x is batched, even for shared parameters.
        """
        hs, zs = self._forward_cached(params, x)
        deltas, loss = self._output_gradients(params, hs, zs, y)
        grads: Params = {}
        for i, (w, b) in enumerate(self.param_keys):
            grads[w] = deltas[i].mT @ hs[i]  # [(B,) out, in]
            grads[b] = deltas[i].sum(-2)  # [(B,) out]
        return grads, loss

    def adapt_factored(self, params: Params, x: torch.Tensor, y: torch.Tensor, lr: float,
                       steps: int) -> tuple[Updates, torch.Tensor]:
        """`steps` SGD steps on each task's MSE, every weight moving, differentiable
        (second order), with the adapted weights kept factored: (updates, per-task
        MSE before adapting).

        A step's gradient of layer i is D^T H (D: the layer's output gradients,
        H: its inputs, both [B, K, .]), of rank K. Keeping (H, D) instead of
        forming W - lr D^T H per task ([B, out, in]) saves most of the work while
        steps * K is well below the layer widths, as in few-shot MAML (10 points,
        width 40). Same math as `sgd_adapt` with `mse_and_grad` (tests check it).
        """
        updates: Updates = [[] for _ in self.param_keys]
        first_loss = None
        for _ in range(steps):
            hs, zs = self._forward_cached(params, x, updates, lr)
            deltas, loss = self._output_gradients(params, hs, zs, y, updates, lr)
            for i in range(len(self.param_keys)):
                updates[i].append((hs[i], deltas[i]))
            first_loss = loss if first_loss is None else first_loss
        if first_loss is None:
            first_loss = task_mse(self.functional(params, x), y)
        return updates, first_loss
