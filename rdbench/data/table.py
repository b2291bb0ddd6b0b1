"""The caption table: the one in-memory shape that every annotation reader produces.

RSICD and RSITMD circulate in five annotation formats (docs/datasets.md, "The five annotation formats"). Rather than teach the
evaluator, the training loop and the verification command about each of them, every reader turns
its format into this table and everything downstream reads only the table. One row per caption:

``image_id``  the image's identity within the dataset (its file name for the public releases);
              captions are grouped by it, never by their order in a file.
``path``      where the image lies on this machine (absolute). It is deliberately left out of the
              fingerprint, because it differs from one machine to the next.
``caption``   the caption text, stripped.
``split``     ``train``, ``val`` or ``test``.
``label``     the scene class, or null where the dataset gives none (RSICD's numeric file names,
              or an annotation that marks the image unlabelled, e.g. PIR's ``label: -1``): an
              unlabelled image is never a class of its own (:func:`clean_label`).
``source``    where the row came from (annotation file name and format), so that an error found
              downstream can still name the file to fix.

All columns are ``pl.String`` so that tables from different readers concatenate without casts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import PurePath
from typing import Any

import polars as pl

from rdbench.errors import DataError

COLUMNS: tuple[str, ...] = ("image_id", "path", "caption", "split", "label", "source")
"""Column order of every caption table."""

SPLITS: tuple[str, ...] = ("train", "val", "test")
"""Known split names, in the order tables are sorted and reported."""

SCHEMA: dict[str, Any] = {name: pl.String for name in COLUMNS}

# Only the label may be missing: a caption without an image, text, split or origin cannot be
# evaluated or traced back, so such rows are a reader bug or a broken file.
_NULLABLE = frozenset({"label"})

# A version tag at the start of the hashed stream: if the serialisation below ever changes, old
# and new fingerprints must not collide by accident.
_FINGERPRINT_TAG = b"rdbench-caption-table-v1\n"

# RSICD names images "<class>_<number>.jpg" (class names may contain underscores, e.g.
# storage_tanks_12.jpg); RSITMD does the same with .tif. The class is everything before the
# trailing number. At least two letters are required so that names such as "P0001.png" (DOTA
# style) or "00012.jpg" do not produce a bogus one-letter class.
_LABEL_RE = re.compile(r"^(?P<label>[A-Za-z][A-Za-z _-]*[A-Za-z])[ _-]*\d+$")

NO_CLASS: frozenset[str] = frozenset({
    "", "-", "none", "null", "nan", "na", "n/a", "unknown", "unlabelled", "unlabeled", "no class", "no_class",
})
"""Label values (lower-cased) that annotations use for "this image has no class"."""

_NEGATIVE_NUMBER_RE = re.compile(r"^-\d+(?:\.0*)?$")


def clean_label(value: Any) -> Any:
    """The scene class an annotation gives, or None when it says the image has none.

    None, empty text, a negative class index (``label: -1``, ``"-1"``, as PIR/HarMA records mark
    an image without a class) and the markers of :data:`NO_CLASS` (``none``, ``unknown``, ...)
    mean *no class*: such an image is unlabelled, never a class of its own. Text is stripped;
    a non-negative integer index becomes its text. Other types pass through unchanged, so that
    :func:`make_table` rejects them as a reader bug.
    """
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return None if value < 0 else str(value)
    if isinstance(value, float):
        if value != value or value < 0:  # NaN or negative
            return None
        return str(int(value)) if value.is_integer() else value
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in NO_CLASS or _NEGATIVE_NUMBER_RE.match(text):
            return None
        return text
    return value


def is_no_class_index(value: Any) -> bool:
    """True for a negative class index (``-1`` or ``"-1"``): the annotation says "no class"."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return value < 0
    return isinstance(value, str) and bool(_NEGATIVE_NUMBER_RE.match(value.strip()))


def empty_table() -> pl.DataFrame:
    """A table with no rows and the right schema (a reader that finds nothing still returns one)."""
    return pl.DataFrame(schema=SCHEMA)


