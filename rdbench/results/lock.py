"""Per-run locks: two ``rdbench run`` processes on one results folder never run the same run.

A lock is an advisory ``flock`` on ``<run folder>/.lock``, held while the run executes. The
operating system drops it when the holder dies, even by ``kill -9``, so a lock left behind by a
dead process is never trusted: the next process takes it over (and says so, using the pid the
file records). ``flock`` works on local filesystems and on NFSv4; on a filesystem without
working locks, use separate results folders per machine and merge them for ``compare``.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path


class RunLock:
    """An exclusive, non-blocking lock on one run folder."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / ".lock"
        self._fd: int | None = None
        self.previous: dict | None = None  # what the file said before we took it

    def acquire(self) -> bool:
        """True if this process now holds the lock; False if a live process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.previous = _read_holder(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
        self._fd = fd
        return True

    @property
    def took_over_stale(self) -> bool:
        """Whether the lock file named another process (which has died, or we would not hold it)."""
        return bool(self.previous) and self.previous.get("pid") != os.getpid()

    def holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text() or "null")
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> dict | None:
    data = os.pread(fd, 4096, 0)
    try:
        return json.loads(data) if data else None
    except ValueError:
        return None
