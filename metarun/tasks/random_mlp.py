"""Targets from a randomly drawn small network per task, inputs in R^d."""

from __future__ import annotations

from dataclasses import dataclass

from metarun.config import Range, TaskConfig, option
from metarun.models import ACTIVATIONS
from metarun.tasks.base import TaskFamily, normal


@dataclass
class RandomMLPConfig(TaskConfig):
    dim: int = option(10, "input dimension d (x in R^d)", min=1)
    hidden: list[int] = option([20], "hidden widths of each task's random network")
    activation: str = option("relu", "hidden activation of the random network", choices=tuple(ACTIVATIONS))
    weight_gain: float = option(1.0, "weights ~ N(0, gain^2 / fan_in)", min=0.0)
    bias_std: float = option(0.1, "biases ~ N(0, bias_std^2)", min=0.0)
    x_range: Range = option([-2.0, 2.0], "each input component x_i ~ U[low, high]")


class RandomMLP(TaskFamily):
    """y = g(x) for a random network g: R^d -> R drawn per task (d = 10 by default)."""

    name = "random_mlp"
    Config = RandomMLPConfig

    def widths(self) -> list[int]:
        return [self.dx, *self.cfg.hidden, self.dy]

    def sample_params(self, n_tasks, gen):
        # weight<i> [B, out, in] and bias<i> [B, 1, out], like nn.Linear per task.
        params = {}
        for i, (fan_in, fan_out) in enumerate(zip(self.widths()[:-1], self.widths()[1:])):
            params[f"weight{i}"] = normal(0.0, self.cfg.weight_gain / fan_in**0.5, (n_tasks, fan_out, fan_in), gen)
            params[f"bias{i}"] = normal(0.0, self.cfg.bias_std, (n_tasks, 1, fan_out), gen)
        return params

    def function(self, params, x):  # x [B, N, d] -> [B, N, 1]
        act = ACTIVATIONS[self.cfg.activation]()
        layers = len(self.widths()) - 1
        h = x
        for i in range(layers):
            h = h @ params[f"weight{i}"].transpose(-1, -2) + params[f"bias{i}"]  # [B, N, width_i+1]
            if i < layers - 1:
                h = act(h)
        return h
