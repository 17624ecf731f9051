"""Synthetic regression task families and the batch type they produce.

A family draws a whole meta-batch at once, as tensors on the generator's
device, from an explicit `torch.Generator`: same seed, same tasks. The draw
order is fixed (task parameters, then support inputs, then query inputs, then
noise), so changing the number of shots changes the points but not the
functions. One module per family; this package is their registry.
"""

from __future__ import annotations

from dataclasses import fields

from metarun.config import TaskConfig
from metarun.tasks.base import TaskBatch, TaskFamily, make_generator, normal, stream_seed, tasks_in, uniform
from metarun.tasks.gp import GP
from metarun.tasks.harmonic import Harmonic
from metarun.tasks.linear import Linear
from metarun.tasks.polynomial import Polynomial
from metarun.tasks.random_mlp import RandomMLP
from metarun.tasks.sinusoid import Sinusoid
from metarun.tasks.sinusoid_line import SinusoidLine

FAMILIES: dict[str, type[TaskFamily]] = {
    cls.name: cls for cls in (Sinusoid, Linear, Polynomial, Harmonic, SinusoidLine, GP, RandomMLP)
}


def make_family(cfg: TaskConfig) -> TaskFamily:
    return FAMILIES[cfg.family](cfg)


def family_fields(family: str) -> list[str]:
    return [f.name for f in fields(FAMILIES[family].Config)]


__all__ = ["FAMILIES", "TaskBatch", "TaskFamily", "family_fields", "make_family", "make_generator", "normal",
           "stream_seed", "tasks_in", "uniform"]
