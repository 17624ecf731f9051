"""`torch.compile` of an algorithm's meta-loss, where it pays, with a fallback.

On this problem the meta-step is hundreds of tiny kernels, so eager time is
framework overhead; compiling the meta-loss (forward and backward, via
AOTAutograd) removes much of it (docs/speed.md: about 1.5x on the MAML
sinusoid config on CPU) but costs 15-60 s once. `train.compile: null` (auto)
therefore compiles only runs long enough to earn that back.
"""

from __future__ import annotations

import sys
import time

import torch

from metarun.algorithms import Algorithm
from metarun.config import Config
from metarun.tasks import TaskFamily, make_generator

AUTO_MIN_ITERATIONS = 10_000  # compile time / per-iteration saving, measured in docs/speed.md, rounded up


def wants_compile(cfg: Config) -> bool:
    setting = cfg.train.compile
    return cfg.train.iterations >= AUTO_MIN_ITERATIONS if setting is None else setting


# Inductor's options, best first. A C++ wrapper calls the generated kernels from C++
# instead of a Python function: ~10% less time per MAML meta-step on CPU here (the
# step is dozens of tiny kernels), same kernels, bit-identical results
# (benchmarks/peers.py, docs/speed.md). Its first compile is slower (~12 s cold; the
# on-disk cache makes later ones quick); where it fails, the plain Python wrapper is
# tried, then eager.
COMPILE_OPTIONS = ({"cpp_wrapper": True}, {})


def maybe_compile(algo: Algorithm, family: TaskFamily, cfg: Config, device: torch.device) -> float | None:
    """Replace the algorithm's `compiled_method` (its meta-loss, or the part of
    it that is pure tensor work) by its compiled version if the config asks for it.

    The compiled loss is tried once, forward and backward, on a warm-up batch
    from its own random stream (so training draws the same tasks either way);
    if compiling fails with every option set, training goes on in eager mode
    with a warning. Returns the compile seconds, or None when not compiled.
    """
    name = algo.compiled_method
    if name is None or not wants_compile(cfg):
        return None
    batch = family.sample(cfg.train.meta_batch_size, make_generator(cfg.seed, "compile-warmup", device))
    eager = getattr(algo, name)
    start = time.perf_counter()
    for options in COMPILE_OPTIONS:
        setattr(algo, name, torch.compile(eager, options=options))
        rng = torch.get_rng_state()  # a meta-loss may draw from it (the CNP's context size): leave training's draws as they were
        try:
            loss, _ = algo.meta_loss(batch)
            loss.backward()
            return time.perf_counter() - start
        except Exception as exc:  # an unsupported op or a missing compiler: try the next option set, then eager
            failure = exc
        finally:
            algo.zero_grad(set_to_none=True)
            torch.set_rng_state(rng)
    delattr(algo, name)  # back to the class's eager method
    first = (str(failure).strip().splitlines() or [""])[0]
    print(f"metarun: warning: torch.compile failed ({type(failure).__name__}: {first}); training in eager mode",
          file=sys.stderr)
    return None
