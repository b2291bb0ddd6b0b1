"""The table model behind every output format: columns, rows, deltas and footnotes of a suite.

Each format (terminal, Markdown, LaTeX, CSV, Parquet, plots) renders the same
:class:`SuiteTable`, so a number can never differ between the table an author reads in the
terminal and the one pasted into a paper. Everything a reader needs to interpret a cell (seed
counts, failures, which significance test, where a published row comes from) goes into the
footnotes here, once, as plain text; renderers only translate symbols. Cell formatting shared
with the renderers lives in :mod:`rdbench.results.cells`; this module imports no renderer.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path

import polars as pl

from rdbench.errors import RdbenchError
from rdbench.results import stats
from rdbench.results.cells import human_count
from rdbench.results.record import RANKS_FILE
from rdbench.results.references import DATASETS, dataset_name, other_split, reference_rows, split_text

DEFAULT_COLUMNS = ("trainable", *stats.TEST_RECALLS, "test/mR")
#: Marks of published rows, one per source table in the order they appear.
MARKS = ("†", "‡", "§", "¶", "‖")
#: Mark of rdbench rows measured on another test split than the published one of their dataset.
OTHER_SPLIT_MARK = "⋄"


@dataclass(frozen=True)
class Column:
    """How one column is labelled, formatted and ranked (``better``: which end LaTeX bolds)."""

    key: str
    header: str
    digits: int = 2
    better: str | None = "high"
    scale: float = 1.0
    count: bool = False  # parameter counts read as 1.05M rather than 1050000.00

    def text(self, value) -> str:
        if value is None:
            return ""
        return human_count(value) if self.count else f"{value * self.scale:.{self.digits}f}"


def column_for(key: str) -> Column:
    """The :class:`Column` of a summary key such as ``test/mR`` or ``train/loss/infonce``."""
    if key == "trainable":
        return Column(key, "trainable", better=None)
    split, _, name = key.partition("/")
    if split in ("test", "val") and name:
        pretty = name.replace("i2t", "I2T").replace("t2i", "T2I").replace("_", " ")
        return Column(key, pretty if split == "test" else f"{split} {pretty}")
    fixed = {"train_time_s": Column(key, "train time (s)", 1, "low"),
             "peak_mem_bytes": Column(key, "peak mem (GiB)", 2, "low", scale=2.0 ** -30),
             "total_params": Column(key, "total params", better=None, count=True)}
    if key in fixed:
        return fixed[key]
    if split == "train":
        # A lower final loss is "better" only for loss terms, never for weights or step counts.
        digits = 0 if name in ("epochs", "steps") else 4
        return Column(key, name, digits, "low" if name.startswith("loss") else None)
    return Column(key, key)


def select_columns(spec: list[str] | None, summary: pl.DataFrame) -> list[Column]:
    """Resolve ``--columns`` names (``default``, ``mR``, ``val/mR``, ``train_time_s``, ...)."""
    available = [c.removesuffix("_mean") for c in summary.columns if c.endswith("_mean")]
    keys: list[str] = []
    for name in spec or ["default"]:
        if name == "default":
            keys += DEFAULT_COLUMNS
            continue
        key = "trainable" if name == "trainable_params" else name
        if key not in available and key != "trainable" and f"test/{key}" in available:
            key = f"test/{key}"  # test metrics may be named without their split
        if key not in available and key not in DEFAULT_COLUMNS:
            raise RdbenchError(f"--columns: unknown column '{name}' (available: default, "
                               f"trainable, {', '.join(sorted(available))})")
        keys.append(key)
    return [column_for(k) for k in dict.fromkeys(keys)]


def trainable_text(trainable, backbone_params) -> str:
    """``0.16M (0.11%)``: the count and its share of the backbone's parameters."""
    if trainable is None:
        return ""
    # PEFT papers quote every count in millions; below 0.01M that would print 0.00M.
    count = f"{trainable / 1e6:.2f}M" if trainable >= 5_000 else human_count(trainable)
    if trainable == 0 or not backbone_params:
        return count
    pct = 100.0 * trainable / backbone_params
    share = "<0.01" if pct < 0.01 else f"{pct:.0f}" if pct >= 99.995 else f"{pct:.2f}"
    return f"{count} ({share}%)"


