"""Split schemes: which images of a caption table are train, val and test.

Model selection needs a validation split (docs/metric.md, "Protocol"), yet formats B and D, and RSITMD's
original release, have none. Three schemes cover the published practice:

``native``  the splits the annotation files give, unchanged;
``pir``     the PIR/HarMA splits (RSICD 7,862 / 1,966 / 1,093, RSITMD 3,435 / 856 / 452), taken
            from format-C files in the same folder, whatever format the captions were read from;
``carve``   a validation split carved from train: seeded, stratified by scene class, so that a
            20 % carve of a 30-class train split keeps every class's share. The test split is
            never touched, so numbers stay comparable with published ones.

``auto`` (the default of the dataset components) is ``native`` when the files give a
validation split and ``carve`` otherwise. The default fraction, 0.2, is the PIR/HarMA share.

Exclusion removes from train and val the images an overlap list names (``rdbench data
overlap``), so a model trained on RSICD is not tested on RSITMD images it has seen.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import polars as pl

from rdbench.data.table import sort_table
from rdbench.errors import DataError

SCHEMES = ("auto", "native", "pir", "carve")
DEFAULT_VAL_FRACTION = 0.2


def split_images(table: pl.DataFrame, split: str) -> pl.DataFrame:
    """One row per image of ``split``: image id and label, in table order."""
    return (table.filter(pl.col("split") == split)
                 .unique("image_id", keep="first", maintain_order=True)
                 .select("image_id", "label"))


def has_split(table: pl.DataFrame, split: str) -> bool:
    return table.filter(pl.col("split") == split).height > 0


def carve_validation(table: pl.DataFrame, fraction: float = DEFAULT_VAL_FRACTION,
                     seed: int = 0) -> pl.DataFrame:
    """Move ``round(fraction * train images)`` train images to val, stratified by scene class.

    Each class (images without one form their own group) gives ``fraction`` of its images;
    the rounding remainders go to the classes with the largest ones, ties broken by name, so
    the total is exact. Which images go is a seeded permutation per class (seeded by ``seed`` and
    the class name, from the sorted image ids), so it depends neither on the file's order nor on
    the other classes. Raises if the table already has a val split.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {fraction}")
    if has_split(table, "val"):
        raise DataError(f"{_sources(table)}: already has a val split; use split_scheme 'native'")
    train = split_images(table, "train")
    if train.height < 2:
        raise DataError(f"{_sources(table)}: {train.height} train image(s), too few to carve a "
                        "validation split from")
    groups: dict[str, list[str]] = {}
    for image_id, label in train.iter_rows():
        groups.setdefault("" if label is None else label, []).append(image_id)
    target = max(1, round(fraction * train.height))
    exact = {label: fraction * len(ids) for label, ids in groups.items()}
    counts = {label: int(np.floor(value)) for label, value in exact.items()}
    leftover = target - sum(counts.values())
    by_remainder = sorted(groups, key=lambda label: (-(exact[label] - counts[label]), label))
    for label in by_remainder[:max(leftover, 0)]:
        counts[label] += 1
    chosen: list[str] = []
    for label in sorted(groups):
        ids = sorted(groups[label])
        rng = np.random.default_rng([seed, zlib.crc32(label.encode("utf-8"))])
        chosen += [ids[i] for i in rng.permutation(len(ids))[:counts[label]]]
    moved = pl.col("image_id").is_in(chosen) & (pl.col("split") == "train")
    return sort_table(table.with_columns(
        pl.when(moved).then(pl.lit("val")).otherwise(pl.col("split")).alias("split")))


def apply_splits(table: pl.DataFrame, reference: pl.DataFrame, what: str) -> pl.DataFrame:
    """Give each image the split it has in ``reference`` (another reading of the same images).

    Every image must be in the reference and vice versa; otherwise the two files describe
    different datasets and mixing them would corrupt the test split.
    """
    splits = dict(reference.unique("image_id").select("image_id", "split").iter_rows())
    ours = set(table["image_id"].unique().to_list())
    missing = sorted(ours - set(splits))
    extra = sorted(set(splits) - ours)
    if missing or extra:
        example = f"'{missing[0]}' is not in {what}" if missing else f"{what} has '{extra[0]}' too"
        raise DataError(f"{_sources(table)}: its images differ from those of {what} "
                        f"({len(missing)} missing there, {len(extra)} extra; {example})")
    mapping = pl.DataFrame({"image_id": list(splits), "__split": list(splits.values())},
                           schema={"image_id": pl.String, "__split": pl.String})
    joined = table.join(mapping, on="image_id", how="left", maintain_order="left")
    return sort_table(joined.with_columns(pl.col("__split").alias("split")).drop("__split"))


def exclude_images(table: pl.DataFrame, image_ids: set[str], listing: Path) -> tuple[pl.DataFrame, list[str]]:
    """Drop the captions of ``image_ids`` from train and val; returns the table and who went.

    An id the table does not have at all means the list was made for other files (another
    release, another dataset name), and silently excluding nothing would pass a leak as clean.
    Listed test images stay: the test split is fixed.
    """
    known = set(table["image_id"].unique().to_list())
    unknown = sorted(image_ids - known)
    if unknown:
        raise DataError(f"{listing}: lists {len(unknown)} image(s) this dataset does not have "
                        f"(e.g. '{unknown[0]}'); was it written for other files?")
    drop = pl.col("image_id").is_in(sorted(image_ids)) & pl.col("split").is_in(["train", "val"])
    removed = sorted(set(table.filter(drop)["image_id"].to_list()))
    return table.filter(~drop), removed


def _sources(table: pl.DataFrame) -> str:
    return ", ".join(sorted(set(table["source"].to_list()))) or "the dataset"
