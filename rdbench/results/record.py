"""The run record (``record.json``, schema version 1) and atomic writes.

A record is written once per run and seed, always atomically (a temporary file in the same
folder, flushed and fsynced, then renamed over the target), so that a reader never sees half a
record and a crash never leaves a corrupt one.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

SCHEMA_VERSION = 1
RECORD_FILE = "record.json"
CONFIG_FILE = "config.yaml"
#: Per-query ranks on the test split: {"split": "test", "i2t": [rank per image], "t2i": [rank per caption]}.
RANKS_FILE = "test_ranks.json"
PACKAGES = ("rdbench", "torch", "torchvision", "open_clip_torch", "lightning", "polars", "numpy")


def write_atomic(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_yaml(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def read_record(path: Path) -> dict[str, Any] | None:
    """The record at ``path``, or None if it is absent or unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def code_version() -> str:
    """The git commit of the rdbench checkout (with ``+dirty``), else the package version."""
    from rdbench import __version__

    root = Path(__file__).resolve().parent.parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return __version__
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return __version__
