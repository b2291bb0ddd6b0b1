"""Image files: decoding to RGB uint8, checking, and the hashes that find shared images.

Everything that opens an image goes through :func:`open_rgb`, so grayscale (``L``), palette
(``P``), 16-bit and alpha images are treated alike everywhere (converted to RGB, alpha dropped),
and a missing or truncated file is the same one-line :class:`DataError` naming the file
whether training, verification or the overlap search found it.

Two hashes find images shared between datasets (RSICD and RSITMD share scenes, docs/datasets.md,
"Cross-dataset leakage"): :func:`pixel_sha256` of the decoded pixels, equal for lossless re-encodings (PNG
and TIFF of one image) whatever the container, and the perceptual :func:`dhash` /
:func:`phash`, close (in Hamming distance) for resized or re-compressed copies.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

import numpy as np
import torch
from PIL import Image

from rdbench.errors import DataError

T = TypeVar("T")
RESAMPLE = Image.Resampling.BICUBIC  # what CLIP's own preprocessing uses


def open_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """The image at ``path``, fully decoded, as RGB; DataError naming the file otherwise."""
    try:
        with Image.open(path) as img:
            img.load()  # decode now: a truncated file fails here, not later in a worker
            if img.mode == "RGB":
                return img.copy()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit TIFFs: scale, don't clip
                array = np.asarray(img, dtype=np.float64)
                top = max(float(array.max()), 1.0)
                img = Image.fromarray((array * (255.0 / (65535.0 if top > 255 else 255.0))).astype(np.uint8))
            return img.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not an image") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: image cannot be decoded ({_one_line(exc)})") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def decode_image(path: str | os.PathLike[str], size: int) -> torch.Tensor:
    """RGB uint8 (3, size, size): converted from any mode, resized (bicubic) when needed."""
    img = open_rgb(path)
    if img.size != (size, size):
        img = img.resize((size, size), RESAMPLE)
    data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return data.view(size, size, 3).permute(2, 0, 1).contiguous()


def decode_into(path: str, size: int, out: np.ndarray) -> None:
    """Decode ``path`` into ``out`` (3, size, size) uint8 without an intermediate tensor."""
    img = open_rgb(path)
    if img.size != (size, size):
        img = img.resize((size, size), RESAMPLE)
    out[...] = np.asarray(img).transpose(2, 0, 1)


def pixel_sha256(img: Image.Image) -> str:
    """SHA-256 of the RGB pixels and the size: the container and compression do not count."""
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    digest = hashlib.sha256(f"rgb8:{rgb.size[0]}x{rgb.size[1]}\n".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()


def _grey(img: Image.Image, width: int, height: int) -> np.ndarray:
    return np.asarray(img.convert("L").resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def dhash(img: Image.Image, bits: int = 8) -> int:
    """Difference hash: is each pixel of a (bits+1) x bits grey thumbnail brighter than the next?

    Insensitive to size, compression and global brightness; ``bits`` = 8 gives 64 bits.
    """
    grey = _grey(img, bits + 1, bits)
    return _pack(grey[:, 1:] > grey[:, :-1])


def _dct_matrix(n: int) -> np.ndarray:
    k, x = np.arange(n)[:, None], np.arange(n)[None, :]
    return np.cos(np.pi * (2 * x + 1) * k / (2 * n)).astype(np.float32)


def phash(img: Image.Image, bits: int = 8) -> int:
    """Perceptual hash: the signs of the low frequencies (DCT of a 32 x 32 grey thumbnail)
    against their median; more robust than dHash to blur and small shifts."""
    size = 4 * bits
    d = _dct_matrix(size)
    low = (d @ _grey(img, size, size) @ d.T)[:bits, :bits].ravel()
    return _pack(low > np.median(low[1:]))


def _pack(bits: np.ndarray) -> int:
    value = 0
    for bit in bits.ravel():
        value = (value << 1) | int(bit)
    return value


def thumbnail(img: Image.Image, size: int = 16) -> np.ndarray:
    """A small grey thumbnail in [0, 1], to confirm a near-duplicate that a hash proposed."""
    return _grey(img, size, size) / 255.0


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances between two vectors of 64-bit hashes (uint64), len(a) x len(b)."""
    x = a[:, None] ^ b[None, :]
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.int16)
    as_bytes = x.view(np.uint8).reshape(*x.shape, 8)
    return np.unpackbits(as_bytes, axis=-1).sum(axis=-1, dtype=np.int16)


def parallel_map(fn: Callable[[str], T], items: Iterable[str], workers: int | None = None) -> list[T]:
    """``[fn(i) for i in items]`` on a thread pool (PIL decodes with the GIL released)."""
    items = list(items)
    workers = workers or min(8, os.cpu_count() or 1)
    if workers <= 1 or len(items) < 8:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items, chunksize=16))
