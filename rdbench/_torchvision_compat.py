"""Make ``import open_clip`` work when torchvision's compiled ops do not match torch.

open_clip imports torchvision (for its transforms). On a CPU-only machine the natural pair is
the CPU wheel of torch with PyPI's torchvision, which is a CUDA build: its compiled library does
not load, and torchvision's Python side then fails at import on
``operator torchvision::nms does not exist`` because it registers fake kernels for ops that were
never defined. rdbench uses none of torchvision's compiled ops (only transforms), so defining
the two op *schemas* (``nms``, ``qnms``) lets the import finish. Calling those ops would still
fail loudly, which is what we want.

When the builds match, the first import succeeds and this module does nothing.
"""

from __future__ import annotations

import sys

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = None  # keeps the torch.library.Library alive; a dropped Library unregisters its ops


def ensure_torchvision_importable() -> None:
    """Import torchvision, defining missing op schemas first if its compiled ops did not load."""
    global _library
    if "torchvision" in sys.modules and hasattr(sys.modules["torchvision"], "transforms"):
        return
    try:
        import torchvision  # noqa: F401
        return
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc):
            raise
    import torch

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    _library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        _library.define(schema)
    import torchvision  # noqa: F401,F811
