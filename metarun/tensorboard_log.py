"""Opt-in TensorBoard mirror of metrics.csv (`train.tensorboard: true`).

metrics.csv stays the record; TensorBoard events are a second view of the
same rows, written to RUN_DIR/tensorboard/ for `tensorboard --logdir runs`.
The package is an optional extra, so it is imported only when switched on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metarun.errors import UserError
from metarun.rundir import MetricsWriter, RunDir

LOGDIR = "tensorboard"


def require() -> None:
    """Fail before a run directory exists when the extra is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise UserError("train.tensorboard: true needs the tensorboard package "
                        "(pip install 'metarun[tensorboard]')") from None


class TensorBoardMirror:
    """A MetricsWriter that also writes each row's numbers as scalars at step `iteration`."""

    def __init__(self, metrics: MetricsWriter, logdir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.metrics = metrics
        self.writer = SummaryWriter(log_dir=str(logdir))

    def write(self, row: dict[str, Any]) -> None:
        self.metrics.write(row)
        step = int(row["iteration"])
        for key, value in row.items():
            if key != "iteration" and isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.metrics.close()
        self.writer.close()


def metrics_writer(run: RunDir, tensorboard: bool) -> MetricsWriter | TensorBoardMirror:
    metrics = MetricsWriter(run.metrics_path)
    return TensorBoardMirror(metrics, run.path / LOGDIR) if tensorboard else metrics
