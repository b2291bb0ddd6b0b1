"""Format A: Karpathy-style JSON, the layout of the original RSICD and RSITMD releases.

The file is ``{"images": [entry, ...], ...}`` where each entry looks like::

    {"filename": "airport_1.jpg", "split": "train", "imgid": 0, "sentids": [0, 1, ...],
     "sentences": [{"raw": "Many planes ...", "tokens": ["many", "planes", ...],
                    "imgid": 0, "sentid": 0}, ...],
     "label": "airport"}                       # optional; RSITMD has it, RSICD does not

The reader is strict about structure and names the file and the offending entry in a one-line
:class:`DataError`, because a silently skipped entry would change the test split and make results
incomparable with published numbers. It does not open the images: checking that they exist and
decode is the verification command's job, and reading 10,000 headers here would make every
table load slow.

The writer exists so that the embedded synthetic dataset and the tests can produce files that
go through exactly the same reader as the real releases.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from rdbench.atomic import write_atomic
from rdbench.data.table import SPLITS, clean_label, label_from_filename, make_source, make_table
from rdbench.errors import DataError

FORMAT = "A"

# Karpathy's tokens are the lower-cased words of the caption with punctuation dropped. "\w"
# without the underscore keeps letters and digits of any script.
_TOKEN_RE = re.compile(r"[^\W_]+")


def tokenize(raw: str) -> list[str]:
    """Lower-cased words without punctuation, as in the ``tokens`` field of the releases."""
    return _TOKEN_RE.findall(raw.lower())


def _load_json(path: Path) -> Any:
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "file not found"
        raise DataError(f"{path}: {what}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror or error})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: invalid JSON at line {error.lineno}, column {error.colno}: "
                        f"{error.msg}") from None


def _describe(index: int, entry: Mapping[str, Any]) -> str:
    name = entry.get("filename")
    return f"images[{index}] ('{name}')" if isinstance(name, str) else f"images[{index}]"


def read_karpathy_json(json_path: str | os.PathLike[str],
                       image_dir: str | os.PathLike[str] | None = None) -> pl.DataFrame:
    """Read a format-A annotation file into a caption table (see :mod:`rdbench.data.table`).

    ``image_dir`` defaults to ``<folder of the JSON>/images``. ``image_id`` is the entry's
    ``filename``; ``path`` is the absolute path of ``image_dir/filename``; ``label`` is the entry's
    ``label`` if it has a non-empty one (``-1`` or ``"none"`` there mean no class: null), else the
    class in the file name; ``caption`` is ``raw``, stripped. Captions keep their order within
    an image.
    """
    path = Path(json_path)
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}: no top-level 'images' list (not a Karpathy-style file?)")
    folder = Path(os.path.abspath(path.parent / "images" if image_dir is None else image_dir))
    source = make_source(path, FORMAT)

    rows: list[dict[str, Any]] = []
    first_index: dict[str, int] = {}
    for index, entry in enumerate(data["images"]):
        if not isinstance(entry, dict):
            raise DataError(f"{path}: images[{index}] is a {type(entry).__name__}, not an object")
        where = _describe(index, entry)
        missing = [key for key in ("filename", "split", "sentences") if key not in entry]
        if missing:
            raise DataError(f"{path}: {where} has no {', '.join(repr(k) for k in missing)}")
        filename, split, sentences = entry["filename"], entry["split"], entry["sentences"]
        if not isinstance(filename, str) or not filename.strip():
            raise DataError(f"{path}: {where} has an empty or non-string 'filename'")
        if split not in SPLITS:
            raise DataError(f"{path}: {where} has unknown split {split!r} "
                            f"(expected one of {', '.join(SPLITS)})")
        if filename in first_index:
            # Two entries with one file name would silently merge their captions into one image.
            raise DataError(f"{path}: {where} repeats the filename of "
                            f"images[{first_index[filename]}]")
        first_index[filename] = index
        if not isinstance(sentences, list) or not sentences:
            raise DataError(f"{path}: {where} has no sentences (expected a non-empty list)")

        label = entry.get("label")
        if label is None or (isinstance(label, str) and not label.strip()):
            label = label_from_filename(filename)
        elif isinstance(label, bool) or not isinstance(label, (str, int)):
            raise DataError(f"{path}: {where} has a 'label' that is neither a string nor an integer ({label!r})")
        else:  # "-1", -1, "none": the annotation says the image has no class
            label = clean_label(label)
        image_path = os.path.abspath(folder / filename)
        if os.path.commonpath([str(folder), image_path]) != str(folder):  # "../x" or "/etc/passwd"
            raise DataError(f"{path}: {where} filename {filename!r} leads outside the image folder {folder}")

        for number, sentence in enumerate(sentences):
            raw = sentence.get("raw") if isinstance(sentence, dict) else None
            if not isinstance(raw, str):
                raise DataError(f"{path}: {where} sentences[{number}] has no 'raw' string")
            caption = raw.strip()
            if not caption:
                raise DataError(f"{path}: {where} sentences[{number}] has an empty 'raw'")
            rows.append({"image_id": filename, "path": image_path, "caption": caption,
                         "split": split, "label": label, "source": source})
    return make_table(rows)


def _entry_captions(entry: Mapping[str, Any], index: int, path: Path) -> list[str]:
    captions = entry.get("captions")
    if captions is None:
        captions = entry.get("sentences")
    if isinstance(captions, str) or not isinstance(captions, Iterable):
        raise DataError(f"{path}: entry {index} needs 'captions', a list of strings")
    result = []
    for caption in captions:
        if isinstance(caption, dict):
            caption = caption.get("raw")
        if not isinstance(caption, str) or not caption.strip():
            raise DataError(f"{path}: entry {index} has an empty or non-string caption")
        result.append(caption)
    if not result:
        raise DataError(f"{path}: entry {index} has no captions")
    return result


def build_karpathy_document(entries: Iterable[Mapping[str, Any]], *, path: Path,
                            dataset: str | None = None,
                            header: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON document :func:`write_karpathy_json` writes, without writing it.

    Image and sentence ids are assigned in the order given, as the releases number them.
    """
    images: list[dict[str, Any]] = []
    sentid = 0
    for imgid, entry in enumerate(entries):
        filename, split = entry.get("filename"), entry.get("split")
        if not isinstance(filename, str) or not filename:
            raise DataError(f"{path}: entry {imgid} needs a non-empty 'filename'")
        if split not in SPLITS:
            raise DataError(f"{path}: entry {imgid} has unknown split {split!r}")
        sentences, sentids = [], []
        for raw in _entry_captions(entry, imgid, path):
            sentences.append({"tokens": tokenize(raw), "raw": raw, "imgid": imgid,
                              "sentid": sentid})
            sentids.append(sentid)
            sentid += 1
        image: dict[str, Any] = {"filename": filename, "imgid": imgid, "sentences": sentences,
                                 "split": split, "sentids": sentids}
        if entry.get("label") is not None:
            image["label"] = entry["label"]
        images.append(image)
    document: dict[str, Any] = {"images": images}
    if dataset is not None:
        document["dataset"] = dataset
    for key, value in (header or {}).items():
        if key in document:
            raise ValueError(f"header key {key!r} would overwrite the {key!r} field")
        document[key] = value
    return document


def write_karpathy_json(json_path: str | os.PathLike[str], entries: Iterable[Mapping[str, Any]],
                        *, dataset: str | None = None,
                        header: Mapping[str, Any] | None = None) -> Path:
    """Write a format-A file, atomically; returns its path.

    ``entries`` are mappings with ``filename``, ``split`` and ``captions`` (a list of strings;
    ``sentences`` is accepted as a synonym, with strings or ``{"raw": ...}`` objects) and an
    optional ``label``. ``dataset`` becomes the top-level ``dataset`` field of the releases;
    ``header`` adds further top-level fields (the synthetic generator records its arguments
    there). The output is deterministic: same entries, same bytes.
    """
    path = Path(json_path)
    document = build_karpathy_document(entries, path=path, dataset=dataset, header=header)
    write_atomic(path, (json.dumps(document, ensure_ascii=False) + "\n").encode("utf-8"))
    return path
