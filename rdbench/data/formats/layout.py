"""Which annotation format a dataset folder holds, and reading it whatever it is.

RSICD and RSITMD circulate in five layouts (docs/datasets.md, "The five annotation formats"). A user points rdbench at a
folder; :func:`find_annotations` recognises the layout from the files there (in the order A, C,
B, D/E when several are present, so that the richest one wins), or takes the one the user
names, and :func:`read_annotations` turns it into the caption table. When nothing fits, the
error lists the files each format would have, since "no annotations found" alone sends the user
searching.

A ``name`` (``rsicd``, ``rsitmd``) picks that dataset's files when a folder holds several
(``dataset_rsicd.json`` beside ``dataset_RSITMD.json``, ``rsicd_test.json`` beside
``rsitmd_test.json``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from rdbench.data.formats.csvfiles import CSV_SUFFIXES, CsvOptions, is_format_d, read_caption_csvs, split_from_name
from rdbench.data.formats.precomp import PRECOMP_FILES, precomp_splits, read_pir_json, read_precomp
from rdbench.data.formats.karpathy import read_karpathy_json
from rdbench.data.table import SPLITS
from rdbench.errors import DataError

FORMATS = ("A", "B", "C", "D", "E")
FORMAT_NAMES = {"A": "Karpathy-style JSON", "B": "precomp text files", "C": "PIR/HarMA JSON records",
                "D": "filename,title CSV", "E": "open_clip CSV"}
_DETECTION_ORDER = ("A", "C", "B", "D")  # D stands for the CSV formats, D and E
KNOWN_DATASETS = ("rsicd", "rsitmd")


@dataclass
class Annotations:
    """The annotation files of one format found in a folder."""

    format: str
    root: Path
    files: dict[str, Path] = field(default_factory=dict)  # split (or "all") -> file

    def names(self) -> list[str]:
        return [p.name for p in self.files.values()]


def expected_layout(name: str | None = None) -> str:
    """One line naming the files of each format, for errors and ``--help``."""
    n = name or "<name>"
    return (f"A: dataset_{n}.json; B: train_caps.txt, train_filename.txt, test_caps.txt, "
            f"test_filename.txt; C: {n}_train.json, {n}_val.json, {n}_test.json; D: {n}_test.csv "
            f"(filename,title); E: {n}_train.csv, {n}_test.csv (open_clip columns); images in "
            "images/ or image_dir")


def default_image_dir(root: Path) -> Path:
    """``root/images`` when it exists, else the root itself."""
    return root / "images" if (root / "images").is_dir() else root


def _pick(candidates: dict[str, list[Path]], name: str | None, what: str, root: Path) -> str | None:
    """Choose one group of files (keyed by their dataset prefix) among several."""
    if name is not None:
        for prefix in candidates:
            if prefix.lower() == name.lower():
                return prefix
        # RSITMD's files must never be read as RSICD because they were the only ones there.
        candidates = {p: g for p, g in candidates.items() if p.lower() not in KNOWN_DATASETS}
    if not candidates:
        return None
    if len(candidates) == 1:
        return next(iter(candidates))
    listed = ", ".join(sorted(p.name for group in candidates.values() for p in group))
    raise DataError(f"{root}: several {what} files ({listed}); say which dataset (rsicd, rsitmd) "
                    "or keep one set per folder")


def _find_a(root: Path, name: str | None, named: bool) -> dict[str, Path]:
    found = {p.stem[len("dataset_"):]: [p] for p in sorted(root.glob("*.json"))
             if p.name.lower().startswith("dataset_")}
    if not found and named:  # format A asked for by name: any JSON that is not format C's
        found = {p.stem: [p] for p in sorted(root.glob("*.json"))
                 if p.stem.rpartition("_")[2] not in SPLITS}
    prefix = _pick(found, name, "format-A", root)
    return {"all": found[prefix][0]} if prefix is not None else {}


def _find_c(root: Path, name: str | None) -> dict[str, Path]:
    groups: dict[str, list[Path]] = {}
    for path in sorted(root.glob("*.json")):
        stem = path.stem
        prefix, _, split = stem.rpartition("_")
        if prefix and split in SPLITS and not stem.lower().startswith("dataset_"):
            groups.setdefault(prefix, []).append(path)
    prefix = _pick(groups, name, "format-C", root)
    if prefix is None:
        return {}
    return {p.stem.rpartition("_")[2]: p for p in groups[prefix]}


def _find_b(root: Path) -> dict[str, Path]:
    return {f"{s}{'' if i == 0 else '_filename'}": root / f.format(split=s)
            for s in precomp_splits(root) for i, f in enumerate(PRECOMP_FILES)}


def _find_csv(root: Path, name: str | None) -> dict[str, Path]:
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in CSV_SUFFIXES and p.is_file())
    if name is not None:
        mine = [p for p in files if p.name.lower().startswith(name.lower())]
        files = mine or [p for p in files if not p.name.lower().startswith(KNOWN_DATASETS)]
    out: dict[str, Path] = {}
    for index, path in enumerate(files):
        key = split_from_name(path) or f"file{index}"
        if key in out:
            raise DataError(f"{root}: two CSV files for split {key} ({out[key].name}, {path.name}); "
                            "keep one per split")
        out[key] = path
    return out


def _find(root: Path, fmt: str, name: str | None, named: bool = False) -> dict[str, Path]:
    if fmt == "A":
        return _find_a(root, name, named)
    if fmt == "B":
        return _find_b(root)
    if fmt == "C":
        return _find_c(root, name)
    return _find_csv(root, name)


def find_annotations(root: str | os.PathLike[str], fmt: str = "auto", name: str | None = None) -> Annotations:
    """The annotation files in ``root``: of format ``fmt``, or the first format found."""
    root = Path(root).expanduser()
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "dataset root not found"
        raise DataError(f"{root}: {what} (expected a folder with annotations in one of the formats "
                        f"{expected_layout(name)})")
    if fmt != "auto" and fmt not in FORMATS:
        raise DataError(f"{root}: unknown format {fmt!r} (one of auto, {', '.join(FORMATS)})")
    order = _DETECTION_ORDER if fmt == "auto" else (fmt,)
    for candidate in order:
        files = _find(root, candidate, name, named=fmt != "auto")
        if files:
            if candidate in ("D", "E"):
                all_d = all(is_format_d(p) for p in files.values())
                candidate = fmt if fmt != "auto" else ("D" if all_d else "E")
            return Annotations(candidate, root, files)
    if fmt == "auto":
        raise DataError(f"{root}: no annotation files found (expected one of the formats "
                        f"{expected_layout(name)})")
    expected = [part for part in expected_layout(name).split("; ") if part.startswith(f"{fmt}:")][0]
    raise DataError(f"{root}: no format-{fmt} annotation files (expected {expected.split(': ', 1)[1]})")


def read_annotations(found: Annotations, image_dir: str | os.PathLike[str] | None = None,
                     csv: CsvOptions = CsvOptions()) -> pl.DataFrame:
    """Read the files :func:`find_annotations` found into one caption table.

    ``image_dir`` defaults to ``root/images`` (or the root, without such a folder). ``csv``
    applies to D and E; its ``encoding`` applies to B as well.
    """
    images = Path(image_dir).expanduser() if image_dir is not None else default_image_dir(found.root)
    if found.format == "A":
        return read_karpathy_json(found.files["all"], images)
    if found.format == "B":
        return read_precomp(found.root, images, csv.encoding)
    if found.format == "C":
        return read_pir_json(found.files, images)
    if found.format == "D":
        csv = CsvOptions(csv.image_column or "filename", csv.caption_column or "title",
                         csv.separator or ",", csv.encoding)
    return read_caption_csvs(list(found.files.values()), images, csv, found.format)


def format_summary(found: Annotations) -> str:
    """``format B (precomp text files: test_caps.txt, train_caps.txt)`` for reports."""
    return f"format {found.format} ({FORMAT_NAMES[found.format]}: {', '.join(found.names())})"
