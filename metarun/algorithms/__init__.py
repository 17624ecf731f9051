"""The algorithm registry: one name -> one class (with its config dataclass)."""

from __future__ import annotations

from metarun.algorithms.base import Algorithm
from metarun.algorithms.maml import FOMAML, MAML
from metarun.config import Config

ALGORITHMS: dict[str, type[Algorithm]] = {cls.name: cls for cls in (MAML, FOMAML)}


def make_algorithm(cfg: Config, dx: int, dy: int) -> Algorithm:
    return ALGORITHMS[cfg.algorithm.name](cfg, dx, dy)
