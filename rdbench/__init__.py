"""rdbench: a benchmark and ablation framework for parameter-efficient fine-tuning of CLIP dual
encoders on remote-sensing image-text retrieval (RSICD, RSITMD), built around the RDB method
(Ning et al., 2025)."""

__version__ = "0.1.0"

# torchvision is imported by open_clip, torchmetrics and Lightning alike; make it importable
# before any of them is (see _torchvision_compat: a no-op where torch and torchvision match).
from rdbench._torchvision_compat import ensure_torchvision_importable as _ensure

_ensure()
del _ensure


def _register_builtins() -> None:
    import rdbench.builtin_components  # noqa: F401  (each component module registers itself)


from rdbench.registry import REGISTRY as _REGISTRY  # noqa: E402

_REGISTRY.add_source(_register_builtins)
del _REGISTRY
