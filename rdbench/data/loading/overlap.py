"""Images shared between two datasets, and the overlap list that excludes them.

RSICD and RSITMD share scenes (docs/datasets.md, "Cross-dataset leakage"): a model fine-tuned on RSICD's train split and
tested on RSITMD may have seen test images. :func:`find_overlap` finds them two ways:

* **identical**: equal SHA-256 of the decoded RGB pixels (:func:`~rdbench.data.loading.images.
  pixel_sha256`), so a PNG and a TIFF of one image match, and so do two copies under different
  names;
* **near-duplicate**: perceptual hashes (dHash or pHash, 64 bits) within ``threshold`` bits,
  confirmed by a mean absolute difference of 16 x 16 grey thumbnails of at most
  ``max_difference`` (a hash alone matches unrelated near-uniform images, such as two patches
  of sea). This catches resized and re-compressed copies (RSICD's 224 px JPEGs of RSITMD's
  256 px TIFFs).

The overlap list is a tab-separated text file, ``#`` lines being comments::

    # dataset  image_id  split  reason  other
    rsicd   airport_12.jpg  train  identical pixels  rsitmd:test:airport_3.tif

A dataset's ``exclude`` argument reads the lines of its own name and drops those images from
train and val (:func:`~rdbench.data.formats.splits.exclude_images`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from rdbench.atomic import write_atomic
from rdbench.data.loading.images import dhash, hamming, open_rgb, parallel_map, phash, pixel_sha256, thumbnail
from rdbench.errors import DataError

HASHES = {"dhash": dhash, "phash": phash}
_HEADER = "# dataset\timage_id\tsplit\treason\tother"


@dataclass(frozen=True)
class ImageKey:
    """One image of one dataset, as the overlap list names it."""

    dataset: str
    image_id: str
    split: str
    path: str

    def label(self) -> str:
        return f"{self.dataset}:{self.split}:{self.image_id}"


@dataclass(frozen=True)
class Match:
    a: ImageKey
    b: ImageKey
    reason: str


@dataclass
class Fingerprints:
    """Hashes of the readable images of one dataset, and the files that could not be read."""

    keys: list[ImageKey]
    sha: list[str]
    perceptual: np.ndarray  # uint64
    thumbs: np.ndarray  # (N, 16, 16) float32
    unreadable: list[str]


def image_keys(table: pl.DataFrame, dataset: str) -> list[ImageKey]:
    images = table.unique("image_id", keep="first", maintain_order=True)
    return [ImageKey(dataset, i, s, p) for i, s, p in images.select("image_id", "split", "path").iter_rows()]


def fingerprint_images(keys: list[ImageKey], method: str = "dhash") -> Fingerprints:
    """Hash every image (in parallel); unreadable ones are listed, not fatal."""
    perceptual_hash = HASHES[method]

    def one(key: ImageKey):
        try:
            img = open_rgb(key.path)
        except DataError as error:
            return str(error)
        return pixel_sha256(img), perceptual_hash(img), thumbnail(img)

    results = parallel_map(one, keys)
    good = [(k, r) for k, r in zip(keys, results) if not isinstance(r, str)]
    return Fingerprints(
        keys=[k for k, _ in good],
        sha=[r[0] for _, r in good],
        perceptual=np.array([r[1] for _, r in good], dtype=np.uint64),
        thumbs=np.stack([r[2] for _, r in good]) if good else np.zeros((0, 16, 16), np.float32),
        unreadable=[r for r in results if isinstance(r, str)],
    )


def find_overlap(a: Fingerprints, b: Fingerprints, threshold: int = 4, max_difference: float = 0.04,
                 method: str = "dhash", chunk: int = 1024) -> list[Match]:
    """Identical and near-duplicate pairs between ``a`` and ``b`` (see the module docstring)."""
    matches: list[Match] = []
    by_sha: dict[str, list[int]] = {}
    for j, sha in enumerate(b.sha):
        by_sha.setdefault(sha, []).append(j)
    exact: set[tuple[int, int]] = set()
    for i, sha in enumerate(a.sha):
        for j in by_sha.get(sha, ()):
            exact.add((i, j))
            matches.append(Match(a.keys[i], b.keys[j], f"identical pixels (sha256 {sha[:12]})"))
    if threshold >= 0 and len(a.keys) and len(b.keys):
        for start in range(0, len(a.keys), chunk):
            distance = hamming(a.perceptual[start:start + chunk], b.perceptual)
            for di, j in zip(*np.nonzero(distance <= threshold)):
                i = start + int(di)
                if (i, int(j)) in exact:
                    continue
                diff = float(np.abs(a.thumbs[i] - b.thumbs[j]).mean())
                if diff <= max_difference:
                    matches.append(Match(a.keys[i], b.keys[int(j)],
                                         f"near-duplicate ({method} distance {int(distance[di, j])}, "
                                         f"thumbnail difference {diff:.1%})"))
    return matches


def write_overlap_list(path: str | Path, matches: list[Match], *, header: list[str]) -> Path:
    """Write both sides of every match (so either dataset can exclude them), atomically."""
    lines = [f"# {line}" for line in header] + [_HEADER]
    for m in matches:
        for mine, other in ((m.a, m.b), (m.b, m.a)):
            lines.append("\t".join((mine.dataset, mine.image_id, mine.split, m.reason, other.label())))
    write_atomic(Path(path), ("\n".join(lines) + "\n").encode("utf-8"))
    return Path(path)


def read_overlap_list(path: str | Path) -> list[tuple[str, str, str, str, str]]:
    """The entries of an overlap list: (dataset, image id, split, reason, other)."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: overlap list not found (write it with `rdbench data overlap A B "
                        "--root-a DIR --root-b DIR --output FILE`)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: overlap list cannot be read ({error})") from None
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 5 or not fields[0] or not fields[1]:
            raise DataError(f"{path}: line {number} is not 'dataset<TAB>image_id<TAB>split<TAB>reason"
                            "<TAB>other' (written by `rdbench data overlap`)")
        entries.append(tuple(fields))
    return entries


def excluded_ids(path: str | Path, dataset: str) -> set[str]:
    """Image ids of ``dataset`` that the overlap list at ``path`` names.

    A list with entries for other datasets only is an error: the names do not line up (a
    ``dataset/captions`` whose ``name`` differs from the one given to ``rdbench data overlap``),
    and excluding nothing would pass a leak as clean. An empty list (no overlap) is fine.
    """
    entries = read_overlap_list(path)
    mine = {e[1] for e in entries if e[0] == dataset}
    if entries and not mine:
        names = ", ".join(sorted({e[0] for e in entries}))
        raise DataError(f"{path}: lists images of {names}, none of {dataset!r} (the name given to "
                        "`rdbench data overlap` must match the dataset's)")
    return mine


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()
