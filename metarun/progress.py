"""The training progress bar (rich). Off when output is not a terminal or
with --quiet, so logs from shell scripts stay clean."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class TrainProgress:
    def __init__(self, total: int, label: str, disable: bool = False):
        console = Console(stderr=True)
        self.enabled = not disable and console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[losses]}"), TextColumn("{task.fields[speed]}"), TimeRemainingColumn(),
            console=console, disable=not self.enabled, refresh_per_second=4)
        self.task = self.progress.add_task(label, total=total, losses="", speed="")
        self.last_val: float | None = None

    def __enter__(self) -> TrainProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def update(self, iteration: int, values: dict[str, float], val: float | None, tasks_per_s: float) -> None:
        if not self.enabled:
            return
        self.last_val = val if val is not None else self.last_val
        losses = (f"support {values.get('support_loss', float('nan')):.3f}  "
                  f"query {values.get('query_loss_pre', float('nan')):.3f}->{values.get('query_loss', float('nan')):.3f}")
        if self.last_val is not None:
            losses += f"  val {self.last_val:.3f}"
        self.progress.update(self.task, completed=iteration, losses=losses, speed=f"{tasks_per_s:,.0f} tasks/s")
