"""ANIL (Raghu et al., 2020): MAML where the inner loop adapts only the last layer.

The body (every layer but the last) is meta-learned in the outer step only;
the head is adapted per task and its initialisation is meta-learned too.
"""

from __future__ import annotations

from dataclasses import dataclass

from metarun.algorithms.maml import MAML, MAMLConfig
from metarun.config import option


@dataclass
class ANILConfig(MAMLConfig):
    name: str = option("anil", "meta-learning algorithm (see `metarun algorithms`)")


class ANIL(MAML):
    name = "anil"
    Config = ANILConfig

    def adapt_keys(self) -> list[str]:
        return self.net.head_keys()
