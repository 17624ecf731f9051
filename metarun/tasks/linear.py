"""Linear regression tasks: y = a . x + b, in any input dimension."""

from __future__ import annotations

from dataclasses import dataclass

from metarun.config import Range, TaskConfig, option
from metarun.tasks.base import TaskFamily, uniform


@dataclass
class LinearConfig(TaskConfig):
    slope: Range = option([-3.0, 3.0], "each slope component a_i ~ U[low, high]")
    intercept: Range = option([-3.0, 3.0], "intercept b ~ U[low, high]")
    x_range: Range = option([-5.0, 5.0], "each input component x_i ~ U[low, high]")
    dim: int = option(1, "input dimension d (x and a in R^d)", min=1)


class Linear(TaskFamily):
    """y = a . x + b with slope a and intercept b drawn per task."""

    name = "linear"
    Config = LinearConfig

    def sample_params(self, n_tasks, gen):
        return {
            "slope": uniform(self.cfg.slope, (n_tasks, 1, self.dx), gen),  # [B, 1, d]
            "intercept": uniform(self.cfg.intercept, (n_tasks, 1, 1), gen),  # [B, 1, 1]
        }

    def function(self, params, x):  # x [B, N, d] -> [B, N, 1]
        return (params["slope"] * x).sum(-1, keepdim=True) + params["intercept"]
