"""``rdbench data verify``: is this folder the dataset the published numbers were measured on?

Before hours of training, a user wants to know that every image opens, that the splits have
the sizes they should, and which quirks the annotations carry (RSICD repeats captions across
images, which makes ties in the metric). The report names every missing or unreadable image
(errors: the run would fail on them), warns when the test split is not the canonical one (the
numbers would not be comparable with published ones), and ends with the table's fingerprint.

The table checked is the one a run uses, ``load_table()`` of the dataset component with the
same arguments (split scheme and exclusion applied), so that the fingerprint printed is the
one every record of such a run carries (``rdbench.training.execute``): there is one
fingerprint, :func:`rdbench.data.table.table_fingerprint` of that table.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

import polars as pl

from rdbench.data.loading.images import open_rgb, parallel_map
from rdbench.data.table import SPLITS, table_fingerprint
from rdbench.errors import DataError


@dataclass
class Report:
    """What verification found: printable lines, and the errors and warnings among them."""

    lines: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, line: str = "") -> None:
        self.lines.append(line)

    def error(self, line: str) -> None:
        self.errors.append(line)
        self.lines.append(f"error: {line}")

    def warn(self, line: str) -> None:
        self.warnings.append(line)
        self.lines.append(f"warning: {line}")

    def text(self) -> str:
        return "\n".join(self.lines)


def split_counts(table: pl.DataFrame) -> list[dict[str, object]]:
    """Per split: images, captions, captions per image (min-max), distinct captions, classes."""
    rows = []
    for split in SPLITS:
        part = table.filter(pl.col("split") == split)
        if part.height == 0:
            continue
        per_image = part.group_by("image_id").len()["len"]
        images = part.unique("image_id")
        low, high = int(per_image.min()), int(per_image.max())
        rows.append({
            "split": split, "images": images.height, "captions": part.height,
            "per image": str(low) if low == high else f"{low}-{high}",
            "distinct captions": part["caption"].n_unique(),
            "classes": images["label"].drop_nulls().n_unique(),
            "no class": images["label"].null_count(),
        })
    return rows


def _check_one(path: str) -> tuple[str, str | None, tuple[int, int] | None]:
    if not os.path.exists(path):
        return path, "missing", None
    try:
        img = open_rgb(path)
    except DataError as error:
        return path, str(error).split(": ", 1)[-1], None
    return path, None, img.size


def verify_table(table: pl.DataFrame, title: str, canonical_test: tuple[int, int] | None = None,
                 dataset: str = "dataset", notes: list[str] | tuple[str, ...] = ()) -> Report:
    """Check ``table`` (the table a run uses) and every image it names; see the module
    docstring. ``notes`` (how the splits came about) are printed below the title."""
    from tabulate import tabulate

    report = Report()
    report.add(title)
    for note in notes:
        report.add(note)
    counts = split_counts(table)
    report.add(tabulate([list(r.values()) for r in counts], headers=list(counts[0]) if counts else [],
                        tablefmt="simple", intfmt=","))
    missing_splits = [s for s in SPLITS if s not in {r["split"] for r in counts}]
    if missing_splits:
        report.add(f"no {' or '.join(missing_splits)} split"
                   + (" (a run selects its checkpoint on val: split_scheme auto or carve carves one from train)"
                      if "val" in missing_splits else ""))

    images = table.unique("path", keep="first", maintain_order=True).select("path", "image_id", "split")
    where = {p: (i, s) for p, i, s in images.iter_rows()}
    results = parallel_map(_check_one, images["path"].to_list())
    missing = [p for p, problem, _ in results if problem == "missing"]
    broken = [(p, problem) for p, problem, _ in results if problem not in (None, "missing")]
    sizes = Counter(f"{s[0]}x{s[1]}" for _, _, s in results if s is not None)
    report.add(f"images checked: {len(results):,}; sizes: "
               + (", ".join(f"{k} ({v:,})" for k, v in sizes.most_common(4)) or "none readable")
               + (f", {len(sizes) - 4} more" if len(sizes) > 4 else ""))
    for path in missing:
        report.error(f"{path}: image file not found ({where[path][1]} image '{where[path][0]}')")
    for path, problem in broken:
        report.error(f"{path}: {problem} ({where[path][1]} image '{where[path][0]}')")

    _shared_captions(table, report)
    _canonical(table, canonical_test, dataset, report)
    report.add(f"fingerprint: {table_fingerprint(table)['sha256']} (the records of runs on this dataset spec carry it)")
    verdict = f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)"
    report.add(f"{verdict}" + ("" if report.errors else "; the data is usable"))
    return report


def _shared_captions(table: pl.DataFrame, report: Report) -> None:
    # A caption shared by two images is a positive of both: in the test split it produces ties
    # in the metric, which the evaluator counts against the query (docs/metric.md, "Ties").
    for split in ("all", "test"):
        part = table if split == "all" else table.filter(pl.col("split") == "test")
        shared = (part.group_by("caption").agg(pl.col("image_id").n_unique().alias("images"))
                      .filter(pl.col("images") > 1).sort(["images", "caption"], descending=[True, False]))
        if shared.height == 0:
            report.add(f"captions shared across images ({split}): none")
            continue
        involved = part.filter(pl.col("caption").is_in(shared["caption"].implode()))["image_id"].n_unique()
        top = "; ".join(f'"{c}" x{n}' for c, n in shared.head(3).iter_rows())
        report.add(f"captions shared across images ({split}): {shared.height:,} distinct captions on "
                   f"{involved:,} images, e.g. {top}")


def _canonical(table: pl.DataFrame, canonical: tuple[int, int] | None, dataset: str, report: Report) -> None:
    test = table.filter(pl.col("split") == "test")
    got = (test["image_id"].n_unique(), test.height)
    if canonical is None:
        report.add(f"test split: {got[0]:,} images / {got[1]:,} captions (no canonical size known for {dataset})")
    elif got == canonical:
        report.add(f"test split: {got[0]:,} images / {got[1]:,} captions, the canonical {dataset.upper()} test split")
    else:
        report.warn(f"test split has {got[0]:,} images / {got[1]:,} captions; the canonical {dataset.upper()} "
                    f"test split has {canonical[0]:,} / {canonical[1]:,}, so results are not comparable "
                    "with published ones")
