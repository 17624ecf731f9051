"""A mixture of sinusoid and line tasks: each task is one or the other."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from metarun.config import Range, TaskConfig, option
from metarun.tasks.base import TaskFamily
from metarun.tasks.linear import Linear, LinearConfig
from metarun.tasks.sinusoid import Sinusoid, SinusoidConfig


@dataclass
class SinusoidLineConfig(TaskConfig):
    line_probability: float = option(0.5, "probability that a task is a line (else a sinusoid)", min=0.0, max=1.0)
    amplitude: Range = option([0.1, 5.0], "sinusoid amplitude A ~ U[low, high]", min=0.0)
    phase: Range = option([0.0, math.pi], "sinusoid phase phi ~ U[low, high]")
    frequency: Range = option([1.0, 1.0], "sinusoid frequency w ~ U[low, high]", gt=0.0)
    slope: Range = option([-3.0, 3.0], "line slope a ~ U[low, high]")
    intercept: Range = option([-3.0, 3.0], "line intercept b ~ U[low, high]")
    x_range: Range = option([-5.0, 5.0], "inputs x ~ U[low, high]")


class SinusoidLine(TaskFamily):
    """Each task is a line a x + b (probability p) or a sinusoid A sin(w x - phi)."""

    name = "sinusoid_line"
    Config = SinusoidLineConfig

    def __init__(self, cfg: SinusoidLineConfig):
        super().__init__(cfg)
        # The two components are the ordinary families, so their formulas live in one place.
        common = {"support_shots": cfg.support_shots, "query_shots": cfg.query_shots, "x_range": cfg.x_range}
        self.sinusoid = Sinusoid(SinusoidConfig(family="sinusoid", amplitude=cfg.amplitude, phase=cfg.phase,
                                                frequency=cfg.frequency, **common))
        self.line = Linear(LinearConfig(family="linear", slope=cfg.slope, intercept=cfg.intercept, **common))

    def sample_params(self, n_tasks, gen):
        # "is_line" records which kind each task is: 1.0 for a line, 0.0 for a sinusoid. [B, 1, 1]
        is_line = (torch.rand((n_tasks, 1, 1), generator=gen, device=gen.device) < self.cfg.line_probability).float()
        return {"is_line": is_line, **self.sinusoid.sample_params(n_tasks, gen), **self.line.sample_params(n_tasks, gen)}

    def function(self, params, x):  # x [B, N, 1] -> [B, N, 1]
        return torch.where(params["is_line"].bool(), self.line.function(params, x), self.sinusoid.function(params, x))
