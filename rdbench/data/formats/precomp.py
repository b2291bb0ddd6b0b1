"""Formats B (precomp text files) and C (PIR/HarMA JSON record lists), into the caption table.

Format A has its own module (:mod:`rdbench.data.formats.karpathy`) and D/E theirs
(:mod:`rdbench.data.formats.csvfiles`); :mod:`rdbench.data.formats.layout` finds which one a folder holds.

**B**, the AMFMN / GaLR / PE-RSITR layout: ``<split>_caps.txt`` holds one caption a line and
``<split>_filename.txt`` the image of each. The train file names each image once (its captions
are the next k lines of the caption file, k = captions / names), the test file repeats the name
once per caption. Both shapes are read the same way: captions are attached to a file name,
then grouped by that name, never by their position.

**C**, the PIR / HarMA / DSD-RSITR layout: ``<prefix>_<split>.json``, a JSON list. Train has
one record per caption, ``{caption, image, image_id, label_name, label}``; val and test one per
image, ``{image, caption: [five strings]}``. ``image`` carries the split folder
(``train/bridge_942.tif``); the image id is the bare file name, so that a table read from C
has the same ids (and fingerprint) as the same annotations read from any other format. A
train record of an image without a class (``label: -1``) gives it no class, not a class "-1".

Every problem is a one-line :class:`DataError` naming the file and line or record, because a
skipped caption silently changes the test split.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePath
from typing import Any

import polars as pl

from rdbench.data.table import SPLITS, clean_label, is_no_class_index, label_from_filename, make_source, make_table
from rdbench.errors import DataError

PRECOMP_FILES = ("{split}_caps.txt", "{split}_filename.txt")
"""Format B's two files per split."""


