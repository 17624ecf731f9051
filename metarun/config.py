"""Typed config schema, YAML loading, `--set` overrides and validation.

A config is a tree of dataclasses. Every field carries a one-line help text
and its valid range in `field(metadata=...)`, so validation, error messages
and `metarun show-config` all read from one place. Two sections are
polymorphic: `task` picks its dataclass from `task.family`, `algorithm` from
`algorithm.name`; each task family and algorithm registers its own.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from metarun.errors import UserError

Range = tuple[float, float]


def option(default: Any, help: str, *, min: float | None = None, gt: float | None = None,
           max: float | None = None, choices: tuple[str, ...] | None = None) -> Any:
    """A config field: its default, one-line help and its valid values."""
    meta = {"help": help, "min": min, "gt": gt, "max": max, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------- sections


@dataclass
class TaskConfig:
    """Fields every task family has; families subclass it with their own ranges."""

    family: str = option("sinusoid", "task family (see `metarun families`)")
    support_shots: int = option(10, "support points per task during training (K)", min=1)
    query_shots: int = option(10, "query points per task during training", min=1)
    noise_std: float = option(0.0, "std of Gaussian noise added to every target y", min=0.0)


@dataclass
class ModelConfig:
    hidden: list[int] = option([40, 40], "hidden layer widths of the MLP")
    activation: str = option("relu", "hidden activation", choices=("relu", "tanh", "gelu", "silu"))
    init: str = option("torch", "weight initialisation: torch (nn.Linear's default) or maml (weights from a normal"
                       " with std 0.01 truncated at 2 std, zero biases: the MAML reference code's)", choices=("torch", "maml"))


@dataclass
class AlgorithmConfig:
    """Fields every algorithm has; algorithms subclass it with their own."""

    name: str = option("maml", "meta-learning algorithm (see `metarun algorithms`)")
    inner_lr: float = option(0.01, "inner-loop SGD step size during training", gt=0.0)
    inner_steps: int = option(1, "inner-loop SGD steps on the support set during training", min=1)


@dataclass
class TrainConfig:
    iterations: int = option(70000, "meta-iterations (outer steps)", min=1)
    meta_batch_size: int = option(25, "tasks per meta-iteration", min=1)
    meta_lr: float = option(0.001, "Adam step size of the outer loop", gt=0.0)
    log_every: int = option(1, "write a metrics.csv row every N iterations", min=1)
    checkpoint_every: int = option(5000, "write checkpoints/iter-N.pt every N iterations", min=1)
    val_every: int = option(500, "score the validation tasks every N iterations (picks best.pt)", min=1)
    val_tasks: int = option(500, "size of the fixed validation task set", min=1)
    compile: bool | None = option(None, "torch.compile the meta-loss (null: only when iterations >= 10000; "
                                         "compiling costs 15-60 s once)")
    tensorboard: bool = option(False, "also write the metrics as TensorBoard events in RUN_DIR/tensorboard "
                                      "(needs the tensorboard extra)")


@dataclass
class EvalConfig:
    tasks: int = option(1000, "held-out tasks drawn by `metarun eval` (a 95% CI needs at least 2)", min=2)
    steps: int = option(10, "report the query MSE after 0..steps adaptation steps", min=0)
    inner_lr: float | None = option(None, "adaptation step size at evaluation (null: algorithm.inner_lr)", gt=0.0)
    shots: int | None = option(None, "support points at evaluation (null: task.support_shots)", min=1)
    query_shots: int = option(100, "query points per held-out task", min=1)
    seed: int = option(0, "seed of the held-out task stream (kept apart from training streams)", min=0)


@dataclass
class Config:
    name: str = option("run", "run name, used in the run directory name")
    seed: int = option(0, "seed for initialisation and the training task stream", min=0)
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    task: TaskConfig = field(default_factory=TaskConfig, metadata={"help": "task distribution"})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "network"})
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig, metadata={"help": "meta-learner"})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "outer loop"})
    eval: EvalConfig = field(default_factory=EvalConfig, metadata={"help": "held-out evaluation"})


# --------------------------------------------------------------------------- polymorphic sections


def _section_class(name: str, data: dict, default_cls: type) -> type:
    """The dataclass for a polymorphic section, chosen by its discriminator key."""
    if name == "task":
        from metarun.tasks import FAMILIES as registry
        key, label = "family", "task family"
    elif name == "algorithm":
        from metarun.algorithms import ALGORITHMS as registry
        key, label = "name", "algorithm"
    else:
        return default_cls
    chosen = data.get(key, getattr(default_cls(), key))
    if not isinstance(chosen, str) or chosen not in registry:
        raise UserError(f"{name}.{key}: unknown {label} {chosen!r}; choose from {', '.join(sorted(registry))}")
    return registry[chosen].Config


# --------------------------------------------------------------------------- validation


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check `value` against the annotation `tp`; return it in canonical form."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], path)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise UserError(f"{path}: must be a finite number, got {value!r}")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is tuple:  # a [low, high] range
        if isinstance(value, (list, tuple)) and len(value) == len(args):
            items = [_coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
            if len(items) == 2 and items[0] > items[1]:
                raise UserError(f"{path}: empty range {list(value)!r} (low must be <= high)")
            return items
        raise UserError(f"{path}: expected a [low, high] pair, got {value!r}")
    elif origin is list:
        if isinstance(value, (list, tuple)):
            return [_coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)]
        raise UserError(f"{path}: expected a list, got {value!r}")
    raise UserError(f"{path}: expected {_type_name(tp)}, got {value!r}")


def _check_range(value: Any, meta: dict, path: str) -> None:
    if value is None:
        return
    items = value if isinstance(value, list) else [value]
    for v in items:
        if meta.get("choices") and v not in meta["choices"]:
            raise UserError(f"{path}: {v!r} is not one of {', '.join(meta['choices'])}")
        if meta.get("min") is not None and v < meta["min"]:
            raise UserError(f"{path}: must be >= {meta['min']}, got {v!r}")
        if meta.get("gt") is not None and v <= meta["gt"]:
            raise UserError(f"{path}: must be > {meta['gt']}, got {v!r}")
        if meta.get("max") is not None and v > meta["max"]:
            raise UserError(f"{path}: must be <= {meta['max']}, got {v!r}")


def build(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass `cls` from a plain mapping, refusing anything off-schema."""
    where = path or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            full = f"{path}.{key}" if path else str(key)
            raise UserError(f"{full}: unknown key (valid here: {', '.join(known)})")
    kwargs = {}
    for name, f in known.items():
        full = f"{path}.{name}" if path else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            sub = data.get(name) or {}
            if not isinstance(sub, dict):
                raise UserError(f"{full}: expected a mapping of keys, got {sub!r}")
            kwargs[name] = build(_section_class(name, sub, tp), sub, full)
        elif name in data:
            value = _coerce(data[name], tp, full)
            _check_range(value, f.metadata, full)
            kwargs[name] = value
    return cls(**kwargs)


# --------------------------------------------------------------------------- loading


class ConfigLoader(yaml.SafeLoader):
    """`yaml.safe_load`, except that numbers such as 1e-3 are floats. PyYAML follows
    YAML 1.1, which wants a dot and a signed exponent (1.0e-3) and reads 1e-3 as a
    string; YAML 1.2 and every person typing a step size read it as a number."""


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 - a SafeLoader subclass


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise UserError(f"--set {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise UserError(f"--set {text!r}: expected section.key=value")
    try:
        value = parse_yaml(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Return a copy of the raw mapping with each `section.key=value` applied."""
    import copy

    data = copy.deepcopy(data)
    for text in overrides:
        parts, value = _parse_override(text)
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"--set {text!r}: {'.'.join(parts[: i + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def read_yaml(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        data = parse_yaml(path.read_text())
    except yaml.constructor.ConstructorError as exc:
        tag = re.search(r"'([^']+)'", exc.problem or "")
        raise UserError(f"{path}: refused YAML tag {tag.group(1) if tag else ''} (only plain YAML is read)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise UserError(f"{path}: not valid YAML{where}") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise UserError(f"{path}: cannot read config ({exc.__class__.__name__})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config must be a mapping of sections, got {type(data).__name__}")
    return data


def resolve(data: dict, overrides: list[str] = ()) -> Config:
    """Raw mapping + overrides -> validated Config (raises UserError)."""
    return build(Config, apply_overrides(data, list(overrides)))


def load(path: Path, overrides: list[str] = ()) -> Config:
    return resolve(read_yaml(path), overrides)


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def dump(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)


def describe(cls: type = Config, path: str = "") -> list[tuple[str, Any, str]]:
    """(key, default, help) for every field, for `metarun show-config`."""
    rows = []
    for f in dataclasses.fields(cls):
        full = f"{path}.{f.name}" if path else f.name
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(describe(tp, full))
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append((full, default, f.metadata.get("help", "")))
    return rows
