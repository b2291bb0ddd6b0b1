"""The embedded dataset: deterministic synthetic aerial scenes with RSICD-style captions.

Neither RSICD nor RSITMD can be downloaded by a program (docs/datasets.md, "The two datasets"), yet every suite,
test and tutorial needs a dataset that exists on any machine, so this module draws one.

Each image is a scene class from the real vocabulary: a land-cover texture typical of the class
(runway and grass, water and quays, plough stripes ...) plus a group of countable objects
(planes, ships, round tanks ...) whose attributes are what fine-grained captions talk about:
count (1-6), colour, size (small/large), position (nine regions) and, for elongated objects,
orientation. Two rendering domains share classes, objects and vocabulary but not their look:

``target``  the fine-tuning dataset: muted colours, multi-scale texture, sensor grain; five
            captions per image in varied wording that mention different subsets of the
            attributes. Scene-only captions come from a small per-class pool, so exact
            duplicates occur across and within images, as in RSICD.
``source``  a pre-training corpus for a tiny CLIP: brighter, warmer, saturated, posterised and
            smooth; templated lower-case captions naming the class and at most one attribute.

A model pre-trained on ``source`` knows the classes and words but must adapt to a new look and
to captions that combine attributes: zero-shot transfer is partial and fine-tuning helps most on
fine-grained captions, which is what RDB claims to improve.

Determinism is per image: image ``k`` of a stream has its own seeded generator and classes are
dealt in shuffled blocks holding each class once, so a split's first images do not depend on its
size, and the train split does not depend on the sizes of val or test.

Three modules share the work: :mod:`rdbench.data.synthetic.scenes` (what an image shows and its
captions), :mod:`rdbench.data.synthetic.render` (how it is drawn) and this one (streams of images, and
the format-A files on disk). The names of the first two stay importable from here.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from rdbench.atomic import write_atomic
from rdbench.data.formats.karpathy import write_karpathy_json
from rdbench.data.synthetic.render import render_scene
# The vocabulary moved to rdbench.data.synthetic.scenes; its names stay importable from here.
from rdbench.data.synthetic.scenes import (  # noqa: F401
    _CLASS_SPECS,
    _KINDS,
    CLASSES,
    COLOURS,
    POSITIONS,
    Scene,
    captions_for,
    check_detail,
    sample_scene,
)
from rdbench.data.table import SPLITS
from rdbench.errors import DataError

GENERATOR_VERSION = 1
"""Bump whenever the same arguments would produce different files, so old copies regenerate."""

DOMAINS: tuple[str, ...] = ("target", "source")
JSON_NAME = "dataset_synthetic_rs.json"
DEFAULT_SPLITS: Mapping[str, int] = {"train": 400, "val": 100, "test": 100}

# Entropy words for numpy's SeedSequence, distinct per domain and stream, so the source corpus,
# the in-memory pairs and each written split are independent draws.
_DOMAIN_CODE = {"target": 1, "source": 2}
_STREAM_CODE = {"pairs": 0, "train": 1, "val": 2, "test": 3}


def _class_sequence(n: int, *, seed: int, domain: str, stream: str) -> list[int]:
    """Class index of each image: every block of len(CLASSES) images holds each class once, in
    an order seeded per block, so the sequence is balanced and a prefix-stable function of the
    image index."""
    order: list[int] = []
    for block in range(-(-n // len(CLASSES))):
        rng = np.random.default_rng([seed, _DOMAIN_CODE[domain], _STREAM_CODE[stream], 0, block])
        order.extend(int(c) for c in rng.permutation(len(CLASSES)))
    return order[:n]


@dataclass
class SyntheticPairs:
    """Images with their captions, in memory.

    ``images`` is uint8, N x H x W x 3; ``captions[i]`` holds the five captions of image ``i``;
    ``labels[i]`` its scene class; ``attributes[i]`` what was drawn (object, count, colour, size,
    position, orientation): the ground truth behind each caption, for tests and analyses.
    """

    images: np.ndarray
    captions: list[list[str]]
    labels: list[str]
    attributes: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)


def _check_common(domain: str, image_size: int, seed: int) -> None:
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r} (expected one of {', '.join(DOMAINS)})")
    if not isinstance(image_size, int) or image_size < 16:
        raise ValueError(f"image_size must be an integer of at least 16, got {image_size!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def _generate(n: int, *, domain: str, image_size: int, seed: int, stream: str,
              detail: float | None = None) -> SyntheticPairs:
    images = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    captions, labels, attributes = [], [], []
    for index, class_index in enumerate(_class_sequence(n, seed=seed, domain=domain,
                                                        stream=stream)):
        rng = np.random.default_rng([seed, _DOMAIN_CODE[domain], _STREAM_CODE[stream], 1, index])
        scene = sample_scene(CLASSES[class_index], rng)
        images[index] = render_scene(scene, rng, size=image_size, domain=domain)
        captions.append(captions_for(scene, rng, domain=domain, detail=detail))
        labels.append(scene.label)
        attributes.append(asdict(scene))
    return SyntheticPairs(images=images, captions=captions, labels=labels, attributes=attributes)


def generate_pairs(n_images: int, *, domain: str, image_size: int = 64,
                   seed: int = 0) -> SyntheticPairs:
    """Draw ``n_images`` images of one domain with five captions each, in memory.

    Classes are balanced (each block of 12 images holds every class once). Same arguments, same
    arrays and strings; another seed, other ones. This stream is independent of the splits that
    :func:`write_synthetic_dataset` writes, so a ``source`` corpus never repeats a test scene.
    """
    if not isinstance(n_images, int) or n_images < 0:
        raise ValueError(f"n_images must be a non-negative integer, got {n_images!r}")
    _check_common(domain, image_size, seed)
    return _generate(n_images, domain=domain, image_size=image_size, seed=seed, stream="pairs")


def _png_bytes(image: np.ndarray) -> bytes:
    # Fixed compression settings and no metadata: PIL writes no timestamp into PNGs, so the bytes
    # depend only on the pixels (and zlib, which is stable for a fixed level).
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _generator_header(splits: Mapping[str, int], image_size: int, seed: int,
                      detail: float | None = None) -> dict[str, Any]:
    header = {"name": "rdbench.data.synthetic", "version": GENERATOR_VERSION, "domain": "target",
              "splits": {name: int(splits[name]) for name in SPLITS if name in splits},
              "image_size": image_size, "seed": seed}
    if detail is not None:  # the embedded mix keeps the header (and files) it always had
        header["detail"] = float(detail)
    return header


def _is_up_to_date(json_path: Path, header: dict[str, Any]) -> bool:
    """True when ``json_path`` was written by this generator with these arguments and every
    image it lists is still there. A file not written by the generator raises: it may be a real
    dataset that the user pointed to by mistake, and it must not be overwritten."""
    if not json_path.exists():
        return False
    try:
        document = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        document = None
    if not isinstance(document, dict) or "rdbench_generator" not in document:
        raise DataError(f"{json_path}: exists but was not written by the synthetic generator; "
                        "refusing to overwrite it (choose another root)")
    if document["rdbench_generator"] != header:
        return False
    images = document.get("images")
    if not isinstance(images, list):
        return False
    folder = json_path.parent / "images"
    return all(isinstance(e, dict) and (folder / str(e.get("filename"))).is_file()
               for e in images)


def write_synthetic_dataset(root: str | os.PathLike[str], *,
                            splits: Mapping[str, int] | None = None, image_size: int = 64,
                            seed: int = 0, detail: float | None = None) -> Path:
    """Write the embedded target-domain dataset in format A under ``root``; return the JSON path.

    ``detail`` is the premise dial (:func:`rdbench.data.synthetic.scenes.captions_for`); the
    images do not depend on it, only the captions.

    Images go to ``root/images/<class>_<NNNN>.png`` (numbered per class over train, val, test,
    as RSICD numbers its files), annotations to ``root/dataset_synthetic_rs.json`` with no
    ``label`` field, so that labels come from the file names exactly as for RSICD. A top-level
    ``rdbench_generator`` field records the arguments and :data:`GENERATOR_VERSION`.

    Calling it again with the same arguments does nothing once the JSON matches and its images
    exist; the images are written before the JSON (each atomically), so an interrupted run
    leaves no JSON and is redone. Different arguments regenerate; stale images from an earlier
    configuration are left in place, since the JSON alone says which files belong to the dataset.
    Same arguments give byte-identical files.
    """
    splits = dict(DEFAULT_SPLITS if splits is None else splits)
    for name, count in splits.items():
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r} (expected one of {', '.join(SPLITS)})")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ValueError(f"split size for {name!r} must be a non-negative integer, "
                             f"got {count!r}")
    _check_common("target", image_size, seed)
    check_detail(detail)

    root_path = Path(root)
    json_path = root_path / JSON_NAME
    header = _generator_header(splits, image_size, seed, detail)
    if _is_up_to_date(json_path, header):
        return json_path

    image_folder = root_path / "images"
    image_folder.mkdir(parents=True, exist_ok=True)
    per_class = {name: 0 for name in CLASSES}
    entries: list[dict[str, Any]] = []
    for split in SPLITS:  # canonical order, whatever order the mapping came in
        if split not in splits:
            continue
        pairs = _generate(splits[split], domain="target", image_size=image_size, seed=seed,
                          stream=split, detail=detail)
        for image, caption_group, label in zip(pairs.images, pairs.captions, pairs.labels):
            filename = f"{label}_{per_class[label]:04d}.png"
            per_class[label] += 1
            write_atomic(image_folder / filename, _png_bytes(image))
            entries.append({"filename": filename, "split": split, "captions": caption_group})
    return write_karpathy_json(json_path, entries, dataset="synthetic_rs",
                               header={"rdbench_generator": header})


__all__ = ["CLASSES", "COLOURS", "DOMAINS", "GENERATOR_VERSION", "JSON_NAME", "POSITIONS", "Scene",
           "SyntheticPairs", "captions_for", "generate_pairs", "render_scene", "sample_scene",
           "write_synthetic_dataset"]
