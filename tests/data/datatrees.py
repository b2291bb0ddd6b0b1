"""Small dataset folders in each of the five annotation formats, written by the tests.

One content (:func:`content`) is written in any format, so that readers can be compared by the
fingerprints of their tables. It has the quirks of the real releases: TIFF, PNG and JPEG
images, an image without a class in its name, a grayscale and a palette image, captions repeated
within and across images, and a non-ASCII caption (so that a gb18030 CSV differs from UTF-8).
``broken=True`` adds an image that is listed but missing and one whose file is truncated.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from rdbench.data.formats.karpathy import write_karpathy_json

CLASSES = ("airport", "beach", "forest", "port", "storage_tanks")


@dataclass
class Item:
    filename: str
    split: str
    captions: list[str]
    mode: str = "RGB"  # RGB, L (grayscale) or P (palette)
    broken: str | None = None  # None, "missing" or "truncated"
    seed: int = 0
    size: int = 24
    label: str | None = field(default=None)


def content(train_per_class: int = 4, val: bool = False, broken: bool = False, size: int = 24) -> list[Item]:
    """The shared content: ``train_per_class`` train images per class (+ specials), two test
    images per class, and (with ``val``) one val image per class."""
    items: list[Item] = []
    ext = {"airport": "tif", "beach": "png", "forest": "jpg", "port": "png", "storage_tanks": "tif"}
    n = 0
    for split, count in (("train", train_per_class), ("val", 1 if val else 0), ("test", 2)):
        for cls in CLASSES:
            for _ in range(count):
                n += 1
                words = cls.replace("_", " ")
                caps = [f"This is a {words}.", f"A {words} seen from above, number {n}.",
                        f"Image {n} shows a {words}.", f"There is a {words} here.", f"This is a {words}."]
                items.append(Item(f"{cls}_{n}.{ext[cls]}", split, caps, seed=n, size=size))
    # Specials: no class in the name; grayscale; palette; a non-ASCII caption.
    items.append(Item("00017.jpg", "train", ["An image with a numeric name.", "Numbers only.",
                                              "This is a forest.", "No class here.", "A café by the 机场."],
                      seed=101, size=size))
    items.append(Item("beach_90.png", "train", ["A grey beach.", "Sand and sea in grey.", "A beach.",
                                                 "Waves on a beach.", "A grey image."], mode="L", seed=102, size=size))
    items.append(Item("port_91.png", "test", ["A port with a palette.", "Ships in a port.", "A port.",
                                               "Boats near piers.", "A harbour."], mode="P", seed=103, size=size))
    if broken:
        items.append(Item("forest_92.jpg", "train", ["A missing forest."] * 5, broken="missing", seed=104, size=size))
        items.append(Item("airport_93.jpg", "train", ["A truncated airport."] * 5, broken="truncated", seed=105, size=size))
    return items


def image_bytes(item: Item) -> bytes:
    rng = np.random.default_rng(item.seed)
    base = rng.integers(0, 256, (4, 4, 3)).astype(np.float32)
    pixels = np.kron(base, np.ones((item.size // 4 + 1, item.size // 4 + 1, 1)))[: item.size, : item.size]
    pixels = np.clip(pixels + rng.normal(0, 8, pixels.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels)
    if item.mode == "L":
        img = img.convert("L")
    elif item.mode == "P":
        img = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    fmt = {"tif": "TIFF", "png": "PNG", "jpg": "JPEG"}[item.filename.rsplit(".", 1)[1]]
    buffer = io.BytesIO()
    img.save(buffer, format=fmt)
    data = buffer.getvalue()
    return data[: len(data) // 2] if item.broken == "truncated" else data


def write_images(items: list[Item], folder: Path, *, split_folders: bool = False) -> None:
    for item in items:
        if item.broken == "missing":
            continue
        target = folder / item.split / item.filename if split_folders else folder / item.filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(image_bytes(item))


def write_a(root: Path, items: list[Item], name: str = "rsicd") -> Path:
    write_images(items, root / "images")
    entries = [{"filename": i.filename, "split": i.split, "captions": i.captions} for i in items]
    write_karpathy_json(root / f"dataset_{name}.json", entries, dataset=name)
    return root


def write_b(root: Path, items: list[Item]) -> Path:
    """Train: one file name per image; test: one per caption (as the precomp releases)."""
    write_images(items, root / "images")
    for split in ("train", "test"):
        part = [i for i in items if i.split == split]
        caps = [c for i in part for c in i.captions]
        names = [i.filename for i in part] if split == "train" else [i.filename for i in part for _ in i.captions]
        (root / f"{split}_caps.txt").write_text("\n".join(caps) + "\n", encoding="utf-8")
        (root / f"{split}_filename.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    return root


def write_c(root: Path, items: list[Item], name: str = "rsicd") -> Path:
    """PIR/HarMA records, images in split folders (train/x.tif) as their configs expect."""
    write_images(items, root / "images", split_folders=True)
    for split in ("train", "val", "test"):
        part = [i for i in items if i.split == split]
        if not part:
            continue
        if split == "train":
            from rdbench.data.table import label_from_filename

            records = [{"caption": c, "image": f"train/{i.filename}", "image_id": k,
                        "label_name": label_from_filename(i.filename), "label": 0}
                       for k, i in enumerate(part) for c in i.captions]
            for r in records:  # an image without a class has no label_name
                if r["label_name"] is None:
                    del r["label_name"]
        else:
            records = [{"image": f"{split}/{i.filename}", "caption": i.captions} for i in part]
        (root / f"{name}_{split}.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return root


def write_d(root: Path, items: list[Item], name: str = "rsicd", encoding: str = "gb18030") -> Path:
    """GeoRSCLIP's ``filename,title`` CSV, one row per caption, rows of an image scattered."""
    write_images(items, root / "images")
    for split in ("train", "val", "test"):
        part = [i for i in items if i.split == split]
        if not part:
            continue
        rows = [(i.filename, c) for k in range(5) for i in part for c in i.captions[k:k + 1]]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["filename", "title"])
        writer.writerows(rows)
        (root / f"{name}_{split}.csv").write_bytes(buffer.getvalue().encode(encoding))
    return root


def write_e(root: Path, items: list[Item]) -> Path:
    """open_clip's tab-separated ``filepath\\ttitle`` files with absolute image paths."""
    write_images(items, root / "pictures")
    for split in ("train", "val", "test"):
        part = [i for i in items if i.split == split]
        if not part:
            continue
        lines = ["filepath\ttitle"] + [f"{root / 'pictures' / i.filename}\t{c}" for i in part for c in i.captions]
        (root / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


WRITERS = {"A": write_a, "B": write_b, "C": write_c, "D": write_d, "E": write_e}
