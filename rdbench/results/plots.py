"""Figures of a suite table (``rdbench compare --plot DIR``): PNG files via matplotlib's Agg canvas.

Three figures answer the three questions a PEFT paper is asked: is the method worth its
parameters (mR against trainable parameters, with the Pareto front), what does each component
contribute (ablation deltas with the seed spread as error bars) and where in the ranking do
the gains appear (recall@K curves). Two more test RDB's premise (docs/diagnostics.md): does the
text tower dominate the gradients (the ratio curves read from each seed's training log), and
does retrieval follow the modality gap (mR against the gap). Figures are built with :class:`matplotlib.figure.Figure` and
an explicit Agg canvas, never pyplot, so that plotting neither needs a display nor changes any
global matplotlib state of the calling program. Only rdbench's own rows are plotted: published
rows have no seed spread and their parameter counts are rounded.
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rdbench.atomic import atomic_path
from rdbench.errors import RdbenchError

KS = (1, 5, 10)


def _measured(table, key: str = "test/mR") -> list:
    return [r for r in table.rows if r.seeds and r.data.get(f"{key}_mean") is not None]


def _figure(width: float = 6.4, height: float = 4.4) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both fewer parameters and higher mR, by parameters."""
    front, best = [], -math.inf
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def pareto_figure(table) -> Figure | None:
    """mR against trainable parameters on a log axis; zero-parameter runs sit at a floor value."""
    rows = [r for r in _measured(table) if r.trainable_params is not None]
    if not rows:
        return None
    positive = [r.trainable_params for r in rows if r.trainable_params > 0]
    # One decade below the smallest real count keeps "0" visibly apart from every real method.
    floor = 10.0 ** (math.floor(math.log10(min(positive))) - 1) if positive else 1.0
    fig = _figure()
    ax = fig.add_subplot()
    points = []
    for r in rows:
        x, y = (r.trainable_params or floor), r.data["test/mR_mean"]
        ax.errorbar([x], [y], yerr=[r.data["test/mR_std"] or 0.0], fmt="o", capsize=3, label=r.label)
        if r.trainable_params == 0:
            ax.annotate(f"{r.label} (0 trainable)", (x, y), textcoords="offset points",
                        xytext=(6, 6), fontsize=8)
        points.append((x, y))
    front = pareto_front(points)
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", linestyle="--",
            color="grey", label="Pareto front")
    ax.set_xscale("log")
    ax.set_title(f"{table.suite}: test mR against trainable parameters")
    zero = any(r.trainable_params == 0 for r in rows)
    ax.set_xlabel("trainable parameters (count, log scale"
                  + (f"; 0 drawn at {floor:g}" if zero else "") + ")")
    ax.set_ylabel("test mR (%)")
    ax.legend(fontsize=8)
    return fig


def ablation_figure(table, baseline: str | None = None, key: str = "test/mR") -> Figure | None:
    """Horizontal bars of each run's difference to the baseline, error bars = std over seeds."""
    rows = _measured(table, key)
    name = baseline or table.baseline
    base = next((r for r in rows if name in (r.label, r.data["base_run"])), None) if name else None
    base = base or (rows[0] if rows else None)
    others = [r for r in rows if r is not base]
    if base is None or not others:
        return None
    base_mean = base.data[f"{key}_mean"]
    deltas = [r.data[f"{key}_mean"] - base_mean for r in others]
    errors = [r.data[f"{key}_std"] or 0.0 for r in others]
    fig = _figure(6.4, 1.2 + 0.45 * len(others))
    ax = fig.add_subplot()
    colors = ["tab:green" if d >= 0 else "tab:red" for d in deltas]
    ax.barh([r.label for r in others], deltas, xerr=errors, color=colors, capsize=3,
            label=f"run − {base.label} (error bar: std over seeds)")
    ax.axvline(0.0, color="black", linewidth=0.8, label=f"{base.label} = {base_mean:.2f}")
    ax.invert_yaxis()  # suite order top to bottom, as in the tables
    metric = key.removeprefix("test/")
    ax.set_title(f"{table.suite}: ablation, test {metric} relative to {base.label}")
    ax.set_xlabel(f"Δ test {metric} (percentage points)")
    ax.set_ylabel("run")
    ax.legend(fontsize=8)
    return fig


