"""Polynomial regression tasks: y = sum_k c_k x^k up to a fixed degree."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metarun.config import Range, TaskConfig, option
from metarun.tasks.base import TaskFamily, uniform


@dataclass
class PolynomialConfig(TaskConfig):
    degree: int = option(3, "degree D of the polynomial (D + 1 coefficients)", min=0, max=20)
    coefficient: Range = option([-1.0, 1.0], "each coefficient c_0..c_D ~ U[low, high]")
    x_range: Range = option([-2.0, 2.0], "inputs x ~ U[low, high]")


class Polynomial(TaskFamily):
    """y = c_0 + c_1 x + ... + c_D x^D with coefficients drawn per task."""

    name = "polynomial"
    Config = PolynomialConfig

    def sample_params(self, n_tasks, gen):
        return {"coefficients": uniform(self.cfg.coefficient, (n_tasks, 1, self.cfg.degree + 1), gen)}  # [B, 1, D+1]

    def function(self, params, x):  # x [B, N, 1] -> [B, N, 1]
        powers = x ** torch.arange(self.cfg.degree + 1, device=x.device, dtype=x.dtype)  # [B, N, D+1]
        return (params["coefficients"] * powers).sum(-1, keepdim=True)
