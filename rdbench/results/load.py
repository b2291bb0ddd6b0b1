"""Reading run records into one frame: the first step of ``rdbench compare`` and ``rdbench report``.

Every run writes ``results/<suite>/<run>/seed<k>/record.json``. This module reads all of them
(through :meth:`rdbench.results.record.Record.from_json`, the one reader of records, which
accepts schema versions 1 and 2) into one flat row per seed, and picks the runs a table shows
(:func:`select_runs`). One unreadable file must not hide a whole benchmark, so bad files become
warnings; copies of one seed (results merged from two machines) are kept once.
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path

import polars as pl

from rdbench.diagnostics.columns import flatten as diagnostic_values
from rdbench.errors import RdbenchError
from rdbench.results.record import RECORD_FILE, Record
from rdbench.results.references import split_geometry
from rdbench.results.selection import search_of

# Explicit dtypes so that a column that is null in every record still has a usable type.
_BASE_SCHEMA = {
    "suite": pl.String, "run": pl.String, "run_index": pl.Int64, "seed": pl.Int64,
    "status": pl.String, "error": pl.String, "adapter": pl.String, "dataset": pl.String,
    "dataset_fingerprint": pl.String, "backbone": pl.String, "trainable_params": pl.Int64,
    "adapter_params": pl.Int64, "total_params": pl.Int64, "backbone_params": pl.Int64, "train_time_s": pl.Float64,
    "peak_mem_bytes": pl.Int64, "finished_at": pl.String, "schema_version": pl.Int64, "path": pl.String,
    "purpose": pl.String, "test_images": pl.Int64, "test_captions": pl.Int64, "backbone_detail": pl.String,
    # JSON text of the hyper-parameter search (rdbench.results.selection), and what code wrote it.
    "chosen": pl.String, "search": pl.String, "code_version": pl.String,
    # The optimiser's peak learning rate as it ran: what a table without a search states.
    "lr": pl.Float64,
}
# Seeds differing in any of these are different experiments, so they are never pooled.
_VARIANT_COLS = ("dataset", "dataset_fingerprint", "backbone")
#: Run names that ``rdbench tune`` gives its trials (``tune-<study>/trial<k>``): records written
#: before ``purpose`` existed are known as trials by this name.
_TRIAL_NAME = re.compile(r"^tune-.+/trial\d+$")

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
    search = search_of(record.selection)
    # In the record's order (a grid's file order), which is how the chosen cell lists them.
    row["chosen"] = json.dumps(search["chosen"]) if search else None
    row["search"] = json.dumps(search) if search else None
    lr = (components.get("optimizer") or {}).get("init_args", {}).get("lr") if isinstance(components.get("optimizer"), dict) else None
    row["lr"] = float(lr) if _is_num(lr) else None
    version = provenance.get("code_version")
    row["code_version"] = version if isinstance(version, str) else None
    row.update({f"value:{k}": v for k, v in record.metrics.items()})
    row.update({f"value:{k}": v for k, v in diagnostic_values(record.diagnostics).items()})
    # Training summaries are informative only, so a non-number there is skipped, not fatal.
    row.update({f"value:{k if k.startswith('train/') else 'train/' + k}": float(v)
                for k, v in record.train.items() if _is_num(v)})
    return row


def _fits_the_table(row: dict) -> None:
    """Raise ValueError when a field's value cannot sit in the table's column (a 20-digit seed
    in an Int64 column, say): that record is skipped with a warning, the others are compared."""
    try:
        pl.DataFrame([{k: row[k] for k in _BASE_SCHEMA if k in row}],
                     schema={k: t for k, t in _BASE_SCHEMA.items() if k in row})
        pl.DataFrame([{k: v for k, v in row.items() if k.startswith("value:")}],
                     schema={k: pl.Float64 for k in row if k.startswith("value:")})
    except (pl.exceptions.PolarsError, TypeError, ValueError, OverflowError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"a field's value does not fit the table ({first})") from None


def countable(record: Record) -> bool:
    """Whether ``rdbench compare`` would count ``record`` (``rdbench run`` skips only those)."""
    try:
        _fits_the_table(_flatten(record))
    except ValueError:
        return False
    return True


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
            _fits_the_table(row)
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
                           + (f" ({len(warnings)} skipped; the first: {warnings[0]})" if warnings else ""))
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


