"""Formats D and E: caption CSV files, one row per image-caption pair, into the caption table.

**D** is GeoRSCLIP's evaluation layout: a header ``filename,title`` and one row per caption
(RSICD's file circulates gb18030-encoded, hence the ``encoding`` argument). **E** is open_clip's
training CSV: columns and separator are configurable there (``--csv-img-key filepath
--csv-caption-key title --csv-separator '\\t'`` by default), so they are here. The two differ
only in those defaults, so one reader serves both.

A file's split is its ``split`` column when it has one, else the word ``train``, ``val`` or
``test`` in its name (``rsicd_test.csv``, ``val.tsv``); a file with neither is an error, since
guessing would put test images into training. Captions are grouped by image id (the bare file
name), never by row order; a ``label`` column, if any, gives the scene class (``-1``, ``none``
or ``unknown`` there: no class), else the file name's prefix does.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from rdbench.data.formats.precomp import image_id_of, read_text, resolve_image
from rdbench.data.table import clean_label, label_from_filename, make_source, make_table
from rdbench.errors import DataError

IMAGE_COLUMNS = ("filename", "filepath", "image", "image_path", "path", "file", "img")
CAPTION_COLUMNS = ("title", "caption", "text", "sentence", "raw")
SPLIT_WORDS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val",
               "test": "test"}
_SPLIT_RE = re.compile(r"(?:^|[^a-z])(" + "|".join(SPLIT_WORDS) + r")(?:[^a-z]|$)")
CSV_SUFFIXES = (".csv", ".tsv")


@dataclass(frozen=True)
class CsvOptions:
    """How to read a caption CSV: None lets the header decide (see :func:`read_caption_csv`)."""

    image_column: str | None = None
    caption_column: str | None = None
    separator: str | None = None
    encoding: str | None = None


def split_from_name(path: str | os.PathLike[str]) -> str | None:
    """``train``/``val``/``test`` from a file name (``rsicd_test.csv`` -> test), or None."""
    found = _SPLIT_RE.findall(Path(path).stem.lower())
    splits = {SPLIT_WORDS[word] for word in found}
    return splits.pop() if len(splits) == 1 else None


def header_of(path: Path) -> str:
    """The first line of a file, decoded leniently (for format detection only)."""
    try:
        with open(path, "rb") as handle:
            first = handle.readline(4096)
    except OSError:
        return ""
    return first.decode("latin-1").lstrip("\ufeff").lstrip("\xef\xbb\xbf").strip()


def is_format_d(path: Path) -> bool:
    """True for GeoRSCLIP's ``filename,title`` header."""
    return header_of(path).replace(" ", "").lower() == "filename,title"


def _pick_column(header: list[str], wanted: str | None, known: tuple[str, ...], what: str,
                 path: Path) -> str:
    if wanted is not None:
        if wanted not in header:
            raise DataError(f"{path}: no column {wanted!r} for the {what} (columns: {', '.join(header)})")
        return wanted
    lowered = {name.strip().lower(): name for name in header}
    for name in known:
        if name in lowered:
            return lowered[name]
    raise DataError(f"{path}: no {what} column (looked for {', '.join(known)}; columns: "
                    f"{', '.join(header)}); name it with {'image' if what == 'image' else 'caption'}_column")


def read_caption_csv(path: str | os.PathLike[str], image_dir: str | os.PathLike[str],
                     options: CsvOptions = CsvOptions(), fmt: str = "E") -> list[dict[str, Any]]:
    """Rows of one caption CSV (pass them, with those of the other splits, to ``make_table``).

    The separator defaults to a tab when the header has one, else a comma; the image and caption
    columns default to the first of :data:`IMAGE_COLUMNS` / :data:`CAPTION_COLUMNS` present.
    Image references are resolved under ``image_dir`` (absolute ones stay as they are).
    """
    path = Path(path)
    text = read_text(path, options.encoding)
    first = text.split("\n", 1)[0]
    separator = options.separator or ("\t" if "\t" in first else ",")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator)
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise DataError(f"{path}: file is empty") from None
    image_col = _pick_column(header, options.image_column, IMAGE_COLUMNS, "image", path)
    caption_col = _pick_column(header, options.caption_column, CAPTION_COLUMNS, "caption", path)
    position = {name: i for i, name in enumerate(header)}
    split_col = position.get("split")
    label_col = next((position[n] for n in ("label", "label_name") if n in position), None)
    named_split = split_from_name(path)
    if split_col is None and named_split is None:
        raise DataError(f"{path}: cannot tell its split (name the file <name>_train.csv, "
                        "<name>_val.csv or <name>_test.csv, or add a 'split' column)")
    images = Path(os.path.abspath(image_dir))
    source = make_source(path, fmt)
    rows = []
    for number, record in enumerate(reader, 2):
        if not any(cell.strip() for cell in record):
            continue
        if len(record) != len(header):
            raise DataError(f"{path}: line {number} has {len(record)} fields, the header has "
                            f"{len(header)} (separator {separator!r})")
        image, caption = record[position[image_col]], record[position[caption_col]]
        if not image.strip():
            raise DataError(f"{path}: line {number} has an empty {image_col!r}")
        if not caption.strip():
            raise DataError(f"{path}: line {number} has an empty {caption_col!r}")
        split = SPLIT_WORDS.get(record[split_col].strip().lower(), record[split_col].strip()) \
            if split_col is not None else named_split
        label = record[label_col].strip() if label_col is not None else ""
        # An empty cell: the class in the file name; "-1", "none": the image has no class.
        rows.append({"image_id": image_id_of(image), "path": resolve_image(images, image, path),
                     "caption": caption.strip(), "split": split,
                     "label": clean_label(label) if label else label_from_filename(image), "source": source})
    if not rows:
        raise DataError(f"{path}: no caption rows below the header")
    return rows


def read_caption_csvs(paths: list[Path], image_dir: str | os.PathLike[str],
                      options: CsvOptions = CsvOptions(), fmt: str = "E") -> pl.DataFrame:
    """Read several caption CSVs (one per split, usually) into one caption table."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        rows += read_caption_csv(path, image_dir, options, fmt)
    return make_table(rows)
