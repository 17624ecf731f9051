"""The `metarun` command line (Typer).

Exit codes: 0 success (also: resuming a run that is already complete),
1 training failed (diverged, or a write failed; the last good checkpoint is
kept), 2 bad input (one line on stderr, nothing written), 130 interrupted by
SIGINT (Ctrl-C), 143 by SIGTERM; both save a checkpoint (`metarun resume`).
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from metarun import config as config_mod
from metarun import distributed
from metarun.errors import UserError

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=True,
                  help="Meta-learning experiments on few-shot regression, from a YAML config.")

SetOption = Annotated[Optional[list[str]], typer.Option(
    "--set", help="Override a config field: section.key=value (repeatable).", show_default=False)]


def fail(message: str, code: int) -> None:
    # One plain line (no rich wrapping) so shell scripts can grep it.
    print(f"metarun: error: {message}", file=sys.stderr)
    raise typer.Exit(code)


@contextmanager
def user_errors():
    from metarun.train import Interrupted, RunFailed

    try:
        yield
    except UserError as exc:
        fail(str(exc), 2)
    except RunFailed as exc:
        fail(str(exc), 1)
    except Interrupted as exc:
        print(f"metarun: {exc}; continue with `metarun resume RUN_DIR`", file=sys.stderr)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:  # before training started, or outside the main thread
        print("metarun: interrupted", file=sys.stderr)
        raise typer.Exit(130) from None


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="YAML config file.", show_default=False)],
    overrides: SetOption = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed (overrides the config's).")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda or cuda:N (overrides the config's).")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where run directories are created.")] = Path("runs"),
    name: Annotated[Optional[str], typer.Option(help="Run name (overrides the config's).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Meta-train from CONFIG; prints the run directory on the last line."""
    from metarun.train import train as run_training

    with user_errors():
        extra = [f"seed={seed}"] if seed is not None else []
        extra += [f"device={device}"] if device is not None else []
        extra += [f"name={name}"] if name is not None else []
        cfg = config_mod.load(config, [*(overrides or []), *extra])
        run = run_training(cfg, runs_dir, quiet=quiet)
    if distributed.is_main():  # under torchrun, rank 0 alone owns (and prints) the run directory
        print(run.path)


@app.command()
def resume(
    run_dir: Annotated[Path, typer.Argument(help="A run directory made by `metarun train`.", show_default=False)],
    overrides: SetOption = None,
    allow_config_change: Annotated[bool, typer.Option(
        "--allow-config-change", help="Accept --set changes to the run's config (the result is no longer "
        "the uninterrupted run's).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Continue a stopped run from its last checkpoint, exactly as if never stopped."""
    from metarun.train import resume as resume_training

    with user_errors():
        run, nothing_to_do = resume_training(run_dir, list(overrides or []), allow_config_change, quiet=quiet)
    if distributed.is_main():  # under torchrun, rank 0 alone reports
        if nothing_to_do:
            print(f"metarun: {nothing_to_do}", file=sys.stderr)
        print(run.path)


@app.command("eval")
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory made by `metarun train`.", show_default=False)],
    checkpoint: Annotated[str, typer.Option(help="best, last, iter-N or a path to a .pt file.")] = "best",
    shots: Annotated[Optional[int], typer.Option(help="Support points per task (default: the config's).")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Report after 0..STEPS adaptation steps (default 10).")] = None,
    tasks: Annotated[Optional[int], typer.Option(help="Number of held-out tasks (default 1000).")] = None,
    inner_lr: Annotated[Optional[float], typer.Option(help="Adaptation step size (default: training's).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the held-out task stream (default 0).")] = None,
    overrides: SetOption = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON only.")] = False,
) -> None:
    """Evaluate a run on held-out tasks: query MSE after 0..S steps, mean ± 95% CI."""
    from metarun import evaluate as ev

    flags = {"shots": shots, "steps": steps, "tasks": tasks, "inner_lr": inner_lr, "seed": seed}
    sets = [f"eval.{k}={v}" for k, v in flags.items() if v is not None] + list(overrides or [])
    with user_errors():
        result = ev.evaluate(run_dir, checkpoint, sets, device)
        rendered = ev.render(result)
        path = ev.save(run_dir, result, rendered)
    if as_json:
        print(json.dumps({**result, "saved": str(path)}, indent=2))
    else:
        print(rendered, end="")
        print(f"saved {path}")


@app.command("show-config")
def show_config(
    config: Annotated[Optional[Path], typer.Argument(help="YAML config (default: the built-in defaults).")] = None,
    overrides: SetOption = None,
) -> None:
    """Print the fully resolved config (defaults and overrides applied)."""
    with user_errors():
        cfg = config_mod.load(config, overrides or []) if config else config_mod.resolve({}, overrides or [])
    print(config_mod.dump(cfg), end="")


@app.command("algorithms")
def list_algorithms() -> None:
    """List the algorithms and their docstrings."""
    from metarun.algorithms import ALGORITHMS

    for name, cls in sorted(ALGORITHMS.items()):
        doc = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]
        print(f"{name:10s} {doc}")


@app.command("families")
def list_families() -> None:
    """List the task families."""
    from metarun.tasks import FAMILIES

    for name, cls in sorted(FAMILIES.items()):
        print(f"{name:14s} {(cls.__doc__ or '').strip().splitlines()[0]}")


def main() -> None:
    app(prog_name="metarun")


if __name__ == "__main__":
    main()
