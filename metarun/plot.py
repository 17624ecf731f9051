"""`metarun plot` (and `eval --plot`): the figures of a meta-learning paper.

Row 1: learning curves (support loss and query loss against iteration,
smoothed, a line per run) and adaptation curves (query MSE against inner
steps with the 95% CI band, a line per run, all on the same held-out tasks).
Then one row per run: its fitted functions on a few held-out tasks (true
function, support points, predictions after 0, 1 and 10 steps), as in the
MAML paper's sinusoid figure; only for 1-D tasks and learners that can show
predictions (`Algorithm.predict_after`).

matplotlib is an optional extra and runs headless (Agg).
"""

from __future__ import annotations

from pathlib import Path

import torch

from metarun.compare import score_runs
from metarun.errors import UserError
from metarun.evaluate import load_algorithm, open_run, summarize
from metarun.rundir import RunDir, read_metrics
from metarun.tasks import TaskBatch, TaskFamily

PANEL_W, PANEL_H = 4.5, 3.4  # inches per panel
COLUMNS = 3
FIT_STEPS = (0, 1, 10)
MAX_FIT_ROWS = 4  # fitted-function rows for at most this many runs
GRID_POINTS = 200


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UserError("plot: needs matplotlib (pip install 'metarun[plot]')") from None
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    return plt


def smooth(values: list[float], fraction: float = 0.02) -> list[float]:
    """Trailing moving average over about `fraction` of the curve (at least 1 point)."""
    window = max(1, int(len(values) * fraction))
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def learning_curve(run: RunDir, column: str) -> tuple[list[int], list[float]]:
    its, values = [], []
    for row in read_metrics(run.metrics_path):
        if row.get(column):
            its.append(int(row["iteration"]))
            values.append(float(row[column]))
    return its, values


def fitted_predictions(path: Path, checkpoint: str, overrides: list[str], family: TaskFamily, tasks: TaskBatch,
                       device: torch.device) -> dict[int, torch.Tensor] | None:
    """Predictions on a dense grid after each of FIT_STEPS: {steps: [n, G, 1]}; None if the learner cannot show them."""
    run, cfg, _ = open_run(path, overrides)
    algo, _, _ = load_algorithm(run, cfg, checkpoint, device)
    x = x_grid(family, tasks)
    try:
        steps = FIT_STEPS if algo.adapts else FIT_STEPS[:1]
        return {s: algo.predict_after(tasks, x, s, cfg.eval.inner_lr).cpu() for s in steps}
    except NotImplementedError:
        return None


def x_grid(family: TaskFamily, tasks: TaskBatch) -> torch.Tensor:
    """[n, G, 1] evenly spaced over the family's input range (or the points seen)."""
    low, high = getattr(family.cfg, "x_range", None) or (
        min(tasks.support_x.min(), tasks.query_x.min()).item(), max(tasks.support_x.max(), tasks.query_x.max()).item())
    grid = torch.linspace(low, high, GRID_POINTS, device=tasks.support_x.device)
    return grid.view(1, -1, 1).expand(len(tasks), -1, -1)


def plot_runs(paths: list[Path], out: Path, checkpoint: str = "best", overrides: list[str] = (),
              device: str = "auto", fit_tasks: int = 3, dpi: int = 100) -> Path:
    """Write the figure to `out` (PNG); returns its path."""
    out = Path(out)
    if not 0 <= fit_tasks <= COLUMNS:
        raise UserError(f"--fit-tasks: must be between 0 and {COLUMNS}, got {fit_tasks}")
    if not 20 <= dpi <= 600:
        raise UserError(f"--dpi: must be between 20 and 600, got {dpi}")
    if out.suffix.lower() != ".png":
        raise UserError(f"{out}: the figure is written as PNG; name it *.png")
    if not out.parent.is_dir():
        raise UserError(f"{out.parent}: no such folder for the figure")
    plt = _pyplot()
    fig = figure(paths, checkpoint, overrides, device, fit_tasks, dpi)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def figure(paths: list[Path], checkpoint: str = "best", overrides: list[str] = (), device: str = "auto",
           fit_tasks: int = 3, dpi: int = 100):
    """The matplotlib Figure (PANEL_W x PANEL_H inches per panel, COLUMNS panels a row)."""
    plt = _pyplot()
    descriptions, losses, batch, family = score_runs(paths, checkpoint, overrides, device)
    labels = [Path(d["run"]).name for d in descriptions]
    fits: list[tuple[int, dict]] = []  # (run index, predictions)
    one_d = family.dx == 1 and family.dy == 1
    shown = batch.slice(0, min(fit_tasks, len(batch)))
    if one_d and fit_tasks > 0:
        for i, path in enumerate(paths[:MAX_FIT_ROWS]):
            preds = fitted_predictions(path, checkpoint, overrides, family, shown, batch.support_x.device)
            if preds is not None:
                fits.append((i, preds))

    rows = 1 + len(fits)
    fig, axes = plt.subplots(rows, COLUMNS, figsize=(PANEL_W * COLUMNS, PANEL_H * rows), dpi=dpi, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    for i, (path, label) in enumerate(zip(paths, labels)):
        color = colors[i % len(colors)]
        run = RunDir.open(path)
        for ax, column, title in ((axes[0, 0], "support_loss", "support loss (before adapting)"),
                                  (axes[0, 1], "query_loss", "query loss (after inner steps)")):
            its, values = learning_curve(run, column)
            ax.plot(its, smooth(values), color=color, label=label, lw=1.2)
            ax.set(title=title, xlabel="meta-iteration", yscale="log")
        q = summarize(losses[i])  # per step over the shared tasks
        mean, half = torch.tensor(q["mean"]), torch.tensor(q["ci95"])
        steps = range(len(mean))
        ax = axes[0, 2]
        ax.plot(steps, mean, color=color, marker="o", ms=3, label=label)
        ax.fill_between(steps, mean - half, mean + half, color=color, alpha=0.25)
        ax.set(title=f"held-out query MSE ({len(batch)} tasks, 95% CI)", xlabel="adaptation steps",
               yscale="log")
    axes[0, 0].legend(fontsize=7)

    if fits:
        x = x_grid(family, shown).cpu()
        try:
            truth = family.function(shown.params, x_grid(family, shown)).cpu()  # [n, G, 1]
        except NotImplementedError:  # e.g. GP tasks: no closed form, show the query points instead
            truth = None
    for row, (i, preds) in enumerate(fits, start=1):
        for col in range(COLUMNS):
            ax = axes[row, col]
            if col >= len(shown):
                ax.axis("off")
                continue
            if truth is not None:
                ax.plot(x[col, :, 0], truth[col, :, 0], color="black", lw=2, label="true function")
            else:
                ax.scatter(shown.query_x[col, :, 0].cpu(), shown.query_y[col, :, 0].cpu(), color="black", s=4,
                           label="query points")
            ax.scatter(shown.support_x[col, :, 0].cpu(), shown.support_y[col, :, 0].cpu(), color="purple",
                       marker="^", zorder=3, label="support points")
            for (steps, pred), style in zip(preds.items(), (":", "--", "-")):
                name = "prediction" if len(preds) == 1 else f"after {steps} step{'s' * (steps != 1)}"
                ax.plot(x[col, :, 0], pred[col, :, 0], color=colors[i % len(colors)], ls=style, label=name)
            ax.set_title(f"{labels[i]}\nheld-out task {col}", fontsize=8)
        axes[row, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig

