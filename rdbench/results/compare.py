"""Collect run records into comparison tables (the engine behind ``rdbench compare``).

Every run writes ``results/<suite>/<run>/seed<k>/record.json``. This module reads all of them
(through :meth:`rdbench.results.record.Record.from_json`, the one reader of records, which
accepts schema versions 1 and 2), averages each run over its successful seeds and hands one
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

import fnmatch
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from rdbench.atomic import write_atomic
from rdbench.errors import RdbenchError
from rdbench.results.record import RECORD_FILE, Record
from rdbench.results.references import split_geometry
from rdbench.results.render_latex import render_latex
from rdbench.results.render_text import DATA_FORMATS, TEXT_FORMATS, render_text, write_frame

FORMATS = (*TEXT_FORMATS, "latex", *DATA_FORMATS)
#: Cost fields averaged like metrics (``trainable_params`` is a property of the method instead).
COST_VALUES = ("train_time_s", "peak_mem_bytes", "total_params")
#: Metrics every summary has (null when no seed reported them), so outputs keep one schema.
KEY_METRICS = (*(f"test/{d}_R@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)), "test/mR", "val/mR")
# Explicit dtypes so that a column that is null in every record still has a usable type.
_BASE_SCHEMA = {
    "suite": pl.String, "run": pl.String, "run_index": pl.Int64, "seed": pl.Int64,
    "status": pl.String, "error": pl.String, "adapter": pl.String, "dataset": pl.String,
    "dataset_fingerprint": pl.String, "backbone": pl.String, "trainable_params": pl.Int64,
    "adapter_params": pl.Int64, "total_params": pl.Int64, "backbone_params": pl.Int64, "train_time_s": pl.Float64,
    "peak_mem_bytes": pl.Int64, "finished_at": pl.String, "schema_version": pl.Int64, "path": pl.String,
    "purpose": pl.String, "test_images": pl.Int64, "test_captions": pl.Int64, "backbone_detail": pl.String,
}
# Seeds differing in any of these are different experiments, so they are never pooled.
_VARIANT_COLS = ("dataset", "dataset_fingerprint", "backbone")
#: Run names that ``rdbench tune`` gives its trials (``tune-<study>/trial<k>``): records written
#: before ``purpose`` existed are known as trials by this name.
_TRIAL_NAME = re.compile(r"^tune-.+/trial\d+$")


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


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_num(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def backbone_detail(backbone: dict | None) -> str | None:
    """What a record's ``provenance.backbone`` says was loaded, for the notes: architecture,
    checkpoint (file name of a local file, or the open_clip tag) and short checksum, e.g.
    ``ViT-B-32, RS5M_ViT-B-32.pt, sha256 1a2b3c4d``; None when it names none of them."""
    if not isinstance(backbone, dict):
        return None
    text = {k: v for k, v in backbone.items() if isinstance(v, str) and v}
    parts = [text["architecture"]] if "architecture" in text else []
    # Records written before ``checkpoint`` existed keep only ``pretrained`` (possibly env:VAR).
    checkpoint = text.get("checkpoint") or text.get("pretrained")
    if checkpoint:
        parts.append(checkpoint.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1])
    elif "architecture" in text and backbone.get("pretrained", "") is None:
        parts.append("random weights")
    # A file's SHA-256; other forms (open_clip:<arch>:<tag>) repeat what is named already.
    checksum = re.fullmatch(r"(?:sha256:)?([0-9a-f]{64})", text.get("checksum", ""))
    if checksum:
        parts.append(f"sha256 {checksum.group(1)[:8]}")
    return ", ".join(parts) or None


def is_trial(purpose: str | None, run: str) -> bool:
    """A tuning trial: ``purpose`` "trial", or a run named as ``rdbench tune`` names its trials."""
    return purpose == "trial" or bool(_TRIAL_NAME.match(run))


def _flatten(record: Record) -> dict:
    """Turn one checked record into a flat row (cost and training values that are not numbers
    are left empty rather than rejected: they are informative only)."""
    components, cost, provenance = record.components, record.cost, record.provenance

    def key(section: dict, name: str, part: str = "key"):
        sub = section.get(name)
        value = sub.get(part) if isinstance(sub, dict) else None
        return value if isinstance(value, str) else None

    row = {"suite": record.suite, "run": record.run, "run_index": record.run_index,
           "seed": record.seed, "status": record.status, "error": record.error}
    row["adapter"] = key(components, "adapter")
    # Provenance says what was actually used; components are the fallback for early failures.
    row["dataset"] = key(provenance, "dataset") or key(components, "dataset")
    row["dataset_fingerprint"] = key(provenance, "dataset", "fingerprint")
    row["backbone"] = key(provenance, "backbone") or key(components, "backbone")
    for name in ("trainable_params", "adapter_params", "total_params", "backbone_params", "peak_mem_bytes"):
        row[name] = cost.get(name) if _is_int(cost.get(name)) else None
    row["train_time_s"] = float(cost["train_time_s"]) if _is_num(cost.get("train_time_s")) else None
    row["finished_at"] = record.finished_at
    row["schema_version"] = record.schema_version
    row["purpose"] = "trial" if is_trial(record.purpose, record.run) else record.purpose
    row["test_images"], row["test_captions"] = split_geometry(record) or (None, None)
    row["backbone_detail"] = backbone_detail(provenance.get("backbone"))
    row.update({f"value:{k}": v for k, v in record.metrics.items()})
    # Training summaries are informative only, so a non-number there is skipped, not fatal.
    row.update({f"value:{k if k.startswith('train/') else 'train/' + k}": float(v)
                for k, v in record.train.items() if _is_num(v)})
    return row


def _record_paths(roots: list[Path]) -> list[Path]:
    """Every ``record.json`` below the folders, each file once (folders may overlap)."""
    seen: dict[Path, Path] = {}
    for root in roots:
        if not root.is_dir():
            raise RdbenchError(f"{root}: results folder does not exist")
        for path in sorted(root.rglob(RECORD_FILE)):
            seen.setdefault(path.resolve(), path)
    return list(seen.values())


def load_records(results_dir, suite: str | None = None) -> tuple[pl.DataFrame, list[str]]:
    """Read every ``record.json`` below ``results_dir`` into one row each, plus warnings.

    ``results_dir`` is one folder or a list of them (e.g. one per machine): their records make
    one frame. One unreadable file must not hide a whole benchmark, so bad files are reported in
    the warnings and skipped. Metric and training columns keep their record names (``test/mR``,
    ``train/loss/infonce``). With ``suite`` only that suite's rows are returned; a suite with no
    records is an error listing the ones found. ``purpose`` is "trial" for tuning trials (also
    those written before records stated it); ``test_images`` / ``test_captions`` are the test
    split's size as recorded.
    """
    roots = [Path(d) for d in ([results_dir] if isinstance(results_dir, (str, Path)) else results_dir)]
    if not roots:
        raise RdbenchError("no results folder given")
    root = ", ".join(map(str, roots))  # names the folders in messages
    warnings: list[str] = []
    rows: dict[tuple, dict] = {}
    for path in _record_paths(roots):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            warnings.append(f"{path}: not readable as JSON ({exc}); skipped")
            continue
        try:
            row = _flatten(Record.from_json(data))
        except ValueError as exc:
            warnings.append(f"{path}: {exc}; skipped")
            continue
        row["path"] = str(path)
        # Copies of one seed (e.g. results merged from two machines) would inflate the seed
        # count and shrink the std, so only the most recently finished copy is kept.
        ident = (row["suite"], row["run"], row["seed"], row["dataset_fingerprint"], row["backbone"])
        old = rows.get(ident)
        if old is not None:
            newer = (row["finished_at"] or "") > (old["finished_at"] or "")
            keep, drop = (row, old) if newer else (old, row)
            warnings.append(f"{drop['path']}: duplicate of {keep['path']} "
                            "(same suite, run and seed); skipped")
            row = keep
        rows[ident] = row
    if not rows:
        raise RdbenchError(f"{root}: no usable record.json found"
                           + (f" ({len(warnings)} skipped, see warnings)" if warnings else ""))
    suites = sorted({r["suite"] for r in rows.values()})
    if suite is not None and suite not in suites:
        raise RdbenchError(f"{root}: no records for suite '{suite}' "
                           f"(suites found: {', '.join(suites)})")
    value_cols = dict.fromkeys(k for r in rows.values() for k in r if k.startswith("value:"))
    schema = {**_BASE_SCHEMA, **{k.removeprefix("value:"): pl.Float64 for k in value_cols}}
    data = [{k.removeprefix("value:"): v for k, v in r.items()} for r in rows.values()]
    df = pl.DataFrame(data, schema=schema).sort("suite", "run_index", "run", "seed")
    if suite is not None:
        df = df.filter(pl.col("suite") == suite)
    return df, warnings


def select_runs(df: pl.DataFrame, runs: list[str] | None = None, exclude: list[str] | None = None,
                trials: bool = False, warnings: list[str] | None = None) -> pl.DataFrame:
    """Keep the records whose run name matches a ``runs`` glob (all when None) and no ``exclude``
    glob (``fnmatch``: ``*`` also crosses ``/``); tuning trials only with ``trials``.

    A ``runs`` pattern that matches no run is an error listing the runs (a typo must not print a
    silently smaller table); trials left out are counted in one warning.
    """
    warnings = [] if warnings is None else warnings
    names = df["run"].unique(maintain_order=True).to_list()

    def matches(patterns: list[str]) -> set[str]:
        return {n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)}

    keep = set(names)
    if runs:
        for pattern in runs:
            if not matches([pattern]):
                raise RdbenchError(f"--runs: no run matches '{pattern}' (runs: {', '.join(names)})")
        keep = matches(runs)
    if exclude:
        keep -= matches(exclude)
    df = df.filter(pl.col("run").is_in(sorted(keep)))
    if not trials:
        left_out = df.filter(pl.col("purpose") == "trial").height
        if left_out:
            warnings.append(f"{left_out} tuning trial record(s) left out; --trials shows them")
            df = df.filter(pl.col("purpose") != "trial")
    if df.is_empty():
        raise RdbenchError("no record left to compare (runs: " + ", ".join(names) + ")"
                           + ("; tuning trials are left out unless --trials" if not trials else ""))
    return df


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
    ``paths`` lists the successful seeds' records, for tests that need per-seed values.
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
             "backbone_details", "paths"]
    rest = [c for c in out.columns if c not in front]
    return out.select(*front, *rest).sort("suite", "run_index", "run")


@dataclass
class Comparison:
    """What ``rdbench compare`` produces: the text to print, messages, and files written."""

    text: str
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def compare(results_dir, suite: str | None = None, fmt: str = "table", *,
            baseline: str | None = None, columns: list[str] | None = None,
            references: bool | list[str] = False, plot_dir=None, output=None,
            n_boot: int = 1000, seed: int = 0, tie_rule: str = "strict",
            runs: list[str] | None = None, exclude: list[str] | None = None, trials: bool = False,
            allow_other_splits: bool = False) -> Comparison:
    """Load, summarize, test and render records: everything ``rdbench compare`` does.

    ``results_dir`` is one results folder or a list of them. ``references`` is True for every
    published table in ``rdbench/results/published/`` or a list of their names; with rows measured
    on another test split than the published one it is an error unless ``allow_other_splits``.
    ``runs`` / ``exclude`` are run-name globs (:func:`select_runs`); tuning trials are left out
    unless ``trials``. ``output`` is required for parquet (binary) and optional for csv; the file
    is then listed in ``files`` and ``text`` says where it went.
    """
    from rdbench.results.tables import build_tables, select_columns

    check_format(fmt)  # fail before reading a large results tree
    if fmt == "parquet" and output is None:
        raise RdbenchError("--format parquet: needs --output FILE (parquet is binary)")
    df, warnings = load_records(results_dir, suite)
    df = select_runs(df, runs, exclude, trials, warnings)
    df = apply_tie_rule(df, tie_rule, warnings)
    summary = summarize(df)
    splits = summary.group_by("suite", "base_run", maintain_order=True).len()
    for row in splits.filter(pl.col("len") > 1).iter_rows(named=True):
        warnings.append(f"{row['suite']}/{row['base_run']}: seeds used different datasets or "
                        f"backbones; shown as {row['len']} separate rows, not averaged")
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
