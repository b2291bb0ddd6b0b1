"""Parameter accounting: how many parameters each component trains on a given backbone.

Counts are taken on a randomly initialised open_clip model of the architecture (no weights are
needed to count), with the component attached exactly as a run attaches it. Shared parameters
(an interaction layer used by both towers) are counted once.

* ``adapter/*``: what the adapter declares trainable;
* ``attention/*`` and ``interaction/*``: what they add to a CMAA skeleton (bottleneck 64, every
  block of both towers) over the same skeleton without them;
* ``loss/*`` and ``weighting/*``: their own parameters (classification heads sized for
  ``num_classes`` scene classes, RSICD's 30 by default).

Every component is counted at its defaults, the configuration that docs/method.md and
docs/baselines.md tabulate. Only an argument that is required and has no default
(``loss/composite``'s ``terms``) is taken from the example the component declares where it is
registered (:attr:`rdbench.registry.Entry.example`; a plugin's class attribute ``example``).
The rest of an example is not used: examples are sized for the tiny test model
(``adapter/mrs-adapter`` with ``shared: 8``) and would not give the ViT-B/32 counts.
"""

from __future__ import annotations

import functools
import inspect
from types import SimpleNamespace
from typing import Any

from torch import nn

from rdbench.registry import REGISTRY
from rdbench.resolution.spec import resolve

COUNTED_KINDS = ("adapter", "attention", "interaction", "loss", "weighting")


@functools.lru_cache(maxsize=4)
def _state(architecture: str) -> dict:
    from rdbench.backbones.base import OpenCLIPBackbone
    from rdbench.backbones.tiny_rs import register_architecture

    register_architecture()
    return OpenCLIPBackbone(architecture).build_model().state_dict()


def fresh_model(architecture: str) -> nn.Module:
    """A randomly initialised model of ``architecture`` (weights drawn once, then copied)."""
    from rdbench.openclip import create_model, open_clip

    state = _state(architecture)  # first: it makes the embedded architecture (tiny-rs) known to open_clip
    model = create_model(architecture, pretrained=None)
    model.load_state_dict(state)
    return model


def unique_count(params) -> int:
    seen, total = set(), 0
    for _, p in params:
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def adapter_params(spec: Any, architecture: str = "ViT-B-32") -> int:
    model = fresh_model(architecture)
    adapter = resolve(spec, "adapter").build()
    adapter.attach(model)
    return unique_count(adapter.trainable_parameters(model))


def _skeleton(vision: str, text: str, interaction: str, architecture: str) -> int:
    return adapter_params(
        {"name": "adapter/cmaa", "bottleneck": 64, "vision_mixer": vision, "text_mixer": text, "interaction": interaction},
        architecture,
    )


def counting_spec(key: str) -> dict[str, Any]:
    """The spec a component is counted with: its defaults, plus the arguments of its declared
    example that the component requires and has no default for (see the module doc)."""
    entry = REGISTRY.get(key)
    resolved = resolve(key, entry.kind, partial=True)
    params = list(inspect.signature(resolved.cls.__init__).parameters.values())[1:]
    required = {p.name for p in params if p.default is inspect.Parameter.empty
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)} - set(resolved.args)
    return {"name": key, **{name: value for name, value in entry.example.items() if name in required}}


def component_params(key: str, architecture: str = "ViT-B-32", num_classes: int = 30) -> int:
    """Trainable parameters of one registered component on ``architecture`` (see module doc)."""
    entry = REGISTRY.get(key)
    spec = counting_spec(key)
    if entry.kind == "adapter":
        return adapter_params(spec, architecture)
    if entry.kind in ("attention", "interaction"):
        base = _skeleton("attention/none", "attention/none", "interaction/none", architecture)
        if entry.kind == "attention":
            return _skeleton(spec, spec, "interaction/none", architecture) - base
        return _skeleton("attention/none", "attention/none", spec, architecture) - base
    from rdbench.openclip import open_clip

    embed_dim = open_clip.get_model_config(architecture)["embed_dim"]
    component = resolve(spec, entry.kind).build()
    if entry.kind == "weighting":
        component.prepare(["contrastive", "classification", "consistency"])
    elif hasattr(component, "setup"):
        host = SimpleNamespace(num_classes=num_classes, embed_dim=embed_dim, named_parameters=lambda: iter(()))
        component.setup(host)
    return unique_count(component.named_parameters())


def count_table(architecture: str = "ViT-B-32", pattern: str = "") -> list[tuple[str, int, str]]:
    """``(key, trainable parameters, source)`` for every counted component matching ``pattern``."""
    rows = []
    for entry in REGISTRY.entries():
        if entry.kind in COUNTED_KINDS and pattern in entry.key:
            rows.append((entry.key, component_params(entry.key, architecture), entry.source))
    return rows
