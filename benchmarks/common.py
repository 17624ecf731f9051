"""Shared benchmark helpers: timing in alternating rounds, and tables."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(step: Callable[[int], object], seconds: float, device: torch.device, min_iters: int = 3) -> float:
    """Iterations per second of `step(i)` run for about `seconds` (synchronised on CUDA)."""
    sync(device)
    start = time.perf_counter()
    n = 0
    while n < min_iters or time.perf_counter() - start < seconds:
        step(n)
        n += 1
    sync(device)
    return n / (time.perf_counter() - start)


def interleaved(measures: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Every measure (a call that returns one rate) taken once per round, in
    alternating order (A B C, B C A, ...) so that the machine's drift hits all
    of them alike."""
    names = list(measures)
    rates: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            rates[n].append(measures[n]())
    return rates


def ratio_median(a: list[float], b: list[float]) -> float:
    """Median over rounds of a/b (round-paired, so drift cancels)."""
    return statistics.median(x / y for x, y in zip(a, b))


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])
