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


def print_run_path(path: Path | None) -> None:
    """A run that stopped still ends stdout with its directory, as `train` does,
    so a script's `RUN=$(metarun train ... | tail -n1)` can resume or inspect it."""
    if path is not None:
        print(path)


@contextmanager
def user_errors():
    from metarun.train import Interrupted, RunFailed

    try:
        yield
    except UserError as exc:
        fail(str(exc), 2)
    except RunFailed as exc:
        print(f"metarun: error: {exc}", file=sys.stderr)
        print_run_path(exc.run_path)
        raise typer.Exit(1) from None
    except Interrupted as exc:
        print(f"metarun: {exc}; continue with `metarun resume {exc.run_path or 'RUN_DIR'}`", file=sys.stderr)
        print_run_path(exc.run_path)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:  # before training started, or outside the main thread
        print("metarun: interrupted", file=sys.stderr)
        raise typer.Exit(130) from None


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="YAML config file.", show_default=False)],
    overrides: SetOption = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed (overrides the config's).")] = None,
    seeds: Annotated[Optional[str], typer.Option(
        help="One run per seed, e.g. 0,1,2 (each an ordinary run; prints one run directory a line).",
        show_default=False)] = None,
    jobs: Annotated[int, typer.Option(help="With --seeds: runs at once (processes).")] = 1,
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
        if seeds is not None:
            if seed is not None:
                raise UserError("--seed and --seeds: give one or the other")
            results = _sweep(config, [*(overrides or []), *extra], [f"seed={seeds}"], runs_dir, jobs, quiet, "--seeds")
            for r in results:
                if r["run"]:
                    print(r["run"])
            if any(r["exit_code"] for r in results):
                raise typer.Exit(1)
            return
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


def _sweep(config: Path, overrides: list[str], grid: list[str], runs_dir: Path, jobs: int, quiet: bool,
           option: str) -> list[dict]:
    from metarun import sweep as sweep_mod

    report = None if quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    return sweep_mod.run_sweep(config, overrides, sweep_mod.parse_grid(grid, option), runs_dir, jobs, report)


def _eval_sets(overrides: Optional[list[str]], **flags) -> list[str]:
    """The eval flags shared by eval, compare and plot, as eval.* overrides."""
    return [f"eval.{k}={v}" for k, v in flags.items() if v is not None] + list(overrides or [])


Shots = Annotated[Optional[int], typer.Option(help="Support points per task (default: the config's).")]
Steps = Annotated[Optional[int], typer.Option(help="Report after 0..STEPS adaptation steps (default 10).")]
Tasks = Annotated[Optional[int], typer.Option(help="Number of held-out tasks (default 1000).")]
InnerLr = Annotated[Optional[float], typer.Option(help="Adaptation step size (default: training's).")]
EvalSeed = Annotated[Optional[int], typer.Option(help="Seed of the held-out task stream (default 0).")]
Checkpoint = Annotated[str, typer.Option(help="best, last, iter-N or a path to a .pt file.")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")]
RunDirs = Annotated[list[Path], typer.Argument(help="Run directories made by `metarun train`.", show_default=False)]


@app.command("eval")
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory made by `metarun train`.", show_default=False)],
    checkpoint: Checkpoint = "best",
    shots: Shots = None,
    steps: Steps = None,
    tasks: Tasks = None,
    inner_lr: InnerLr = None,
    seed: EvalSeed = None,
    overrides: SetOption = None,
    device: Device = "auto",
    as_json: Json = False,
    plot: Annotated[bool, typer.Option("--plot", help="Also write the figure of `metarun plot` next to the JSON.")] = False,
) -> None:
    """Evaluate a run on held-out tasks: query MSE after 0..S steps, mean ± 95% CI."""
    from metarun import evaluate as ev

    sets = _eval_sets(overrides, shots=shots, steps=steps, tasks=tasks, inner_lr=inner_lr, seed=seed)
    with user_errors():
        result = ev.evaluate(run_dir, checkpoint, sets, device)
        rendered = ev.render(result)
        path = ev.save(run_dir, result, rendered)
        figure = None
        if plot:
            from metarun.plot import plot_runs

            figure = plot_runs([run_dir], path.with_suffix(".png"), checkpoint, sets, device)
    if as_json:
        print(json.dumps({**result, "saved": str(path), **({"figure": str(figure)} if figure else {})}, indent=2))
    else:
        print(rendered, end="")
        print(f"saved {path}" + (f" and {figure}" if figure else ""))


@app.command("runs")
def runs(
    runs_dir: Annotated[Path, typer.Argument(help="Folder holding run directories.")] = Path("runs"),
    algorithm: Annotated[Optional[str], typer.Option(help="Only runs of this algorithm.")] = None,
    status: Annotated[Optional[str], typer.Option(help="Only runs with this status (running, completed, failed, "
                                                       "interrupted).")] = None,
    family: Annotated[Optional[str], typer.Option(help="Only runs on this task family.")] = None,
    as_json: Json = False,
) -> None:
    """A table of runs, newest first: status, progress, losses, latest eval."""
    from metarun import runs_table

    with user_errors():
        rows = runs_table.list_runs(runs_dir, algorithm=algorithm, status=status, family=family)
    if as_json:
        print(json.dumps(rows, indent=2))
    elif rows:
        print(runs_table.render(rows), end="")
    else:
        print(f"no runs in {runs_dir}" + (" match the filters" if algorithm or status or family else ""), file=sys.stderr)


@app.command("compare")
def compare(
    run_dirs: RunDirs,
    checkpoint: Checkpoint = "best",
    at: Annotated[Optional[str], typer.Option(help="Steps to show, e.g. 0,1,10 (default: 0, 1 and the last).",
                                              show_default=False)] = None,
    shots: Shots = None,
    steps: Steps = None,
    tasks: Tasks = None,
    inner_lr: InnerLr = None,
    seed: EvalSeed = None,
    overrides: SetOption = None,
    device: Device = "auto",
    as_json: Json = False,
) -> None:
    """Score runs on the same held-out tasks; paired differences to the first run; seeds grouped."""
    from metarun import compare as compare_mod

    sets = _eval_sets(overrides, shots=shots, steps=steps, tasks=tasks, inner_lr=inner_lr, seed=seed)
    with user_errors():
        chosen = _int_list(at, "--at") if at is not None else None
        result = compare_mod.compare(run_dirs, checkpoint, sets, device, chosen)
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print(compare_mod.render(result), end="")


@app.command("plot")
def plot(
    run_dirs: RunDirs,
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG file to write.")] = Path("metarun-plot.png"),
    checkpoint: Checkpoint = "best",
    fit_tasks: Annotated[int, typer.Option(help="Held-out tasks whose fitted functions are drawn (0 to 3).")] = 3,
    shots: Shots = None,
    steps: Steps = None,
    tasks: Tasks = None,
    seed: EvalSeed = None,
    overrides: SetOption = None,
    device: Device = "auto",
    dpi: Annotated[int, typer.Option(help="Pixels per inch of the PNG (20 to 600).")] = 100,
) -> None:
    """Learning curves, adaptation curves and fitted functions, as one PNG."""
    from metarun.plot import plot_runs

    sets = _eval_sets(overrides, shots=shots, steps=steps, tasks=tasks, seed=seed)
    with user_errors():
        path = plot_runs(run_dirs, output, checkpoint, sets, device, fit_tasks, dpi)
    print(path)


@app.command("sweep")
def sweep(
    config: Annotated[Path, typer.Argument(help="YAML config file.", show_default=False)],
    grid: Annotated[list[str], typer.Option(
        "--grid", help="section.key=v1,v2,... (repeatable; the cross product is run).", show_default=False)],
    overrides: SetOption = None,
    jobs: Annotated[int, typer.Option(help="Runs at once (processes).")] = 1,
    runs_dir: Annotated[Path, typer.Option(help="Where run directories are created.")] = Path("runs"),
    as_json: Json = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No line as each run ends.")] = False,
) -> None:
    """One ordinary run per point of the grid; a summary table at the end."""
    from metarun import sweep as sweep_mod

    with user_errors():
        results = _sweep(config, list(overrides or []), grid, runs_dir, jobs, quiet or as_json, "--grid")
    if as_json:
        print(json.dumps(results, indent=2))
    else:
        print(sweep_mod.render(results), end="")
    if any(r["exit_code"] for r in results):
        raise typer.Exit(1)


def _int_list(text: str, option: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"{option} {text!r}: expected integers separated by commas") from None


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
    try:
        code = app(prog_name="metarun", standalone_mode=False)
    except typer.Abort:
        print("metarun: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        # A bad option or argument (click's UsageError, vendored by newer Typer, hence
        # matched by name): one line, like every other bad input, not a usage box.
        if not any(cls.__name__ == "UsageError" for cls in type(exc).__mro__):
            raise
        message = exc.format_message().strip()
        if message:  # (none when a bare `metarun` has just printed the help)
            ctx = getattr(exc, "ctx", None)
            where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            print(f"metarun: error: {message}{where}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
