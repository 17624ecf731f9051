"""The algorithm registry: one name -> one class (with its config dataclass)."""

from __future__ import annotations

from metarun.algorithms.anil import ANIL
from metarun.algorithms.base import Algorithm
from metarun.algorithms.cnp import CNP
from metarun.algorithms.maml import FOMAML, MAML
from metarun.algorithms.metasgd import MetaSGD
from metarun.algorithms.pretrain import Pretrain
from metarun.algorithms.reptile import Reptile
from metarun.algorithms.scratch import Scratch
from metarun.config import Config

ALGORITHMS: dict[str, type[Algorithm]] = {cls.name: cls for cls in (MAML, FOMAML, MetaSGD, ANIL, Reptile, CNP, Pretrain, Scratch)}


def make_algorithm(cfg: Config, dx: int, dy: int) -> Algorithm:
    return ALGORITHMS[cfg.algorithm.name](cfg, dx, dy)
