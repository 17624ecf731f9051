"""Run `metarun` (exactly what `python -m metarun` runs) under torchrun, and
record what this rank did at every meta-step, for tests/test_distributed.py.

    torchrun ... tests/distributed_worker.py OUT_DIR train CONFIG ...

Writes OUT_DIR/rank<R>.pt: {"params": [flat parameters after each step],
"support_x": [this rank's tasks at each step], "world_size": N}.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import torch

from metarun import cli, distributed
from metarun.algorithms import ALGORITHMS
from metarun.algorithms.base import Algorithm


@contextmanager
def recording_steps():
    """Within the block, every algorithm's `meta_step` appends to the yielded record."""
    record = {"params": [], "support_x": [], "world_size": None}
    # Algorithm.meta_step and every override of it (Reptile's).
    owners = {cls for cls in (Algorithm, *ALGORITHMS.values()) if "meta_step" in vars(cls)}
    originals = {cls: vars(cls)["meta_step"] for cls in owners}

    def recording(meta_step):
        def recording_meta_step(self, batch, optimizer, iteration):
            stats = meta_step(self, batch, optimizer, iteration)
            record["params"].append(torch.cat([p.detach().reshape(-1) for p in self.parameters()]).cpu().clone())
            record["support_x"].append(batch.support_x.cpu().clone())  # [B/N, K, dx]
            record["world_size"] = distributed.world_size()
            return stats
        return recording_meta_step

    for cls, meta_step in originals.items():
        cls.meta_step = recording(meta_step)
    try:
        yield record
    finally:
        for cls, meta_step in originals.items():
            cls.meta_step = meta_step


def main() -> None:
    out = Path(sys.argv[1])
    sys.argv = ["metarun", *sys.argv[2:]]
    with recording_steps() as record:
        try:
            cli.main()
        finally:
            torch.save(record, out / f"rank{os.environ['RANK']}.pt")


if __name__ == "__main__":
    main()
