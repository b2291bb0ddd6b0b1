"""Shared test setup: offline hub, a private cache, and small writers of real-format data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RDBENCH_DISABLE_PLUGINS", "1")  # plugin tests switch it back on themselves

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _rdbench_cache(tmp_path_factory):
    """One cache per test session unless the caller set RDBENCH_CACHE (CI reuses the user's)."""
    if "RDBENCH_CACHE" not in os.environ:
        os.environ["RDBENCH_CACHE"] = str(tmp_path_factory.mktemp("rdbench-cache"))
    yield
