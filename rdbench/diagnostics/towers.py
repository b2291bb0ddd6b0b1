"""Which tower a trainable parameter belongs to, for the per-tower diagnostics.

A leaf module (no torch, no Lightning): the adapter contract's default ``tower_of`` is
:func:`tower_by_name`, and :mod:`rdbench.diagnostics.gradients` groups parameters with it.
"""

from __future__ import annotations

import re

TOWERS = ("image", "text", "shared")
_IMAGE = {"visual", "vision", "image", "img", "images"}
_TEXT = {"text", "txt", "texts", "context"}
#: open_clip's text tower lives at the top level of CLIP: these backbone names are text.
_TEXT_BACKBONE = ("model.transformer.", "model.token_embedding", "model.positional_embedding",
                  "model.ln_final", "model.text_projection")


def tower_by_name(name: str) -> str:
    """The tower of a module parameter from its dotted name: backbone names by open_clip's
    layout, adapter names by a word such as ``vision``/``image`` or ``text``/``context`` among
    their parts; anything else (and anything naming both) is ``shared``."""
    if name.startswith("model.visual."):
        return "image"
    if name.startswith(_TEXT_BACKBONE):
        return "text"
    words = set(re.split(r"[._\d]+", name.lower()))
    image, text = bool(words & _IMAGE), bool(words & _TEXT)
    return "image" if image and not text else "text" if text and not image else "shared"
