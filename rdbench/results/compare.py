"""Collect run records into comparison tables (the engine behind ``rdbench compare``).

Every run writes ``results/<suite>/<run>/seed<k>/record.json``. :mod:`rdbench.results.load`
reads all of them (through :meth:`rdbench.results.record.Record.from_json`, the one reader of
records, which accepts schema versions 1 and 2); this module averages each run over its
successful seeds and hands one
table per suite (:mod:`rdbench.results.tables`) to the renderer of the chosen format
(:mod:`rdbench.results.render_text`, :mod:`rdbench.results.render_latex`). It reads records
(and the per-query ``test_ranks.json`` beside them) only, never checkpoints, so a comparison can
be made from results copied off another machine.

Four rules keep the tables honest: failed and unfinished seeds are counted and shown rather than
dropped, seeds that used a different dataset (fingerprint) or backbone are never averaged
together, published numbers are shown beside measured ones but never ranked or tested, and a
row measured on another test split than the published one is marked (and published rows are set
beside it only when asked). Several results folders (one per machine) are read into one table;
tuning trials are left out unless asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from rdbench.atomic import write_atomic
from rdbench.errors import RdbenchError
from rdbench.optional import require
from rdbench.results.load import (  # noqa: F401  (re-exported: compare's public names)
    _VARIANT_COLS, backbone_detail, is_trial, load_records, select_runs,
)
from rdbench.results.render_latex import render_latex
from rdbench.results.render_text import DATA_FORMATS, TEXT_FORMATS, render_text, write_frame

FORMATS = (*TEXT_FORMATS, "latex", *DATA_FORMATS)
#: Cost fields averaged like metrics (``trainable_params`` is a property of the method instead).
COST_VALUES = ("train_time_s", "peak_mem_bytes", "total_params")
#: Metrics every summary has (null when no seed reported them), so outputs keep one schema.
KEY_METRICS = (*(f"test/{d}_R@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)), "test/mR", "val/mR")


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise RdbenchError(f"--format: unknown format '{fmt}' (valid: {', '.join(FORMATS)})")


def render(tables, fmt: str = "table") -> str:
    """Render suite tables as text: ``table`` (terminal), ``markdown`` or ``latex``."""
    check_format(fmt)
    if fmt in DATA_FORMATS:
        raise RdbenchError(f"--format {fmt}: is a data format; use write_frame")
    if fmt == "latex":
        return "\n".join(render_latex(t) for t in tables)
    return render_text(tables, fmt)


def value_columns(df: pl.DataFrame) -> list[str]:
    """Columns averaged over seeds: metrics (``val/...``, ``test/...``), ``train/...``, costs."""
    return [c for c in df.columns if "/" in c] + list(COST_VALUES)


def _variant_label(run: str, parts: dict, varies: set[str]) -> str:
    """Suffix a run label with what sets this variant apart, e.g. ``full [dataset/x@ab12cd34]``."""
    bits = []
    if "dataset" in varies or "dataset_fingerprint" in varies:
        fp = parts["dataset_fingerprint"]
        tag = f"@{fp[:8] if fp else '?'}" if "dataset_fingerprint" in varies else ""
        bits.append(f"{parts['dataset'] or '?'}{tag}")
    if "backbone" in varies:
        bits.append(parts["backbone"] or "?")
    return f"{run} [{', '.join(bits)}]"


def summarize(df: pl.DataFrame) -> pl.DataFrame:
    """One row per (suite, run): seed counts, parameters, mean/std of every value column.

    Means and stds use successful seeds only (sample std, ddof=1; one seed gives 0.0), while
    ``failed`` and ``incomplete`` (any other status, e.g. ``running``) keep the rest visible.
    ``paths`` lists the successful seeds' records, for tests that need per-seed values;
    ``chosen_seeds`` / ``chosen_values`` pair each successful seed with the JSON of what its
    hyper-parameter search chose (null without one) and ``search`` is the first such search, so
    that a table can show the choice and notice seeds that disagree (:mod:`rdbench.results.selection`).
    ``backbone_params`` is the backbone's own size as the records state it (counted before the
    adapter attaches); schema-version-1 records, which lack that field, fall back to the
    smallest ``total_params`` recorded with the row's backbone by a version-1 record (exact when
    any run adds nothing, such as zero-shot or full fine-tuning, a close upper bound otherwise).
    Rows are ordered by suite, then position in the suite file. Column ``base_run``
    is the run name; ``run`` gets a suffix when seeds of one run used different datasets or
    backbones and had to be split.
    """
    df = df.with_columns(pl.lit(None, pl.Float64).alias(m) for m in KEY_METRICS if m not in df.columns)
    values = value_columns(df)
    run_keys = ["suite", "run"]
    # A seed that failed before recording provenance has a null key; if the rest of the run
    # agrees on one value, it belongs with them rather than forming a variant of its own.
    known = df.group_by(run_keys).agg(
        pl.col(c).drop_nulls().unique().alias(f"_{c}") for c in _VARIANT_COLS)
    df = df.join(known, on=run_keys, how="left").with_columns(
        pl.when(pl.col(c).is_null() & (pl.col(f"_{c}").list.len() == 1))
        .then(pl.col(f"_{c}").list.first()).otherwise(pl.col(c)).alias(c) for c in _VARIANT_COLS)
    ok = pl.col("status") == "success"
    aggs = [
        pl.col("run_index").min(),
        ok.sum().cast(pl.Int64).alias("seeds"),
        (pl.col("status") == "failed").sum().cast(pl.Int64).alias("failed"),
        (~pl.col("status").is_in(["success", "failed"])).sum().cast(pl.Int64).alias("incomplete"),
        pl.coalesce(pl.col("trainable_params").filter(ok).drop_nulls().first(),
                    pl.col("trainable_params").drop_nulls().first()).alias("trainable_params"),
        pl.col("path").filter(ok).alias("paths"),
        # The test split's size (the same for seeds of one dataset fingerprint) and what each
        # seed's backbone loaded, both from successful seeds where there are any.
        *(pl.coalesce(pl.col(c).filter(ok).drop_nulls().first(), pl.col(c).drop_nulls().first()).alias(c)
          for c in ("test_images", "test_captions")),
        pl.col("backbone_detail").filter(ok).drop_nulls().unique(maintain_order=True).alias("backbone_details"),
        # What each successful seed's hyper-parameter search chose (rdbench.results.selection).
        pl.col("seed").filter(ok).alias("chosen_seeds"),
        pl.col("chosen").filter(ok).alias("chosen_values"),
        pl.col("search").filter(ok).drop_nulls().first().alias("search"),
        pl.col("lr").filter(ok).drop_nulls().unique(maintain_order=True).alias("lrs"),
    ]
    for m in values:
        vals = pl.col(m).filter(ok).drop_nulls()
        aggs += [vals.mean().cast(pl.Float64).alias(f"{m}_mean"),
                 pl.when(vals.len() > 1).then(vals.std(ddof=1))
                 .when(vals.len() == 1).then(pl.lit(0.0)).otherwise(None)
                 .cast(pl.Float64).alias(f"{m}_std")]
    out = df.group_by([*run_keys, *_VARIANT_COLS], maintain_order=True).agg(aggs)
    sizes = (df.filter(ok & pl.col("total_params").is_not_null()).group_by("backbone")
             .agg(pl.coalesce(pl.col("backbone_params").drop_nulls().min(),
                              pl.col("total_params").filter(pl.col("schema_version") == 1).min())
                  .alias("backbone_params")))
    out = out.join(sizes, on="backbone", how="left", nulls_equal=True)

    counts = out.group_by(run_keys).agg(
        pl.col(c).n_unique().alias(f"_n_{c}") for c in _VARIANT_COLS)
    labels = []
    for row in out.join(counts, on=run_keys, how="left").iter_rows(named=True):
        varies = {c for c in _VARIANT_COLS if row[f"_n_{c}"] > 1}
        labels.append(_variant_label(row["run"], row, varies) if varies else row["run"])
    out = out.rename({"run": "base_run"}).with_columns(pl.Series("run", labels, dtype=pl.String))
    front = ["suite", "run", "base_run", "run_index", *_VARIANT_COLS, "seeds", "failed",
             "incomplete", "trainable_params", "backbone_params", "test_images", "test_captions",
             "backbone_details", "paths", "chosen_seeds", "chosen_values", "search", "lrs"]
    rest = [c for c in out.columns if c not in front]
    return out.select(*front, *rest).sort("suite", "run_index", "run")


@dataclass
class Comparison:
    """What ``rdbench compare`` produces: the text to print, messages, and files written."""

    text: str
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def prepare(results_dir, suite: str | None = None, *, runs: list[str] | None = None,
            exclude: list[str] | None = None, trials: bool = False,
            tie_rule: str = "strict") -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    """The per-seed frame, the per-run summary and the warnings that every table is built from
    (``rdbench compare`` and ``rdbench report`` share this path, so their numbers agree)."""
    df, warnings = load_records(results_dir, suite)
    df = select_runs(df, runs, exclude, trials, warnings)
    df = apply_tie_rule(df, tie_rule, warnings)
    summary = summarize(df)
    splits = summary.group_by("suite", "base_run", maintain_order=True).len()
    for row in splits.filter(pl.col("len") > 1).iter_rows(named=True):
        warnings.append(f"{row['suite']}/{row['base_run']}: seeds used different datasets or "
                        f"backbones; shown as {row['len']} separate rows, not averaged")
    return df, summary, warnings


def compare(results_dir, suite: str | None = None, fmt: str = "table", *,
            baseline: str | None = None, columns: list[str] | None = None,
            references: bool | list[str] = False, plot_dir=None, output=None,
            n_boot: int | None = None, seed: int = 0, tie_rule: str = "strict",
            runs: list[str] | None = None, exclude: list[str] | None = None, trials: bool = False,
            allow_other_splits: bool = False) -> Comparison:
    """Load, summarize, test and render records: everything ``rdbench compare`` does.

    ``results_dir`` is one results folder or a list of them. ``references`` is True for every
    published table in ``rdbench/results/published/`` or a list of their names; with rows measured
    on another test split than the published one it is an error unless ``allow_other_splits``.
    ``runs`` / ``exclude`` are run-name globs (:func:`select_runs`); tuning trials are left out
    unless ``trials``. ``output`` is required for parquet (binary) and optional for csv; the file
    is then listed in ``files`` and ``text`` says where it went. ``n_boot`` None lets the
    bootstrap's resamples scale with each table's number of tests
    (:func:`rdbench.results.stats.auto_resamples`).
    """
    from rdbench.results.tables import build_tables, select_columns

    check_format(fmt)  # fail before reading a large results tree
    if plot_dir is not None:
        require("matplotlib", "--plot")
    if fmt == "parquet" and output is None:
        raise RdbenchError("--format parquet: needs --output FILE (parquet is binary)")
    df, summary, warnings = prepare(results_dir, suite, runs=runs, exclude=exclude, trials=trials,
                                    tie_rule=tie_rule)
    cols = select_columns(columns, summary)
    tables, notes = build_tables(summary, df, cols, baseline=baseline, references=references,
                                 n_boot=n_boot, seed=seed, tie_rule=tie_rule, warnings=warnings,
                                 allow_other_splits=allow_other_splits)
    result = Comparison("", warnings, notes)
    if fmt in ("csv", "parquet"):
        text = write_frame(tables, fmt, output)
    else:
        text = render(tables, fmt)
        if output is not None:
            _write_text(Path(output), text)
    if output is not None:
        result.files.append(Path(output))
        text = f"wrote {output}\n"
    result.text = text
    if plot_dir is not None:
        from rdbench.results.plots import plot_suite

        for table in tables:
            result.files += plot_suite(table, plot_dir)
    return result


def apply_tie_rule(df: pl.DataFrame, tie_rule: str, warnings: list[str]) -> pl.DataFrame:
    """Switch the test recalls to those recorded under ``tie_rule`` (``test@<rule>/...``).

    ``strict`` (rdbench's rule) leaves the frame as it is. Records written before the lineage
    recalls were recorded have none: their cells stay empty and a warning counts them.
    """
    if tie_rule == "strict":
        return df
    from rdbench.evaluation import TIE_RULES  # the one list of rules (the metric's own)

    if tie_rule not in TIE_RULES:
        raise RdbenchError(f"--tie-rule: unknown rule {tie_rule!r}; choose from {', '.join(TIE_RULES)}")
    tests = [m for m in KEY_METRICS if m.startswith("test/")]
    sources = {m: f"test@{tie_rule}/{m.removeprefix('test/')}" for m in tests}
    df = df.with_columns(
        (pl.col(src) if src in df.columns else pl.lit(None, pl.Float64)).alias(m) for m, src in sources.items())
    lacking = df.filter((pl.col("status") == "success") & pl.col("test/mR").is_null()).height
    if lacking:
        warnings.append(f"{lacking} successful record(s) hold no test recalls under the {tie_rule} rule "
                        "(written before rdbench recorded them); their cells are empty")
    return df


def _write_text(path: Path, text: str) -> None:
    try:
        write_atomic(path, text)
    except OSError as exc:
        raise RdbenchError(f"{path}: cannot write ({exc.strerror or exc})") from None