@dataclass
class Row:
    label: str
    values: dict[str, tuple[float | None, float | None]]  # key -> (mean, std)
    trainable: str = ""
    trainable_params: int | None = None
    seeds: int | None = None  # None marks a published row
    failed: int = 0
    incomplete: int = 0
    deltas: dict[str, stats.Delta] = field(default_factory=dict)
    data: dict = field(default_factory=dict)  # the summary row (rdbench rows only)
    #: Set on rdbench's own rows recomputed under a published row's evaluation code (shown in
    #: the published block beside those rows, never tested).
    lineage: str | None = None
    #: Appended to the label when shown: :data:`OTHER_SPLIT_MARK` on rows measured on another
    #: test split than the published one (explained in the footnotes).
    mark: str = ""

    @property
    def published(self) -> bool:
        return self.seeds is None

    @property
    def shown_label(self) -> str:
        return self.label + self.mark


@dataclass
class SuiteTable:
    suite: str
    columns: list[Column]
    rows: list[Row]
    published: list[Row]
    baseline: str | None
    footnotes: list[str]
    sources: dict[str, str] = field(default_factory=dict)  # mark -> citation
    lineage_note: str | None = None  # what the "[<lineage> eval]" rows are, when present
    unmatched: list[str] = field(default_factory=list)  # rows without a comparable baseline

    @property
    def value_columns(self) -> list[Column]:
        return [c for c in self.columns if c.key != "trainable"]


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
               mark=OTHER_SPLIT_MARK if _other_split(data) else "")


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


def _ranks_paths(row: Row) -> list[str]:
    return [str(Path(p).parent / RANKS_FILE) for p in row.data["paths"]]


def _deltas(row: Row, base: Row, columns: list[Column], df: pl.DataFrame, n_boot: int, seed: int,
            hits_cache: dict, warnings: list[str], tie_rule: str = "strict") -> None:
    """Fill ``row.deltas`` against ``base`` for every shown value column."""
    def per_seed(r: Row, key: str) -> list[float]:
        if key not in df.columns:
            return []
        return df.filter(pl.col("path").is_in(r.data["paths"]))[key].drop_nulls().to_list()

    def hits(r: Row):
        if r.label not in hits_cache:
            try:
                hits_cache[r.label] = stats.load_hits(_ranks_paths(r))
            except ValueError as exc:
                warnings.append(f"{exc}; no bootstrap for {r.data['suite']}/{r.label}")
                hits_cache[r.label] = None
        return hits_cache[r.label]

    boot, row_hits, base_hits = None, None, None
    # per-query hits are kept under the strict rule only: no bootstrap for a lineage's recalls
    needs_boot = tie_rule == "strict" and any(c.key in stats.BOOTSTRAP_METRICS for c in columns)
    if needs_boot:
        row_hits, base_hits = hits(row), hits(base)
        if row_hits is not None and base_hits is not None:
            try:
                boot = stats.two_level_bootstrap(row_hits, base_hits, n_boot, seed)
            except ValueError as exc:
                warnings.append(f"{row.data['suite']}/{row.label}: {exc}; no bootstrap")
    for c in columns:
        mean, base_mean = row.values[c.key][0], base.values[c.key][0]
        delta = None if mean is None or base_mean is None else mean - base_mean
        row.deltas[c.key] = stats.choose_delta(c.key, delta, per_seed(row, c.key),
                                               per_seed(base, c.key), row_hits, base_hits, boot)


def _holm(table: SuiteTable) -> int:
    """Replace every tested delta's significance by Holm's over the table; the number of tests."""
    tested = [(row, key) for row in table.rows for key, d in row.deltas.items() if d.p is not None]
    adjusted = stats.holm([row.deltas[key].p for row, key in tested])
    for (row, key), p_holm in zip(tested, adjusted):
        row.deltas[key] = replace(row.deltas[key], p_holm=p_holm, significant=p_holm < stats.ALPHA)
    return len(tested)