def make_source(path: str | os.PathLike[str], fmt: str) -> str:
    """The ``source`` value for rows read from annotation file ``path`` in format ``fmt``.

    Only the file name is kept: the folder differs between machines, and the name alone is what
    a user recognises in an error message ("dataset_rsicd.json (format A)").
    """
    return f"{PurePath(os.fspath(path)).name} (format {fmt})"


def label_from_filename(name: str | os.PathLike[str]) -> str | None:
    """The scene class encoded in an RSICD/RSITMD style file name, or None if there is none.

    ``airport_12.jpg`` -> ``airport``; ``storage_tanks_0042.png`` -> ``storage_tanks``;
    ``denseresidential_3.jpg`` -> ``denseresidential``; ``00012.jpg`` -> None. Folders are
    ignored (format C prefixes the split folder: ``train/bridge_942.tif``). The class is
    lower-cased and spaces or hyphens become underscores, so that ``Storage Tanks_3.jpg`` and
    ``storage_tanks_3.jpg`` agree. A name without a trailing number gives None, because nothing
    then separates a class from an arbitrary file name.
    """
    base = PurePath(os.fspath(name).replace("\\", "/")).name
    stem = base.rsplit(".", 1)[0] if "." in base else base
    match = _LABEL_RE.match(stem.strip())
    if match is None:
        return None
    label = re.sub(r"[ -]+", "_", match.group("label").lower())
    return re.sub(r"_+", "_", label)


def _as_string(value: Any, column: str, index: int, source: str) -> str | None:
    # Paths arrive as pathlib objects and numeric ids as ints from some formats; anything else
    # (floats, lists) means the reader mis-parsed its file and must not be silently stringified.
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"{source}: row {index} column '{column}' has type {type(value).__name__}, "
                     "expected a string")


