"""The table model every output format renders: columns, rows and the suite table.

Each format (terminal, Markdown, LaTeX, CSV, Parquet, plots, ``rdbench report``) renders the
same :class:`SuiteTable`, so a number can never differ between the table an author reads in the
terminal and the one pasted into a paper. The table is built by :mod:`rdbench.results.tables`
(rows, references, footnotes) and :mod:`rdbench.results.deltas` (differences and their tests);
this module holds only the types, so that both can import them without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from rdbench.diagnostics.columns import DEFAULT as DIAGNOSTIC_COLUMNS
from rdbench.diagnostics.columns import header as diagnostic_header
from rdbench.errors import RdbenchError
from rdbench.results import stats
from rdbench.results.cells import human_count

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
    if split == "diag" and diagnostic_header(key):
        # descriptive quantities: neither end is "better" (a smaller gap is the claim under test)
        return Column(key, diagnostic_header(key), 3, None)
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
        if name == "diagnostics":  # those the records hold (older records have none)
            keys += [k for k in DIAGNOSTIC_COLUMNS if k in available]
            continue
        key = "trainable" if name == "trainable_params" else name
        if key not in available and key != "trainable" and f"test/{key}" in available:
            key = f"test/{key}"  # test metrics may be named without their split
        if key not in available and key not in DEFAULT_COLUMNS:
            raise RdbenchError(f"--columns: unknown column '{name}' (available: default, diagnostics, "
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
    #: The hyper-parameters a search chose for this run (``lr=1e-3``; see
    #: :mod:`rdbench.results.selection`), shown when any row of the table had a search.
    chosen: str = ""

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
    #: Bootstrap resamples used for this table's Δs (None when nothing was bootstrapped), and
    #: the number of tests Holm's correction covered.
    resamples: int | None = None
    n_tests: int = 0
    #: Whether a ``chosen`` column is shown: some row's records state a hyper-parameter search.
    show_chosen: bool = False

    @property
    def value_columns(self) -> list[Column]:
        return [c for c in self.columns if c.key != "trainable"]
