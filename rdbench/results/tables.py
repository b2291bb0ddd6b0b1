"""Building the suite tables that every output format renders: rows, references and footnotes.

Each format (terminal, Markdown, LaTeX, CSV, Parquet, plots, ``rdbench report``) renders the
same :class:`~rdbench.results.model.SuiteTable`, so a number can never differ between the table
an author reads in the terminal and the one pasted into a paper. Everything a reader needs to
interpret a cell (seed counts, failures, which significance test, where a published row comes
from, how hyper-parameters were chosen) goes into the footnotes here, once, as plain text;
renderers only translate symbols. The types are in :mod:`rdbench.results.model`, the Δs and
their tests in :mod:`rdbench.results.deltas`, cell formatting in :mod:`rdbench.results.cells`;
this module imports no renderer.
"""

from __future__ import annotations

import polars as pl

from rdbench.errors import RdbenchError
from rdbench.results import selection
from rdbench.results.deltas import attach_baseline, test_footnotes
from rdbench.results.model import (  # noqa: F401  (re-exported: the names callers know)
    DEFAULT_COLUMNS, MARKS, OTHER_SPLIT_MARK, Column, Row, SuiteTable, column_for, select_columns,
    trainable_text,
)
from rdbench.results.references import DATASETS, dataset_name, other_split, reference_rows, split_text


def _other_split(data: dict) -> tuple[int, int] | None:
    """The published test split of the row's dataset when the row was measured on another one."""
    return other_split(data["dataset"], data.get("test_images"), data.get("test_captions"))


def _std(data: dict, name: str) -> float | None:
    """The std shown beside a mean: none for one seed (its 0.0 would read as "no spread")."""
    return None if data.get("seeds") == 1 else data.get(f"{name}_std")


def _row(data: dict, columns: list[Column]) -> Row:
    values = {c.key: (data.get(f"{c.key}_mean"), _std(data, c.key)) for c in columns}
    return Row(data["run"], values, trainable_text(data["trainable_params"], data["backbone_params"]),
               data["trainable_params"], data["seeds"], data["failed"], data["incomplete"], data=data,
               mark=OTHER_SPLIT_MARK if _other_split(data) else "", chosen=selection.cell(data))


def _split_groups(rows: list[Row]) -> dict[tuple, list[str]]:
    """(dataset, images, captions, canonical) -> labels of the rows measured on that other split."""
    groups: dict[tuple, list[str]] = {}
    for row in rows:
        canonical = _other_split(row.data)
        if canonical:
            d = row.data
            groups.setdefault((d["dataset"], d["test_images"], d["test_captions"], canonical), []).append(row.label)
    return groups


def _split_text(dataset: str, n_images, n_captions, canonical) -> str:
    return (f"{dataset}'s test split here has {split_text(n_images, n_captions)}, the published "
            f"{dataset_name(dataset).upper()} test split {canonical[0]:,} and {canonical[1]:,}")


def check_splits(tables_rows: dict[str, list[Row]]) -> None:
    """Refuse to set published rows beside rows measured on another test split (one line naming
    the rows, the split sizes and the flag that shows them anyway)."""
    parts = []
    for suite, rows in tables_rows.items():
        for (dataset, n_img, n_cap, canonical), labels in _split_groups(rows).items():
            parts.append(f"{', '.join(f'{suite}/{label}' for label in labels)} "
                         f"({_split_text(dataset, n_img, n_cap, canonical)})")
    if parts:
        raise RdbenchError("--references: not measured on the published test split, so not comparable "
                           f"with published rows: {'; '.join(parts)}; --allow-other-splits shows them "
                           f"anyway, marked {OTHER_SPLIT_MARK}")


def _backbone_setup(d: dict) -> list[str]:
    """``backbone/open-clip (ViT-B-32, RS5M_ViT-B-32.pt, sha256 1a2b3c4d)``, once per checkpoint."""
    key = d["backbone"] or "?"
    return [f"{key} ({detail})" for detail in d.get("backbone_details") or []] or [key]