def make_table(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Build a caption table from reader rows, checking and normalising them.

    Each row must have exactly the keys in :data:`COLUMNS` (a missing or extra key is a reader
    bug and raises ValueError). Content problems that come from the annotation file raise
    :class:`DataError` naming the row's ``source``: an unknown split, an empty image id or
    caption, one image id in two splits (a leak between training and test) or with two paths or
    two labels. Labels go through :func:`clean_label`: an empty one or a "no class" marker
    (``-1``, ``none``, ``unknown``) becomes null.

    The result is sorted by split (train, val, test), then image id; the sort is stable, so the
    captions of one image keep the order the reader gave them.
    """
    columns: dict[str, list[str | None]] = {name: [] for name in COLUMNS}
    expected = set(COLUMNS)
    for index, row in enumerate(rows):
        keys = set(row)
        if keys != expected:
            source = row.get("source", "<unknown source>")
            missing = sorted(expected - keys)
            extra = sorted(keys - expected)
            raise ValueError(f"{source}: row {index} has missing columns {missing} "
                             f"and unexpected columns {extra}")
        source = str(row["source"])
        for name in COLUMNS:
            value = clean_label(row[name]) if name == "label" else row[name]
            columns[name].append(_as_string(value, name, index, source))

    df = pl.DataFrame(columns, schema=SCHEMA)
    if df.height == 0:
        return df
    df = df.with_columns(pl.col("caption").str.strip_chars())
    _check_content(df)
    return sort_table(df)


def sort_table(df: pl.DataFrame) -> pl.DataFrame:
    """Rows in table order: split (train, val, test), then image id; stable, so the captions of
    one image keep their order. Code that moves images between splits (a validation carve)
    calls it to restore the order :func:`make_table` guarantees."""
    rank = pl.col("split").replace_strict({name: i for i, name in enumerate(SPLITS)},
                                          return_dtype=pl.Int8)
    return (df.with_columns(rank.alias("__rank"))
              .sort(["__rank", "image_id"], maintain_order=True)
              .drop("__rank"))


def _first_bad(df: pl.DataFrame, mask: pl.Expr) -> dict[str, Any] | None:
    bad = df.filter(mask)
    return bad.row(0, named=True) if bad.height else None


def _check_content(df: pl.DataFrame) -> None:
    for name in COLUMNS:
        if name in _NULLABLE:
            continue
        row = _first_bad(df, pl.col(name).is_null())
        if row is not None:
            raise DataError(f"{row['source'] or '<unknown source>'}: a row of image "
                            f"'{row['image_id']}' has no {name}")
    row = _first_bad(df, ~pl.col("split").is_in(list(SPLITS)))
    if row is not None:
        raise DataError(f"{row['source']}: image '{row['image_id']}' has unknown split "
                        f"'{row['split']}' (expected one of {', '.join(SPLITS)})")
    row = _first_bad(df, pl.col("image_id").str.strip_chars() == "")
    if row is not None:
        raise DataError(f"{row['source']}: a caption has an empty image id")
    row = _first_bad(df, pl.col("caption") == "")
    if row is not None:
        raise DataError(f"{row['source']}: image '{row['image_id']}' has an empty caption")

    # One image id must mean one image: two splits would leak test images into training, and two
    # paths or labels mean two different images were given the same name.
    per_image = df.group_by("image_id", maintain_order=True).agg(
        pl.col("split").n_unique().alias("splits"),
        pl.col("path").n_unique().alias("paths"),
        pl.col("label").n_unique().alias("labels"),
        pl.col("split").unique(maintain_order=True).alias("split_values"),
        pl.col("source").first(),
    )
    for column, what in (("splits", "splits"), ("paths", "paths"), ("labels", "labels")):
        row = _first_bad(per_image, pl.col(column) > 1)
        if row is not None:
            detail = f" ({', '.join(row['split_values'])})" if column == "splits" else ""
            raise DataError(f"{row['source']}: image '{row['image_id']}' appears with "
                            f"{row[column]} different {what}{detail}")


def _canonical_rows(df: pl.DataFrame) -> pl.DataFrame:
    # Sorting on every hashed column (not just split and image id) makes the fingerprint a
    # property of the annotations, not of the caption order a particular format happens to use.
    rank = pl.col("split").replace_strict({name: i for i, name in enumerate(SPLITS)},
                                          default=len(SPLITS), return_dtype=pl.Int8)
    return (df.select("split", "image_id", "caption", "label")
              .with_columns(rank.alias("__rank"))
              .sort(["__rank", "split", "image_id", "caption", "label"], nulls_last=False)
              .drop("__rank"))


def table_fingerprint(df: pl.DataFrame) -> dict[str, Any]:
    """Identify a caption table for result records: a content hash and per-split sizes.

    ``sha256`` covers image id, caption, split and label of every row, in a canonical order, so
    the same annotations give the same hash on every machine whatever the reader, file order or
    image folder (``path`` and ``source`` are left out on purpose). ``splits`` maps each split
    present to its number of distinct images and of captions, in train/val/test order.
    """
    missing = [name for name in ("image_id", "caption", "split", "label") if name not in df.columns]
    if missing:
        raise ValueError(f"not a caption table: missing columns {missing}")
    digest = hashlib.sha256(_FINGERPRINT_TAG)
    for split, image_id, caption, label in _canonical_rows(df).iter_rows():
        # One JSON array per line: unambiguous whatever characters captions contain, and stable
        # across Python versions (compact separators, no ASCII escaping).
        line = json.dumps([image_id, caption, split, label], ensure_ascii=False,
                          separators=(",", ":"))
        digest.update(line.encode("utf-8"))
        digest.update(b"\n")

    counts = df.group_by("split").agg(pl.col("image_id").n_unique().alias("images"),
                                      pl.len().alias("captions"))
    by_split = {row["split"]: row for row in counts.iter_rows(named=True)}
    order = [s for s in SPLITS if s in by_split] + sorted(s for s in by_split if s not in SPLITS)
    splits = {s: {"images": int(by_split[s]["images"]), "captions": int(by_split[s]["captions"])}
              for s in order}
    return {"sha256": digest.hexdigest(), "splits": splits}
