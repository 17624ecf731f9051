"""Harmonic tasks: the sum of two sinusoids at frequencies w and 2w, with
inputs drawn around a task-specific centre, so tasks also differ in where
they are observed."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from metarun.config import Range, TaskConfig, option
from metarun.tasks.base import TaskFamily, normal, uniform


@dataclass
class HarmonicConfig(TaskConfig):
    frequency: Range = option([5.0, 7.0], "base frequency w ~ U[low, high]", gt=0.0)
    amplitude_mean: float = option(0.0, "mean of each amplitude a_1, a_2 ~ N(mean, std^2)")
    amplitude_std: float = option(1.0, "std of each amplitude a_1, a_2 ~ N(mean, std^2)", min=0.0)
    phase: Range = option([0.0, 2 * math.pi], "each phase b_1, b_2 ~ U[low, high]")
    center: Range = option([-4.0, 4.0], "per-task input centre mu ~ U[low, high]")
    x_std: float = option(1.0, "inputs x ~ N(mu, x_std^2)", min=0.0)


class Harmonic(TaskFamily):
    """y = a_1 sin(w x + b_1) + a_2 sin(2 w x + b_2), x ~ N(mu, 1) around a per-task mu."""

    name = "harmonic"
    Config = HarmonicConfig

    def sample_params(self, n_tasks, gen):
        c = self.cfg
        return {
            "frequency": uniform(c.frequency, (n_tasks, 1, 1), gen),
            "amplitudes": normal(c.amplitude_mean, c.amplitude_std, (n_tasks, 1, 2), gen),  # [B, 1, 2]
            "phases": uniform(c.phase, (n_tasks, 1, 2), gen),  # [B, 1, 2]
            "center": uniform(c.center, (n_tasks, 1, 1), gen),
        }

    def sample_inputs(self, params, n_points, gen):  # [B, n_points, 1]
        noise = normal(0.0, self.cfg.x_std, (params["center"].shape[0], n_points, 1), gen)
        return params["center"] + noise

    def function(self, params, x):  # x [B, N, 1] -> [B, N, 1]
        multiples = torch.tensor([1.0, 2.0], device=x.device, dtype=x.dtype)  # w and 2w
        waves = torch.sin(multiples * params["frequency"] * x + params["phases"])  # [B, N, 2]
        return (params["amplitudes"] * waves).sum(-1, keepdim=True)
