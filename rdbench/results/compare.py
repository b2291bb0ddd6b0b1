"""Collect run records into comparison tables (the engine behind ``rdbench compare``).

Every run writes ``results/<suite>/<run>/seed<k>/record.json``. This module reads all of them,
averages each run over its successful seeds and renders one table per suite. It reads records
only, never checkpoints, so a comparison can be made from results copied off another machine.

Two rules keep the tables honest: failed seeds are counted and shown rather than dropped, and
seeds that used a different dataset (fingerprint) or backbone are never averaged together.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from tabulate import tabulate

from rdbench.errors import RdbenchError

SCHEMA_VERSION = 1
FORMATS = ("table", "markdown", "latex", "csv")
_TABLEFMT = {"table": "simple", "markdown": "github", "latex": "latex_booktabs"}

# Record metric -> column header; the order is the column order of every table.
SUMMARY_METRICS = {
    "val/mR": "val mR",
    "test/i2t_R@1": "I2T R@1",
    "test/i2t_R@5": "I2T R@5",
    "test/i2t_R@10": "I2T R@10",
    "test/t2i_R@1": "T2I R@1",
    "test/t2i_R@5": "T2I R@5",
    "test/t2i_R@10": "T2I R@10",
    "test/mR": "test mR",
}
# Explicit dtypes so that a column that is null in every record still has a usable type.
_BASE_SCHEMA = {
    "suite": pl.String, "run": pl.String, "run_index": pl.Int64, "seed": pl.Int64,
    "status": pl.String, "error": pl.String, "adapter": pl.String, "dataset": pl.String,
    "dataset_fingerprint": pl.String, "backbone": pl.String, "trainable_params": pl.Int64,
    "total_params": pl.Int64, "train_time_s": pl.Float64, "peak_mem_bytes": pl.Int64,
    "finished_at": pl.String, "path": pl.String,
}
# Seeds differing in any of these are different experiments, so they are never pooled.
_VARIANT_COLS = ("dataset", "dataset_fingerprint", "backbone")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_name(value) -> bool:
    return isinstance(value, str) and bool(value)


def _is_num(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _section(record: dict, name: str) -> dict:
    """Return an optional object field ({} when absent); any other type is a malformed record."""
    value = record.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"'{name}' is not an object")
    return value


def _flatten(record) -> dict:
    """Turn one schema-1 record into a flat row; ValueError names the first bad field."""
    if not isinstance(record, dict):
        raise ValueError("is not a JSON object")
    checks = {"suite": _is_name, "run": _is_name,
              "run_index": _is_int, "seed": _is_int, "status": lambda v: v in ("success", "failed")}
    for field, ok in checks.items():
        if field not in record:
            raise ValueError(f"lacks required field '{field}'")
        if not ok(record[field]):
            raise ValueError(f"field '{field}' has an invalid value {record[field]!r}")
    components, cost = _section(record, "components"), _section(record, "cost")
    provenance, metrics = _section(record, "provenance"), _section(record, "metrics")
    bad = [k for k, v in metrics.items() if v is not None and not _is_num(v)]
    if bad:
        raise ValueError(f"metric '{bad[0]}' is not a number")

    def key(section: dict, name: str, field: str = "key"):
        part = section.get(name)
        value = part.get(field) if isinstance(part, dict) else None
        return value if isinstance(value, str) else None

    row = {f: record[f] for f in ("suite", "run", "run_index", "seed", "status")}
    row["error"] = None if record.get("error") is None else str(record["error"])
    row["adapter"] = key(components, "adapter")
    # Provenance says what was actually used; components are the fallback for early failures.
    row["dataset"] = key(provenance, "dataset") or key(components, "dataset")
    row["dataset_fingerprint"] = key(provenance, "dataset", "fingerprint")
    row["backbone"] = key(provenance, "backbone") or key(components, "backbone")
    for field in ("trainable_params", "total_params", "peak_mem_bytes"):
        row[field] = cost.get(field) if _is_int(cost.get(field)) else None
    row["train_time_s"] = float(cost["train_time_s"]) if _is_num(cost.get("train_time_s")) else None
    finished = record.get("finished_at")
    row["finished_at"] = finished if isinstance(finished, str) else None
    row.update({f"metric:{k}": (None if v is None else float(v)) for k, v in metrics.items()})
    return row


def load_records(results_dir, suite: str | None = None) -> tuple[pl.DataFrame, list[str]]:
    """Read every ``record.json`` below ``results_dir`` into one row each, plus warnings.

    One unreadable file must not hide a whole benchmark, so bad files are reported in the
    warnings and skipped. Metric columns keep their record names (``test/mR``). With ``suite``
    only that suite's rows are returned; a suite with no records is an error listing the ones found.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise RdbenchError(f"{root}: results folder does not exist")
    warnings: list[str] = []
    rows: dict[tuple, dict] = {}
    for path in sorted(root.rglob("record.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            warnings.append(f"{path}: not readable as JSON ({exc}); skipped")
            continue
        version = record.get("schema_version") if isinstance(record, dict) else None
        if isinstance(record, dict) and version != SCHEMA_VERSION:
            warnings.append(f"{path}: schema_version {version!r} is not supported "
                            f"(expected {SCHEMA_VERSION}); skipped")
            continue
        try:
            row = _flatten(record)
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
    metric_cols = dict.fromkeys(k for r in rows.values() for k in r if k.startswith("metric:"))
    schema = {**_BASE_SCHEMA, **{k.removeprefix("metric:"): pl.Float64 for k in metric_cols}}
    data = [{k.removeprefix("metric:"): v for k, v in r.items()} for r in rows.values()]
    df = pl.DataFrame(data, schema=schema).sort("suite", "run_index", "run", "seed")
    if suite is not None:
        df = df.filter(pl.col("suite") == suite)
    return df, warnings


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
    """One row per (suite, run): seed counts, trainable parameters, mean/std of the key metrics.

    Means and stds use successful seeds only (sample std, ddof=1; one seed gives 0.0), while
    ``failed`` keeps failures visible. Rows are ordered by suite, then position in the suite file.
    Column ``base_run`` is the run name; ``run`` gets a suffix when seeds of one run used
    different datasets/backbones and had to be split.
    """
    missing = [m for m in SUMMARY_METRICS if m not in df.columns]
    df = df.with_columns(pl.lit(None, pl.Float64).alias(m) for m in missing)
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
        pl.coalesce(pl.col("trainable_params").filter(ok).drop_nulls().first(),
                    pl.col("trainable_params").drop_nulls().first()).alias("trainable_params"),
    ]
    for m in SUMMARY_METRICS:
        values = pl.col(m).filter(ok).drop_nulls()
        aggs += [values.mean().alias(f"{m}_mean"),
                 pl.when(values.len() > 1).then(values.std(ddof=1))
                 .when(values.len() == 1).then(pl.lit(0.0)).otherwise(None).alias(f"{m}_std")]
    out = df.group_by([*run_keys, *_VARIANT_COLS], maintain_order=True).agg(aggs)

    counts = out.group_by(run_keys).agg(
        pl.col(c).n_unique().alias(f"_n_{c}") for c in _VARIANT_COLS)
    labels = []
    for row in out.join(counts, on=run_keys, how="left").iter_rows(named=True):
        varies = {c for c in _VARIANT_COLS if row[f"_n_{c}"] > 1}
        labels.append(_variant_label(row["run"], row, varies) if varies else row["run"])
    out = out.rename({"run": "base_run"}).with_columns(pl.Series("run", labels, dtype=pl.String))
    front = ["suite", "run", "base_run", "run_index", *_VARIANT_COLS, "seeds", "failed",
             "trainable_params"]
    rest = [c for c in out.columns if c not in front]
    return out.select(*front, *rest).sort("suite", "run_index", "run")


def human_count(n) -> str:
    """Parameter counts as people quote them: ``0``, ``950``, ``12.3K``, ``1.05M``, ``151.28M``."""
    if n is None:
        return ""
    n = int(n)
    if abs(n) < 1000:
        return str(n)
    for scale, suffix, digits in ((1e3, "K", 1), (1e6, "M", 2), (1e9, "B", 2)):
        text = f"{n / scale:.{digits}f}"
        # Checked after rounding, so 999_960 reads 1.00M rather than 1000.0K.
        if abs(float(text)) < 1000 or suffix == "B":
            return text + suffix
    raise AssertionError("unreachable")


def _cell(mean, std, pm: str) -> str:
    return "" if mean is None else f"{mean:.2f} {pm} {0.0 if std is None else std:.2f}"


def render(summary: pl.DataFrame, fmt: str = "table") -> str:
    """Render :func:`summarize` output as one table per suite (``csv``: a single numeric table)."""
    if fmt not in FORMATS:
        raise RdbenchError(f"--format: unknown format '{fmt}' (valid: {', '.join(FORMATS)})")
    if fmt == "csv":
        # Spreadsheets and plotting scripts want numbers, so mean and std stay separate columns.
        cols = ["suite", "run", "seeds", "failed", "trainable_params"]
        cols += [f"{m}_{s}" for m in SUMMARY_METRICS for s in ("mean", "std")]
        return summary.select(cols).write_csv()
    headers = ["run", "seeds", "failed", "trainable", *SUMMARY_METRICS.values()]
    blocks = []
    for suite in summary["suite"].unique(maintain_order=True).to_list():
        rows = [[r["run"], str(r["seeds"]), str(r["failed"]), human_count(r["trainable_params"])]
                + [_cell(r[f"{m}_mean"], r[f"{m}_std"], "±") for m in SUMMARY_METRICS]
                for r in summary.filter(pl.col("suite") == suite).iter_rows(named=True)]
        table = tabulate(rows, headers=headers, tablefmt=_TABLEFMT[fmt], disable_numparse=True,
                         colalign=["left"] + ["right"] * (len(headers) - 1))
        if fmt == "latex":
            # tabulate escapes $ and \ in cells, so the math is substituted after rendering.
            blocks.append(f"% suite: {suite}\n" + table.replace("±", r"$\pm$"))
        elif fmt == "markdown":
            blocks.append(f"### {suite}\n\n{table}")
        else:
            blocks.append(f"{suite}\n\n{table}")
    return "\n\n".join(blocks) + "\n"


def compare(results_dir, suite: str | None = None, fmt: str = "table") -> tuple[str, list[str]]:
    """Load, summarize and render records: what ``rdbench compare`` prints (text, warnings)."""
    if fmt not in FORMATS:  # fail before reading a large results tree
        raise RdbenchError(f"--format: unknown format '{fmt}' (valid: {', '.join(FORMATS)})")
    df, warnings = load_records(results_dir, suite)
    summary = summarize(df)
    splits = summary.group_by("suite", "base_run", maintain_order=True).len()
    for row in splits.filter(pl.col("len") > 1).iter_rows(named=True):
        warnings.append(f"{row['suite']}/{row['base_run']}: seeds used different datasets or "
                        f"backbones; shown as {row['len']} separate rows, not averaged")
    return render(summary, fmt), warnings
