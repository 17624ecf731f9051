"""The run directory: layout, atomic writes, the metrics writer, checkpoints.

    runs/<date>-<time>_<name>_<short-id>/
      config.yaml    the fully resolved config
      run.json       status, seed, device, versions, times
      metrics.csv    one row per logged iteration
      checkpoints/   last.pt, best.pt, iter-<N>.pt
      eval/          one JSON (and the printed table) per evaluation

Every file that is rewritten goes through a temporary file, fsync and
`os.replace`, so a kill at any instant leaves the previous version readable.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import platform
import re
import secrets
import shutil
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import metarun
from metarun.errors import UserError

METRIC_COLUMNS = ["iteration", "support_loss", "query_loss_pre", "query_loss", "val_query_loss",
                  "meta_lr", "seconds", "tasks_per_s"]


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def atomic_write(path: Path, write: Any) -> None:
    """Write `path` via a temp file in the same folder; `write(fileobj)` fills it."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)

    # -- layout -----------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def info_path(self) -> Path:
        return self.path / "run.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    # -- creating and opening -----------------------------------------------------------

    @classmethod
    def create(cls, runs_dir: Path, name: str, config_yaml: str, info: dict) -> RunDir:
        """Make a fresh run directory; its files appear complete or not at all."""
        runs_dir = Path(runs_dir)
        try:
            runs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{runs_dir}: cannot create runs directory ({exc.strerror})") from None
        if not os.access(runs_dir, os.W_OK):
            raise UserError(f"{runs_dir}: runs directory is not writable")
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        # Build the directory under a hidden name and rename it into place, so
        # a crash mid-creation never leaves a half-made run for `runs` to list.
        # Two runs started in the same second differ by their random suffix; if even
        # that collides (checked, and enforced by `rename` refusing a non-empty target),
        # draw again.
        for _ in range(100):
            final = runs_dir / f"{stamp}_{safe}_{secrets.token_hex(3)}"
            if final.exists():
                continue
            staging = runs_dir / f".{final.name}.{secrets.token_hex(4)}.creating"
            try:
                staging.mkdir()
                (staging / "checkpoints").mkdir()
                (staging / "eval").mkdir()
                (staging / "config.yaml").write_text(config_yaml)
                write_json(staging / "run.json", info)
                os.rename(staging, final)
                return cls(final)
            except OSError as exc:
                shutil.rmtree(staging, ignore_errors=True)
                if not final.exists():
                    raise UserError(f"{runs_dir}: cannot write run directory ({exc.strerror})") from None
        raise UserError(f"{runs_dir}: could not find a free run directory name")

    @classmethod
    def open(cls, path: Path) -> RunDir:
        run = cls(Path(path))
        if not run.path.is_dir():
            raise UserError(f"{path}: no such run directory")
        if not run.config_path.is_file() or not run.info_path.is_file():
            raise UserError(f"{path}: not a metarun run directory (no config.yaml and run.json)")
        return run

    def write_config(self, config_yaml: str) -> None:
        atomic_write(self.config_path, lambda f: f.write(config_yaml.encode()))

    # -- run.json -----------------------------------------------------------------------

    def info(self) -> dict:
        try:
            return json.loads(self.info_path.read_text())
        except (OSError, ValueError):
            raise UserError(f"{self.info_path}: unreadable run.json") from None

    def update_info(self, **fields: Any) -> None:
        info = self.info()
        info.update(fields)
        write_json(self.info_path, info)

    # -- checkpoints --------------------------------------------------------------------

    def checkpoint_path(self, which: str) -> Path:
        """`best`, `last`, `iter-N` or a path to a .pt file."""
        if which in ("best", "last") or which.startswith("iter-"):
            return self.checkpoints / f"{which}.pt"
        return Path(which)

    def periodic_checkpoints(self) -> list[Path]:
        """checkpoints/iter-N.pt, newest (largest N) first."""
        found = [(int(m.group(1)), p) for p in self.checkpoints.glob("iter-*.pt")
                 if (m := re.fullmatch(r"iter-(\d+)\.pt", p.name))]
        return [p for _, p in sorted(found, reverse=True)]

    def save_checkpoint(self, which: str, state: dict) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write(self.checkpoint_path(which), lambda f: f.write(buffer.getbuffer()))

    def load_checkpoint(self, which: str, map_location: Any = "cpu") -> dict:
        return load_checkpoint(self.checkpoint_path(which), map_location)