def _footnotes(table: SuiteTable, rows_data: list[dict], n_boot: int | None, seed: int) -> list[str]:
    notes = []
    counts = {r.label: r.seeds for r in table.rows if r.seeds}
    # LaTeX has no seeds column, so a non-uniform count is spelled out per row.
    if not counts:
        notes.append("No successful seed yet: nothing to average.")
    elif len(set(counts.values())) == 1:
        k = next(iter(counts.values()))
        notes.append(f"Mean ± std over {k} seeds (successful seeds only); recalls in %." if k != 1
                     else "Mean over 1 seed (successful seeds only; no std); recalls in %.")
    else:
        each = ", ".join(f"{label} {k}" for label, k in counts.items())
        notes.append(f"Mean ± std over successful seeds ({each}); recalls in %.")
    failed = [f"{r.label} {r.failed}" for r in table.rows if r.failed]
    unfinished = [f"{r.label} {r.incomplete}" for r in table.rows if r.incomplete]
    if failed:
        notes.append(f"Failed seeds, counted but not averaged: {', '.join(failed)}.")
    if unfinished:
        notes.append(f"Unfinished seeds (status neither success nor failed): {', '.join(unfinished)}.")
    if table.baseline is not None:
        n_tests = sum(d.p is not None for row in table.rows for d in row.deltas.values())
        notes.append(f"Δ: row mean minus {table.baseline} mean; * significant at 95%"
                     + (f" after Holm correction over the {n_tests} test{'s' * (n_tests != 1)} of this "
                        "table (Holm-adjusted p < 0.05)." if n_tests else "."))
        notes += test_footnotes(table, n_boot, seed)
        if table.unmatched:
            notes.append(f"No Δ for {', '.join(table.unmatched)}: no successful baseline seed "
                         "on the same dataset and backbone.")
    notes += [n for n in (selection.budget_note(table.rows), selection.differs_note(table.rows)) if n]
    # Rows with results say what was measured; a seed that failed early may lack provenance.
    measured = [d for d in rows_data if d["seeds"]] or rows_data
    setups = dict.fromkeys(
        f"{d['dataset'] or '?'}" + (f" (fingerprint {d['dataset_fingerprint'][:8]})"
                                   if d["dataset_fingerprint"] else "")
        + f", {backbone}" for d in measured for backbone in _backbone_setup(d))
    notes.append(f"Measured by rdbench on {'; '.join(setups)}.")
    for (dataset, n_img, n_cap, canonical), labels in _split_groups(table.rows).items():
        notes.append(f"{OTHER_SPLIT_MARK} Not the published test split: {_split_text(dataset, n_img, n_cap, canonical)} "
                     f"({', '.join(labels)}); not comparable with published numbers.")
    if table.lineage_note:
        notes.append(table.lineage_note)
    for mark, source in table.sources.items():
        notes.append(f"{mark} Published, not rerun: {source}.")
    return notes


