"""The decoded-image cache: each split decoded and resized once, then memory-mapped.

Decoding 10,000 JPEGs takes longer than an epoch of a small adapter, and every run and seed of a
suite decodes the same files. So a split's images are decoded once into one uint8 array
(N, 3, S, S) stored as ``.npy`` under ``$RDBENCH_CACHE/images/`` and memory-mapped afterwards:
epochs, runs and seeds share it, the operating system keeps the hot pages in memory, and
DataLoader workers read the same pages instead of each holding a copy.

The file name is a hash of what determines the pixels: the dataset fingerprint, the split, the
resize (size and filter), a format version, and each image's path, byte size and modification
time, so that replacing or repairing one image file is never served stale pixels. It is written
to a temporary file in the same folder, fsynced and renamed into place only when complete
(:func:`rdbench.atomic.atomic_path`), so a crash leaves at most a stray temporary file, never a
half cache that a later run trusts.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from rdbench.atomic import atomic_path
from rdbench.cache_files import record_digest, trusted
from rdbench.data.loading.images import decode_into, parallel_map
from rdbench.errors import DataError

CACHE_VERSION = 1
"""Bump when the decoding changes (filter, colour conversion), so old arrays are not reused."""


def image_cache_dir() -> Path:
    """``$RDBENCH_CACHE/images`` (the same root as the embedded backbone's weights)."""
    from rdbench.backbones.tiny_rs import cache_dir

    return cache_dir() / "images"


def _stat(path: str) -> list:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror or error})") from None
    return [path, st.st_size, st.st_mtime_ns]


def cache_key(fingerprint: str, split: str, size: int, paths: list[str]) -> str:
    """The hash naming a split's cache file (see the module docstring for what it covers)."""
    digest = hashlib.sha256(json.dumps({"version": CACHE_VERSION, "fingerprint": fingerprint,
                                        "split": split, "size": size, "resample": "bicubic"},
                                       sort_keys=True).encode())
    for entry in parallel_map(_stat, paths, workers=4):
        digest.update(json.dumps(entry).encode() + b"\n")
    return digest.hexdigest()[:24]


def decode_all(paths: list[str], size: int, out: np.ndarray) -> None:
    """Decode every image into ``out`` (N, 3, size, size), in parallel."""
    def one(index: int) -> None:
        decode_into(paths[index], size, out[index])

    parallel_map(one, range(len(paths)))


def load_or_build(paths: list[str], size: int, *, fingerprint: str, split: str,
                  folder: Path | None = None) -> torch.Tensor:
    """The images of ``paths`` as uint8 (N, 3, size, size), from the cache or decoded into it.

    The tensor is a copy-on-write memory map: reading shares the file's pages, writing (which
    nothing in rdbench does) would stay private to the process. When the cache folder cannot be
    written, the images are decoded into memory with a warning rather than failing the run.
    """
    folder = Path(folder) if folder is not None else image_cache_dir()
    shape = (len(paths), 3, size, size)
    path = folder / f"{split}-{size}px-{cache_key(fingerprint, split, size, paths)}.npy"
    if path.is_file() and trusted(path, f"{split} images"):
        array = _open(path, shape)
        if array is not None:
            return torch.from_numpy(array)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _build(path, paths, size, shape)
    except OSError as error:
        warnings.warn(f"{folder}: image cache not writable ({error.strerror or error}); decoding "
                      "into memory", stacklevel=2)
        array = np.empty(shape, np.uint8)
        decode_all(paths, size, array)
        return torch.from_numpy(array)
    array = _open(path, shape)
    if array is None:  # pragma: no cover - another process replaced it with something else
        raise DataError(f"{path}: image cache has an unexpected shape; delete it")
    return torch.from_numpy(array)


def _open(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    try:
        array = np.load(path, mmap_mode="c")
    except (OSError, ValueError):
        return None  # unreadable header: rebuilt below and replaced atomically
    if array.dtype != np.uint8 or array.shape != shape:
        return None
    return array


def _build(path: Path, paths: list[str], size: int, shape: tuple[int, ...]) -> None:
    with atomic_path(path, suffix=".tmp.npy") as temp:
        array = np.lib.format.open_memmap(temp, mode="w+", dtype=np.uint8, shape=shape)
        decode_all(paths, size, array)
        array.flush()
        del array  # closes the memory map before the file is fsynced and renamed
    record_digest(path)
