"""Meta-SGD (Li et al., 2017): MAML plus a learned step size per parameter element.

The meta-parameters are an initialisation and, for every weight, its own
inner-loop step size (initialised to `algorithm.inner_lr`). Both are trained
by the same outer step; checkpoints carry the step sizes and `eval` adapts
with them. In first-order mode the inner gradient g is taken at detached
weights (no second-order terms), but the step sizes still get a gradient
through the update `w - alpha * g`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from metarun.algorithms.inner import Params
from metarun.algorithms.maml import MAML, MAMLConfig
from metarun.config import Config, option


@dataclass
class MetaSGDConfig(MAMLConfig):
    name: str = option("metasgd", "meta-learning algorithm (see `metarun algorithms`)")
    inner_lr: float = option(0.01, "initial value of every learned per-parameter inner step size", gt=0.0)


def _slot(key: str) -> str:
    # Module attribute names cannot contain "."; "layers.0.weight" -> "layers__0__weight".
    return key.replace(".", "__")


class MetaSGD(MAML):
    name = "metasgd"
    Config = MetaSGDConfig

    def __init__(self, cfg: Config, dx: int, dy: int):
        super().__init__(cfg, dx, dy)
        self.step_sizes = nn.ParameterDict({
            _slot(k): nn.Parameter(torch.full_like(p, cfg.algorithm.inner_lr)) for k, p in self.net.named_parameters()})

    def inner_lr(self, override: float | None = None) -> float | Params:
        """The learned step sizes; `eval --inner-lr X` resets them all to X."""
        if override is not None:
            return override
        return {k: self.step_sizes[_slot(k)] for k, _ in self.net.named_parameters()}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        missing = [k for k in self.state_dict() if k.startswith("step_sizes.") and k not in state_dict]
        if strict and missing:
            # A RuntimeError: `load_algorithm` turns it into one line naming the checkpoint.
            raise RuntimeError(f"no Meta-SGD step sizes in it (missing {', '.join(missing)})")
        return super().load_state_dict(state_dict, strict, assign)
