"""Atomic, durable file writes: a reader sees the old file or the new one, never half of one.

Every file rdbench writes that something later trusts (records, configs, per-query ranks,
checkpoints, the tiny-rs weights, annotation files, the decoded-image cache, tuning snippets,
the bench report) goes through this module. The recipe is always the same:

1. write to a temporary file in the target's own folder (``os.replace`` is atomic only within
   one file system), named ``.<name>.<random>.tmp`` so that it is hidden and never collides;
2. flush and ``fsync`` the temporary file, so its bytes are on disk before it gets the name;
3. ``os.replace`` it onto the target;
4. ``fsync`` the folder, so that the rename itself survives a power cut (where the platform
   refuses to fsync a folder, that step is skipped).

On any exception before the rename the temporary file is removed, so a failed write leaves the
previous file untouched and no litter. Temporary files are created with ``os.open`` and mode
0o666 (minus the umask), so the result has the usual permissions (``tempfile.mkstemp`` would
make them owner-only).

This is a leaf module: it imports nothing from rdbench, so any module may use it.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "fsync_dir", "replace_file", "write_atomic", "write_json", "write_yaml"]


def _temp_path(path: Path, suffix: str = ".tmp") -> Path:
    return path.parent / f".{path.name}.{uuid.uuid4().hex}{suffix}"


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """``fsync`` a folder so that a rename inside it is durable; a no-op where that is refused."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a folder this way
        return
    try:
        os.fsync(fd)
    except OSError:  # some platforms and file systems refuse to fsync a folder
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def replace_file(temp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Move a finished ``temp`` file onto ``path`` durably: fsync it, rename, fsync the folder.

    For files that another library writes itself (a Lightning checkpoint, a memory-mapped
    array): let it write ``temp`` (in the same folder as ``path``), then call this.
    """
    temp, path = Path(temp), Path(path)
    _fsync_file(temp)
    os.replace(temp, path)
    fsync_dir(path.parent)


@contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; on success it replaces ``path``.

    ``with atomic_path(target) as temp: torch.save(state, temp)``. The file at ``temp`` is
    fsynced, renamed onto ``path`` and the folder fsynced when the block ends without an
    exception; otherwise it is removed and the exception propagates. Parent folders are
    created. ``suffix`` ends the temporary name (for writers that insist on an extension).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_path(path, suffix)
    try:
        yield temp
        _fsync_file(temp)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write ``data`` (``str`` is encoded as UTF-8) to ``path`` atomically and durably."""
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_path(path)
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """``obj`` as indented JSON (keys in their order, non-JSON values as ``str``), atomically."""
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_yaml(path: str | os.PathLike[str], obj: Any) -> None:
    """``obj`` as YAML (``yaml.safe_dump``, keys in their order, Unicode kept), atomically."""
    import yaml

    write_atomic(path, yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))
