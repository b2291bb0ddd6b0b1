"""Cache files that are verified before they are trusted: a SHA-256 written beside each entry.

rdbench caches what is expensive to rebuild and cheap to check: the embedded backbone's weights
(``$RDBENCH_CACHE/backbones``) and the decoded images of each split (``$RDBENCH_CACHE/images``).
A cache entry that a full disk, a cut copy or a stray write has damaged would otherwise give
wrong results marked success (zeroing 2 MB of the backbone moved val mR by 0.13; noise in the
decoded test images took test mR from 12.23 to 3.33). So every entry is written with a
``<file>.sha256`` beside it, and :func:`trusted` checks the file against it once per process (a
few milliseconds for these sizes; the answer is kept while the file's size and modification
time stay the same). An entry that fails, or has no checksum, is rebuilt with one warning line.

This is a leaf module: it imports nothing from rdbench.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from rdbench.atomic import write_atomic

__all__ = ["digest_path", "record_digest", "trusted"]

_checked: dict[str, tuple[int, int]] = {}  # path -> (size, mtime_ns) of the file that passed


def digest_path(path: str | os.PathLike[str]) -> Path:
    return Path(f"{os.fspath(path)}.sha256")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record_digest(path: str | os.PathLike[str]) -> None:
    """Write the checksum of the entry just written at ``path`` beside it."""
    path = Path(path)
    write_atomic(digest_path(path), file_sha256(path) + "\n")
    stat = path.stat()
    _checked[str(path)] = (stat.st_size, stat.st_mtime_ns)


def trusted(path: str | os.PathLike[str], what: str) -> bool:
    """Whether the cache entry at ``path`` exists and matches its checksum. A damaged or
    unverifiable entry prints one warning naming it (``what`` says what it holds) and gives
    False: the caller rebuilds it."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return False
    if _checked.get(str(path)) == (stat.st_size, stat.st_mtime_ns):
        return True
    try:
        expected = digest_path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        expected = None
    if expected is None:
        problem = "has no checksum beside it (written by an older rdbench, or cut short)"
    elif file_sha256(path) != expected:
        problem = "does not match its checksum (damaged)"
    else:
        _checked[str(path)] = (stat.st_size, stat.st_mtime_ns)
        return True
    print(f"warning: {path}: cached {what} {problem}; rebuilding it", file=sys.stderr, flush=True)
    return False
