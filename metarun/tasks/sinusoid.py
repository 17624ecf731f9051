"""Sinusoid regression (Finn et al., 2017): y = A sin(w x - phi)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from metarun.config import Range, TaskConfig, option
from metarun.tasks.base import TaskFamily, uniform


@dataclass
class SinusoidConfig(TaskConfig):
    amplitude: Range = option([0.1, 5.0], "amplitude A ~ U[low, high]", min=0.0)
    phase: Range = option([0.0, math.pi], "phase phi ~ U[low, high]")
    frequency: Range = option([1.0, 1.0], "frequency w ~ U[low, high] (Meta-SGD's variant: [0.8, 1.2])", gt=0.0)
    x_range: Range = option([-5.0, 5.0], "inputs x ~ U[low, high]")


class Sinusoid(TaskFamily):
    """y = A * sin(w * x - phi): the MAML paper's sinusoid regression."""

    name = "sinusoid"
    Config = SinusoidConfig

    def sample_params(self, n_tasks, gen):
        shape = (n_tasks, 1, 1)
        return {
            "amplitude": uniform(self.cfg.amplitude, shape, gen),
            "phase": uniform(self.cfg.phase, shape, gen),
            "frequency": uniform(self.cfg.frequency, shape, gen),
        }

    def function(self, params, x):  # x [B, N, 1] -> [B, N, 1]
        return params["amplitude"] * torch.sin(params["frequency"] * x - params["phase"])