def read_text(path: Path, encoding: str | None = None) -> str:
    """The text of an annotation file, with one-line errors for a missing or mis-encoded file.

    ``encoding`` None means UTF-8 (a byte-order mark is dropped); RSICD's CSV in GeoRSCLIP's
    release is gb18030, which must be asked for, since guessing an encoding can succeed wrongly.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not a file") from None
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror or error})") from None
    name = encoding or "utf-8-sig"
    try:
        return data.decode(name)
    except LookupError:
        raise DataError(f"{path}: unknown encoding {encoding!r}") from None
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        hint = "; pass encoding: gb18030 if it is a Chinese-encoded file" if encoding is None else ""
        raise DataError(f"{path}: not valid {encoding or 'UTF-8'} at line {line} (byte {error.start}){hint}") from None


def text_lines(path: Path, encoding: str | None = None) -> list[str]:
    """Lines without their line ends; blank lines at the end of the file are dropped."""
    lines = read_text(path, encoding).splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def image_id_of(name: str) -> str:
    """The image id of a file reference: its bare file name (folders differ between formats)."""
    return PurePath(name.strip().replace("\\", "/")).name


def resolve_image(image_dir: Path, name: str, source: str | os.PathLike[str] = "") -> str:
    """Absolute path of image ``name`` under ``image_dir``; a reference with a split folder
    (format C's ``train/x.tif``) falls back to the flat ``image_dir/x.tif`` when only that
    exists, because users unpack the same images both ways.

    An absolute reference (open_clip's tab-separated files list them) is taken as given; a
    relative one must stay inside ``image_dir``: ``../../etc/passwd`` in an annotation file is a
    DataError naming ``source`` (the annotation file), never a read outside the dataset."""
    name = name.strip().replace("\\", "/")
    if not os.path.isabs(name):
        inside = os.path.abspath(image_dir)
        target = os.path.abspath(os.path.join(inside, name))
        if os.path.commonpath([inside, target]) != inside:
            raise DataError(f"{source or image_dir}: image reference {name!r} leads outside the image folder {inside}")
    path = image_dir / name
    if "/" in name and not path.exists():
        flat = image_dir / image_id_of(name)
        if flat.exists():
            path = flat
    return os.path.abspath(path)


# -- format B -----------------------------------------------------------------------------------
def precomp_splits(folder: Path) -> list[str]:
    """Splits with at least one of their two format-B files in ``folder``."""
    return [s for s in SPLITS if any((folder / f.format(split=s)).is_file() for f in PRECOMP_FILES)]


def read_precomp(folder: str | os.PathLike[str], image_dir: str | os.PathLike[str] | None = None,
                 encoding: str | None = None) -> pl.DataFrame:
    """Read the format-B files in ``folder`` (every split that has them) into a caption table.

    ``image_dir`` defaults to ``folder/images``.
    """
    folder = Path(folder)
    images = Path(os.path.abspath(folder / "images" if image_dir is None else image_dir))
    rows: list[dict[str, Any]] = []
    splits = precomp_splits(folder)
    if not splits:
        raise DataError(f"{folder}: no format-B files (expected train_caps.txt, train_filename.txt, "
                        "test_caps.txt, test_filename.txt)")
    for split in splits:
        caps_path, names_path = (folder / f.format(split=split) for f in PRECOMP_FILES)
        for path in (caps_path, names_path):
            if not path.is_file():
                other = names_path if path == caps_path else caps_path
                raise DataError(f"{path}: file not found (format B needs it beside {other.name})")
        rows += _precomp_split(caps_path, names_path, split, images, encoding)
    return make_table(rows)


def _precomp_split(caps_path: Path, names_path: Path, split: str, images: Path,
                   encoding: str | None) -> list[dict[str, Any]]:
    captions = text_lines(caps_path, encoding)
    names = text_lines(names_path, encoding)
    if not names or not captions:
        empty = names_path if not names else caps_path
        raise DataError(f"{empty}: file is empty")
    if len(captions) == len(names):
        owner = names  # the test shape: one name per caption
    elif len(captions) % len(names) == 0:
        per = len(captions) // len(names)
        seen: dict[str, int] = {}
        for number, name in enumerate(names, 1):
            if name.strip() in seen:
                # In the one-line-per-image shape a repeated name would silently give one image
                # the captions of two.
                raise DataError(f"{names_path}: line {number} repeats the file name of line "
                                f"{seen[name.strip()]} ({name.strip()})")
            seen[name.strip()] = number
        owner = [names[i // per] for i in range(len(captions))]
    else:
        raise DataError(f"{caps_path}: {len(captions)} captions do not fit the {len(names)} file "
                        f"names of {names_path.name} (expected one name per caption, or one per "
                        "image with the same number of captions each)")
    source = make_source(caps_path, "B")
    rows = []
    for number, (caption, name) in enumerate(zip(captions, owner), 1):
        if not name.strip():
            raise DataError(f"{names_path}: empty file name for caption line {number}")
        if not caption.strip():
            raise DataError(f"{caps_path}: line {number} is an empty caption")
        rows.append({"image_id": image_id_of(name), "path": resolve_image(images, name, names_path),
                     "caption": caption.strip(), "split": split,
                     "label": label_from_filename(name), "source": source})
    return rows


# -- format C -----------------------------------------------------------------------------------
def read_pir_json(paths: dict[str, Path], image_dir: str | os.PathLike[str]) -> pl.DataFrame:
    """Read format-C files (``{split: path}``) into a caption table; images under ``image_dir``."""
    images = Path(os.path.abspath(image_dir))
    rows: list[dict[str, Any]] = []
    for split in SPLITS:
        if split in paths:
            rows += _pir_split(paths[split], split, images)
    return make_table(rows)


def _pir_label(record: dict[str, Any], image: str) -> str | None:
    """The scene class of a format-C record: none when its class index says so (``label: -1``,
    an image without a class, e.g. RSICD's ``1234.jpg``), whatever ``label_name`` holds; else
    ``label_name`` (a "no class" marker there, such as ``none``, gives none too); else the class
    in the file name."""
    if is_no_class_index(record.get("label")):
        return None
    name = record.get("label_name")
    if isinstance(name, str) and name.strip():
        return clean_label(name)
    return label_from_filename(image)


def _pir_split(path: Path, split: str, images: Path) -> list[dict[str, Any]]:
    try:
        records = json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: invalid JSON at line {error.lineno}, column {error.colno}: "
                        f"{error.msg}") from None
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of records (format C), got a "
                        f"{type(records).__name__}")
    source = make_source(path, "C")
    rows = []
    for index, record in enumerate(records):
        where = f"record {index}"
        if not isinstance(record, dict):
            raise DataError(f"{path}: {where} is a {type(record).__name__}, not an object")
        image, captions = record.get("image"), record.get("caption")
        if not isinstance(image, str) or not image.strip():
            raise DataError(f"{path}: {where} has no 'image' string")
        where = f"record {index} ('{image}')"
        if isinstance(captions, str):
            captions = [captions]
        if not isinstance(captions, list) or not captions:
            raise DataError(f"{path}: {where} has no 'caption' (a string, or a list of strings)")
        label = _pir_label(record, image)
        for number, caption in enumerate(captions):
            if not isinstance(caption, str) or not caption.strip():
                raise DataError(f"{path}: {where} caption {number} is empty or not a string")
            rows.append({"image_id": image_id_of(image), "path": resolve_image(images, image, path),
                         "caption": caption.strip(), "split": split, "label": label,
                         "source": source})
    return rows