def build_tables(summary: pl.DataFrame, df: pl.DataFrame, columns: list[Column], *,
                 baseline: str | None = None, references: bool | list[str] = False,
                 n_boot: int | None = None, seed: int = 0, tie_rule: str = "strict",
                 warnings: list[str] | None = None,
                 allow_other_splits: bool = False) -> tuple[list[SuiteTable], list[str]]:
    """One :class:`SuiteTable` per suite, plus notes for the user (not for the paper).

    Rows measured on another test split than their dataset's published one are marked
    :data:`OTHER_SPLIT_MARK`, with a footnote; with ``references`` such rows are an error unless
    ``allow_other_splits`` (:func:`check_splits`)."""
    warnings = [] if warnings is None else warnings
    notes: list[str] = []
    suites = summary["suite"].unique(maintain_order=True).to_list()
    if baseline is not None and summary.filter(
            (pl.col("base_run") == baseline) | (pl.col("run") == baseline)).is_empty():
        runs = ", ".join(summary["run"].unique(maintain_order=True).to_list())
        raise RdbenchError(f"--baseline: no run '{baseline}' in the records (runs: {runs})")
    names = None if references is True else references or None
    if names:
        reference_rows(DATASETS[0], names)  # an unknown source name is an error on any suite
    suite_rows = {}
    for suite in suites:
        data = summary.filter(pl.col("suite") == suite).to_dicts()
        suite_rows[suite] = (data, [_row(d, columns) for d in data])
    if references and not allow_other_splits:
        check_splits({suite: rows for suite, (_, rows) in suite_rows.items()})
    tables = []
    for suite, (data, rows) in suite_rows.items():
        table = SuiteTable(suite, columns, rows, [], None, [],
                           show_chosen=any(r.chosen != selection.NO_SEARCH for r in rows))
        if baseline is not None:
            attach_baseline(table, baseline, df, n_boot, seed, notes, warnings, tie_rule)
        if references:
            _attach_references(table, data, names, notes)
        table.footnotes = _footnotes(table, data, n_boot, seed)
        if tie_rule != "strict":
            table.footnotes.insert(1, f"Test recalls under the {tie_rule} evaluation code's tie handling "
                                      "(docs/metric.md), not rdbench's strict rule; per-query tests use the strict "
                                      "rule only.")
        tables.append(table)
    return tables, notes


def _attach_references(table: SuiteTable, data: list[dict], names, notes: list[str]) -> None:
    """Published rows, each set beside rdbench's rows recomputed under the evaluation code that
    produced it (its lineage: the rows labelled ``run [<lineage> eval]``), so that a published
    number is compared with an rdbench number computed the same way (docs/metric.md)."""
    keys = list(dict.fromkeys(d["dataset"] for d in data if d["dataset"]))
    known = [k for k in keys if dataset_name(k)]
    for key in keys:
        if not dataset_name(key):
            notes.append(f"note: suite '{table.suite}' uses {key}; published rows exist only for "
                         f"{', '.join('dataset/' + d for d in DATASETS)}")
    marks: dict[str, str] = {}
    by_lineage: dict[str, list[Row]] = {}
    for key in known:
        for ref in reference_rows(dataset_name(key), names):
            if ref.name not in marks:
                marks[ref.name] = MARKS[len(marks) % len(MARKS)]
                table.sources[marks[ref.name]] = f"{ref.citation}; evaluated with the {ref.lineage} code"
            label = ref.method + (f" [{dataset_name(key)}]" if len(known) > 1 else "")
            values = {c.key: (ref.values.get(c.key), None) for c in table.value_columns}
            by_lineage.setdefault(ref.lineage, []).append(
                Row(label + marks[ref.name], values, ref.trainable or "", data={"source": ref.name}))
    for lineage, published in by_lineage.items():
        table.published += [_under(row, lineage, table.value_columns) for row in table.rows if row.seeds]
        table.published += published
    if by_lineage:
        table.lineage_note = (
            "Beside the published rows, rdbench's rows recomputed from the same embeddings under the "
            "evaluation code each published table came from (" + ", ".join(
                f"[{lineage} eval]" for lineage in by_lineage) + "; docs/metric.md); the rows above keep "
            "rdbench's strict tie rule.")


def _under(row: Row, lineage: str, columns: list[Column]) -> Row:
    """``row``'s test recalls as the ``lineage`` evaluation code computes them (recorded as
    ``test@<lineage>/...``); other columns stay empty."""
    def value(key: str) -> tuple[float | None, float | None]:
        if not key.startswith("test/"):
            return None, None
        name = f"test@{lineage}/{key.removeprefix('test/')}"
        return row.data.get(f"{name}_mean"), _std(row.data, name)

    return Row(f"{row.label} [{lineage} eval]", {c.key: value(c.key) for c in columns}, row.trainable,
               row.trainable_params, row.seeds, row.failed, row.incomplete, data=row.data, lineage=lineage,
               mark=row.mark)
