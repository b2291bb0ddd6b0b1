"""The diagnostics a comparison table can show (``rdbench compare --columns diagnostics``).

A leaf module: :mod:`rdbench.results.load` flattens each record's ``diagnostics`` section into
these ``diag/...`` values, averaged over seeds like metrics, and :mod:`rdbench.results.model`
labels them. The names say which split a geometry value was measured on; the gradient values
are training means (docs/diagnostics.md).
"""

from __future__ import annotations

import math
from typing import Any

#: Column key -> (record section, field, header).
COLUMNS: dict[str, tuple[str, str, str]] = {
    "diag/grad_ratio_text_image": ("train", "grad_ratio_text_image", "grad text/image"),
    "diag/update_image": ("train", "update_image", "update image"),
    "diag/update_text": ("train", "update_text", "update text"),
    "diag/test_modality_gap": ("test", "modality_gap", "gap"),
    "diag/test_alignment": ("test", "alignment", "alignment"),
    "diag/test_uniformity": ("test", "uniformity", "uniformity"),
    "diag/val_modality_gap": ("val", "modality_gap", "val gap"),
}
#: What ``--columns diagnostics`` expands to (the val gap is in the logs and the record).
DEFAULT = ("diag/grad_ratio_text_image", "diag/update_image", "diag/update_text",
           "diag/test_modality_gap", "diag/test_alignment", "diag/test_uniformity")


def flatten(diagnostics: Any) -> dict[str, float]:
    """The finite numbers of a record's ``diagnostics`` under their column keys; anything
    missing, malformed or not finite is left out (diagnostics are informative, never fatal)."""
    out: dict[str, float] = {}
    if not isinstance(diagnostics, dict):
        return out
    for key, (section, name, _header) in COLUMNS.items():
        part = diagnostics.get(section)
        value = part.get(name) if isinstance(part, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[key] = float(value)
    return out


def header(key: str) -> str | None:
    """The column header of a ``diag/...`` key (None for an unknown one)."""
    spec = COLUMNS.get(key)
    return spec[2] if spec else None