class UnreadableCheckpoint(UserError):
    """A checkpoint file that is truncated, corrupted or not a checkpoint at all
    (as opposed to one carrying pickled objects, which is refused outright)."""


def load_checkpoint(path: Path, map_location: Any = "cpu") -> dict:
    """Load a checkpoint as plain tensors only: a pickled object is refused,
    and never executed (weights_only=True unpickles no globals)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only names a refused class or function "Unsupported global"; every other
        # unpickling failure (including garbage bytes read as opcodes) is damage, not tampering.
        if "Unsupported global" in str(exc):
            raise UserError(f"{path}: checkpoint contains pickled objects other than tensors (refused, not loaded)") from None
        raise UnreadableCheckpoint(f"{path}: checkpoint truncated or corrupted") from None
    except Exception:  # torch raises many types for truncated or corrupt files
        raise UnreadableCheckpoint(f"{path}: checkpoint truncated or corrupted") from None
    if not isinstance(state, dict) or "model" not in state:
        raise UnreadableCheckpoint(f"{path}: not a metarun checkpoint")
    return state


def run_info(cfg_seed: int, device: torch.device, name: str) -> dict:
    return {
        "status": "running",
        "name": name,
        "seed": cfg_seed,
        "device": str(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "metarun": metarun.__version__,
        "git_commit": _git_commit(),
        "host": platform.node(),
        "pid": os.getpid(),
        "started": now_iso(),
        "ended": None,
        "iteration": 0,
    }


class MetricsWriter:
    """Appends one CSV row per logged iteration. Each row goes out in one
    `write` and is flushed, so a kill leaves at most one partial last line;
    opening the file drops such a line, and `read_metrics` ignores it."""

    def __init__(self, path: Path):
        drop_partial_line(path)
        new = not path.exists() or path.stat().st_size == 0
        self.file = open(path, "a", newline="")
        if new:
            self.file.write(",".join(METRIC_COLUMNS) + "\n")
            self.file.flush()

    def write(self, row: dict[str, Any]) -> None:
        line = io.StringIO()
        csv.writer(line, lineterminator="\n").writerow([_fmt(row.get(c)) for c in METRIC_COLUMNS])
        self.file.write(line.getvalue())
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def drop_partial_line(path: Path) -> None:
    """Cut a file back to its last newline (a row half-written by a kill)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        f.truncate(f.read().rfind(b"\n") + 1)


def truncate_metrics(path: Path, iteration: int) -> None:
    """Keep the header and the complete rows up to `iteration` (atomically): on
    resume the rows after the checkpoint are recomputed, never duplicated."""
    if not path.exists():
        return
    lines = path.read_bytes().split(b"\n")  # lines[-1] is b"" or a partial last line
    header = lines[0] if len(lines) > 1 else ",".join(METRIC_COLUMNS).encode()
    rows = lines[1:-1]
    kept = [r for r in rows if r and _row_iteration(r) is not None and _row_iteration(r) <= iteration]
    atomic_write(path, lambda f: f.write(b"\n".join([header, *kept]) + b"\n"))


def _row_iteration(row: bytes) -> int | None:
    try:
        return int(row.split(b",", 1)[0])
    except ValueError:
        return None


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.8g}"
    return str(value)


def read_metrics(path: Path) -> list[dict[str, str]]:
    """The complete rows of metrics.csv (a partial last line, from a run killed
    mid-write or still being written, is left out)."""
    text = Path(path).read_text()
    complete = text[: text.rfind("\n") + 1]
    return list(csv.DictReader(io.StringIO(complete, newline="")))


def seconds_since(start: float) -> float:
    return time.perf_counter() - start
