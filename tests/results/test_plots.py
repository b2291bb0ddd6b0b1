"""Figures: written as PNG, with the expected series, labels and Pareto front."""

from __future__ import annotations

import pytest
from compare_records import make_record, write
from matplotlib.container import BarContainer, ErrorbarContainer

from rdbench.results.compare import compare, load_records, summarize
from rdbench.results.plots import (
    ablation_figure, pareto_figure, pareto_front, plot_suite, recall_figure,
)
from rdbench.results.tables import build_tables, select_columns

# run -> (trainable, test mR base); mR = base + 3.5 (see compare_records)
RUNS = {"zero": (0, 10.0), "small": (10_000, 14.0), "mid": (200_000, 12.0),
        "big": (5_000_000, 20.0), "full": (150_000_000, 19.0)}


@pytest.fixture
def table(tmp_path):
    for index, (run, (trainable, base)) in enumerate(RUNS.items()):
        for seed in (0, 1):
            write(tmp_path, make_record("abl", run, index, seed, base=base + seed, trainable=trainable))
    write(tmp_path, make_record("abl", "broken", 9, 0, status="failed"))
    df, _ = load_records(tmp_path)
    summary = summarize(df)
    tables, _ = build_tables(summary, df, select_columns(None, summary), baseline="mid")
    return tables[0]


def legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_pareto_front_helper():
    assert pareto_front([(1, 5), (2, 4), (3, 6), (3, 7), (4, 7), (5, 9)]) == [(1, 5), (3, 7), (5, 9)]


def test_pareto_figure(table):
    fig = pareto_figure(table)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert ax.get_title() and "parameters" in ax.get_xlabel() and "(%)" in ax.get_ylabel()
    points = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(points) == len(RUNS)  # one series per run; the failed run has nothing to plot
    assert legend_texts(ax) == ["Pareto front", *RUNS]
    # zero sits one decade below the smallest real count (1e4) and is labelled
    zero_x = points[0].lines[0].get_xdata()[0]
    assert zero_x == pytest.approx(1e3)
    assert any("zero (0 trainable)" in t.get_text() for t in ax.texts)
    front = next(ln for ln in ax.get_lines() if ln.get_label() == "Pareto front")
    # mR: zero 14.0, small 18.0, mid 16.0 (dominated), big 24.0, full 23.0 (dominated)
    assert list(front.get_xdata()) == [1e3, 1e4, 5e6]
    assert list(front.get_ydata()) == pytest.approx([14.0, 18.0, 24.0])
    assert front.get_drawstyle() == "steps-post"


def test_ablation_figure_relative_to_baseline(table):
    fig = ablation_figure(table)
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(bars) == 1 and len(bars[0].patches) == len(RUNS) - 1
    assert [p.get_width() for p in bars[0].patches] == pytest.approx([-2.0, 2.0, 8.0, 7.0])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["zero", "small", "big", "full"]
    errors = bars[0].errorbar.lines[2][0].get_segments()
    assert [abs(s[1][0] - s[0][0]) / 2 for s in errors] == pytest.approx([0.7071068] * 4)
    assert "mid" in ax.get_title() and "percentage points" in ax.get_xlabel() and ax.get_ylabel()
    assert len(legend_texts(ax)) == 2
    # Without a baseline the first run is the reference.
    table.baseline = None
    first = ablation_figure(table).axes[0]
    assert [t.get_text() for t in first.get_yticklabels()] == ["small", "mid", "big", "full"]


def test_recall_figure(table):
    fig = recall_figure(table)
    assert len(fig.axes) == 2
    for ax, direction in zip(fig.axes, ("I2T", "T2I")):
        assert direction in ax.get_title() and "K" in ax.get_xlabel()
        series = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        assert len(series) == len(RUNS) and legend_texts(ax) == list(RUNS)
        assert list(series[0].lines[0].get_xdata()) == [1, 5, 10]
    assert "(%)" in fig.axes[0].get_ylabel()
    i2t_zero = fig.axes[0].containers[0].lines[0].get_ydata()
    assert list(i2t_zero) == pytest.approx([11.5, 12.5, 13.5])


def test_plot_suite_writes_pngs(table, tmp_path):
    paths = plot_suite(table, tmp_path / "figs")
    assert [p.name for p in paths] == ["abl-pareto.png", "abl-ablation.png", "abl-recall.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_plot_option(tmp_path):
    write(tmp_path / "r", make_record("one", "solo", 1, 0, base=5.0))
    result = compare(tmp_path / "r", plot_dir=tmp_path / "figs")
    # A single run has no ablation to draw; the other two figures are written.
    assert [p.name for p in result.files] == ["one-pareto.png", "one-recall.png"]
    assert all(p.is_file() for p in result.files)