def recall_figure(table) -> Figure | None:
    """Recall@K for K = 1, 5, 10, one line per run, image->text and text->image panels."""
    rows = [r for r in table.rows if r.seeds]
    if not rows:
        return None
    fig = _figure(10, 4.2)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, (direction, title) in zip(axes, (("i2t", "image → text (I2T)"),
                                             ("t2i", "text → image (T2I)"))):
        for r in rows:
            means = [r.data.get(f"test/{direction}_R@{k}_mean") for k in KS]
            if None in means:
                continue
            stds = [r.data.get(f"test/{direction}_R@{k}_std") or 0.0 for k in KS]
            ax.errorbar(KS, means, yerr=stds, marker="o", capsize=3, label=r.label)
        ax.set_title(title)
        ax.set_xlabel("K (top-K retrieved)")
        ax.set_xticks(KS)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("recall@K (%)")
    fig.suptitle(f"{table.suite}: test recall@K")
    return fig


#: The text/image gradient ratio in a run's ``logs/metrics.csv``: per step (every
#: ``log_every_n_steps``), else, in runs shorter than that, the epoch means.
RATIO_CURVES = ("diag/grad_ratio_text_image_step", "diag/grad_ratio_text_image_epoch")


def ratio_curve(record_path: str) -> list[tuple[int, float]]:
    """(step, ratio) points of one seed's logged gradient ratio; empty when the log is missing,
    unreadable or older than the diagnostics (figures are informative, never fatal)."""
    import polars as pl

    log = Path(record_path).parent / "logs" / "metrics.csv"
    try:
        frame = pl.read_csv(log, infer_schema_length=None)
    except Exception:  # noqa: BLE001  (a bad log must not stop the other figures)
        return []
    for column in RATIO_CURVES:
        if column in frame.columns and "step" in frame.columns:
            points = frame.select("step", column).drop_nulls()
            if points.height:
                return [(int(a), float(b)) for a, b in points.iter_rows() if math.isfinite(float(b))]
    return []


def gradient_figure(table) -> Figure | None:
    """The text/image gradient-ratio curve of each run (mean over its seeds at each logged
    step); above the dotted line at 1 the text tower's gradients dominate (docs/diagnostics.md)."""
    curves = []
    for r in (r for r in table.rows if r.seeds):
        by_step: dict[int, list[float]] = {}
        for path in r.data.get("paths") or []:
            for step, value in ratio_curve(path):
                by_step.setdefault(step, []).append(value)
        if by_step:
            steps = sorted(by_step)
            curves.append((r.label, steps, [sum(by_step[k]) / len(by_step[k]) for k in steps]))
    if not curves:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    for label, steps, means in curves:
        ax.plot(steps, means, marker=".", label=label)
    ax.axhline(1.0, color="grey", linestyle=":", label="balanced (ratio 1)")
    ax.set_yscale("log")
    ax.set_title(f"{table.suite}: gradient norm, text tower over image tower")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("‖∇ text‖ / ‖∇ image‖ (log scale, mean over seeds)")
    ax.legend(fontsize=8)
    return fig


def gap_figure(table) -> Figure | None:
    """Test mR against the test modality gap, one point per run with the seed spread on both
    axes: does a smaller gap go with better retrieval?"""
    rows = [r for r in _measured(table) if r.data.get("diag/test_modality_gap_mean") is not None]
    if not rows:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    for r in rows:
        ax.errorbar([r.data["diag/test_modality_gap_mean"]], [r.data["test/mR_mean"]],
                    xerr=[r.data.get("diag/test_modality_gap_std") or 0.0],
                    yerr=[r.data.get("test/mR_std") or 0.0], fmt="o", capsize=3, label=r.label)
    ax.set_title(f"{table.suite}: test mR against the modality gap")
    ax.set_xlabel("modality gap on test (distance of the embedding centres)")
    ax.set_ylabel("test mR (%)")
    ax.legend(fontsize=8)
    return fig


def suite_figures(table):
    """The suite's figures that have something to show, as ``(name, Figure)`` pairs."""
    for name, draw in (("pareto", pareto_figure), ("ablation", ablation_figure), ("recall", recall_figure),
                       ("gradient-ratio", gradient_figure), ("gap-mR", gap_figure)):
        fig = draw(table)
        if fig is not None:
            yield name, fig


def png_bytes(fig: Figure) -> bytes:
    """A figure as PNG bytes (the HTML report embeds them)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=110, format="png")
    return buffer.getvalue()


def plot_suite(table, out_dir) -> list[Path]:
    """Write the suite's figures as PNG files into ``out_dir``; returns the paths written."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RdbenchError(f"{out}: cannot create plot folder ({exc.strerror or exc})") from None
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", table.suite)
    written = []
    for name, fig in suite_figures(table):
        path = out / f"{stem}-{name}.png"
        try:
            with atomic_path(path) as temp:
                fig.savefig(temp, dpi=150, format="png")
        except OSError as exc:
            raise RdbenchError(f"{path}: cannot write ({exc.strerror or exc})") from None
        written.append(path)
    return written
