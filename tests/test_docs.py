"""Numbers in the docs are what rdbench computes: every parameter count in docs/method.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rdbench.accounting import component_params

ROOT = Path(__file__).resolve().parent.parent


def table_counts(doc: Path) -> dict[str, int]:
    rows = {}
    for line in doc.read_text().splitlines():
        m = re.match(r"^\| `([a-z-]+/[a-z0-9-]+)` \|.*\| (-?[\d,]+) \|$", line)
        if m:
            rows[m.group(1)] = int(m.group(2).replace(",", ""))
    return rows


METHOD_COUNTS = table_counts(ROOT / "docs" / "method.md")


def test_method_doc_lists_every_rdb_component():
    assert {"adapter/cmaa", "attention/diff", "attention/hierarchical", "interaction/shared-mlp", "loss/dtcl",
            "weighting/uncertainty", "loss/ema-consistency", "loss/classification"} <= set(METHOD_COUNTS)


@pytest.mark.slow  # counts on ViT-B-32
@pytest.mark.parametrize("key", sorted(METHOD_COUNTS))
def test_method_doc_counts_match_rdbench(key):
    assert component_params(key, "ViT-B-32") == METHOD_COUNTS[key]


def baseline_counts() -> dict[str, int]:
    rows = {}
    for line in (ROOT / "docs" / "baselines.md").read_text().splitlines():
        m = re.match(r"^\| [^|]+ \| `(adapter/[a-z0-9-]+)` \|.*\| ([\d,]+) \| [^|]+ \|$", line)
        if m:
            rows[m.group(1)] = int(m.group(2).replace(",", ""))
    return rows


BASELINE_COUNTS = baseline_counts()


def test_baselines_doc_lists_every_baseline_adapter():
    from rdbench.registry import REGISTRY

    tagged = {e.key for e in REGISTRY.entries("adapter") if "baseline" in e.tags and e.key not in ("adapter/bottleneck", "adapter/symmetric")}
    assert tagged <= set(BASELINE_COUNTS), tagged - set(BASELINE_COUNTS)


@pytest.mark.slow  # counts on ViT-B-32
@pytest.mark.parametrize("key", sorted(BASELINE_COUNTS))
def test_baselines_doc_counts_match_rdbench(key):
    assert component_params(key, "ViT-B-32") == BASELINE_COUNTS[key]
