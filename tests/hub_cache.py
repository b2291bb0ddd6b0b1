"""A file placed where huggingface_hub keeps a downloaded one, for tests without a network."""

from __future__ import annotations

from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def place_in_hub_cache(cache: Path, repo: str, filename: str, content: bytes = b"weights") -> Path:
    """Write ``content`` as ``repo``/``filename`` in the hub cache ``cache`` (refs/main pointing
    at a snapshot holding it); the path of the file."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(COMMIT)
    path = folder / "snapshots" / COMMIT / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path