def _mdd(table: SuiteTable) -> float | None:
    """Median over rows of the minimum detectable test-mR difference (two-level bootstrap SE)."""
    ses = [row.deltas["test/mR"].se for row in table.rows
           if "test/mR" in row.deltas and row.deltas["test/mR"].se is not None]
    return (stats.Z_975 + stats.Z_80) * statistics.median(ses) if ses else None


def _test_footnotes(table: SuiteTable, n_boot: int, seed: int) -> list[str]:
    """Which test each delta used, grouped by test, so that no asterisk is unexplained."""
    texts = {"welch": ("Welch's t-test across seeds (no per-query ranks, 3 or more seeds in both runs; "
                       "two-sided p)"),
             "bootstrap": (f"two-level bootstrap over seeds and test queries (seeds resampled per run, "
                           f"queries resampled paired; B = {n_boot}, seed {seed}; two-sided p)")}
    groups: dict[str, list[str]] = {}
    untested: dict[str, list[str]] = {}  # reason -> "row: columns"
    for row in table.rows:
        for test in sorted({d.test for d in row.deltas.values() if d.test}):
            groups.setdefault(test, []).append(row.label)
        skipped: dict[str, list[str]] = {}
        for key, d in row.deltas.items():
            if d.delta is not None and d.test is None:
                skipped.setdefault(d.why_untested, []).append(column_for(key).header)
        for why, headers in skipped.items():
            untested.setdefault(why, []).append(f"{row.label} ({', '.join(headers)})")
    lines = [f"Test for {', '.join(labels)}: {texts[test]}." for test, labels in groups.items()]
    lines += [f"Not tested, {why}: {'; '.join(items)}." for why, items in untested.items()]
    mdd = _mdd(table)
    if mdd is not None:
        lines.append(f"Minimum detectable mR difference at 80 % power: {mdd:.2f} points.")
    return lines


def _footnotes(table: SuiteTable, rows_data: list[dict], n_boot: int, seed: int) -> list[str]:
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
        notes += _test_footnotes(table, n_boot, seed)
        if table.unmatched:
            notes.append(f"No Δ for {', '.join(table.unmatched)}: no successful baseline seed "
                         "on the same dataset and backbone.")
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
                 n_boot: int = 1000, seed: int = 0, tie_rule: str = "strict",
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
        table = SuiteTable(suite, columns, rows, [], None, [])
        if baseline is not None:
            _attach_baseline(table, baseline, df, n_boot, seed, notes, warnings, tie_rule)
        if references:
            _attach_references(table, data, names, notes)
        table.footnotes = _footnotes(table, data, n_boot, seed)
        if tie_rule != "strict":
            table.footnotes.insert(1, f"Test recalls under the {tie_rule} evaluation code's tie handling "
                                      "(docs/metric.md), not rdbench's strict rule; per-query tests use the strict "
                                      "rule only.")
        tables.append(table)
    return tables, notes


def _attach_baseline(table: SuiteTable, baseline: str, df: pl.DataFrame, n_boot: int, seed: int,
                     notes: list[str], warnings: list[str], tie_rule: str = "strict") -> None:
    """Compare every row with the baseline variant that used the same data and backbone."""
    variants = [r for r in table.rows if baseline in (r.label, r.data["base_run"])]
    if not variants:
        notes.append(f"note: suite '{table.suite}' has no run '{baseline}'; no deltas shown")
        return
    table.baseline = variants[0].label if len(variants) == 1 else baseline
    setup = ("dataset", "dataset_fingerprint", "backbone")
    cache: dict = {}
    for row in table.rows:
        match = [b for b in variants if all(b.data[k] == row.data[k] for k in setup)]
        if match and match[0] is row or not row.seeds:
            continue
        if not match or not match[0].seeds:
            table.unmatched.append(row.label)
            continue
        _deltas(row, match[0], table.value_columns, df, n_boot, seed, cache, warnings, tie_rule)
    _holm(table)


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
