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


@pytest.mark.parametrize("key", sorted(METHOD_COUNTS))
def test_method_doc_counts_match_rdbench(key):
    assert component_params(key, "ViT-B-32") == METHOD_COUNTS[key]
