"""Backbones: open_clip dual encoders, by architecture name and weights.

Contract of a ``backbone/*`` component:

* ``build_model()`` returns an open_clip ``CLIP`` model (``encode_image``, ``encode_text``,
  ``logit_scale``; towers at ``model.visual.transformer`` and ``model.transformer``);
* ``tokenize(texts)`` returns a ``LongTensor`` of token ids for the model's context length;
* ``image_size``, ``mean`` and ``std`` say how images must be fed (the normalisation always
  applies, whatever the augmentation);
* ``provenance()`` returns what a record needs to identify the weights (a checksum of the file).
"""

from __future__ import annotations

import abc
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rdbench.backbones.hub import check_sha256, hub_checkpoint
from rdbench.cache_files import file_sha256  # noqa: F401  (re-exported for tiny_rs and plugins)
from rdbench.errors import DataError
from rdbench.openclip import create_model, get_tokenizer, open_clip
from rdbench.registry import REGISTRY, register


class Backbone(abc.ABC):
    """Base class of backbones; see the module docstring for the contract."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @abc.abstractmethod
    def build_model(self) -> nn.Module:  # pragma: no cover - contract
        """Contract method: every registered component overrides it."""

    @abc.abstractmethod
    def tokenize(self, texts: list[str]) -> torch.Tensor:  # pragma: no cover - contract
        """Contract method: every registered component overrides it."""

    @abc.abstractmethod
    def provenance(self) -> dict[str, Any]:  # pragma: no cover - contract
        """Contract method: every registered component overrides it."""


REGISTRY.define_kind("backbone", Backbone)


@register("backbone/open-clip", example={"architecture": "rdbench-test"})
class OpenCLIPBackbone(Backbone):
    """Any open_clip architecture, with an open_clip pretrained tag or a local checkpoint.

    ``pretrained`` is an open_clip tag (``openai``, ``laion2b_s34b_b79k``; needs the hub) or the
    path of a local open_clip state dict: GeoRSCLIP and RemoteCLIP ViT-B/32 checkpoints are such
    files; ``env:RDBENCH_CHECKPOINT`` reads that path from the environment variable, so a suite
    file serves every machine. ``None`` gives random weights (parameter counts, benchmarks). A local checkpoint is
    loaded with ``weights_only=True`` and its SHA-256 goes into every record.

    ``hub_repo`` and ``hub_file`` name a state dict on the Hugging Face hub instead
    (:mod:`rdbench.backbones.hub`; the presets ``backbone/georsclip-*`` and ``backbone/remoteclip-*``
    set them); a ``pretrained`` path, when given, takes precedence over them.

    Args:
        architecture: An open_clip architecture name (``open_clip.list_models()``).
        pretrained: An open_clip pretrained tag, the path of a local open_clip state dict,
            ``env:VAR`` for a path held in an environment variable, or None for random weights
            (or the hub file, when ``hub_repo`` is set).
        image_size: Input image size in pixels; None: the architecture's own.
        hub_repo: A Hugging Face hub repository holding an open_clip state dict, e.g.
            ``chendelong/RemoteCLIP``.
        hub_file: The state dict's file name in ``hub_repo``, e.g. ``RemoteCLIP-ViT-B-32.pt``.
        sha256: The checkpoint file's SHA-256 as its authors publish it; a file that differs
            is refused. None: not published (the record carries the file's own SHA-256).
    """

    def __init__(self, architecture: str = "ViT-B-32", pretrained: str | None = None, image_size: int | None = None,
                 hub_repo: str | None = None, hub_file: str | None = None, sha256: str | None = None):
        if (hub_repo is None) != (hub_file is None):
            raise ValueError("hub_repo and hub_file go together: name both or neither")
        if sha256 is not None and (len(sha256) != 64 or any(c not in "0123456789abcdefABCDEF" for c in sha256)):
            raise ValueError(f"sha256 must be 64 hexadecimal digits, got {sha256!r}")
        self.hub_repo, self.hub_file, self.sha256 = hub_repo, hub_file, sha256
        if open_clip.get_model_config(architecture) is None:
            import difflib

            close = difflib.get_close_matches(architecture, open_clip.list_models(), n=3)
            raise ValueError(f"unknown open_clip architecture {architecture!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
        self.architecture, self.pretrained = architecture, pretrained
        config = open_clip.get_model_config(architecture)
        self.image_size = int(image_size or config["vision_cfg"].get("image_size", 224))
        self._tokenizer = get_tokenizer(architecture)
        self.mean = tuple(open_clip.OPENAI_DATASET_MEAN)
        self.std = tuple(open_clip.OPENAI_DATASET_STD)
        self._checksum: str | None = None
        self._checkpoint: str | None = None  # what ``pretrained`` resolved to when the model was built

    def _pretrained(self) -> str | None:
        """``pretrained``, where ``env:VAR`` reads the path from ``$VAR``: a suite names the
        variable, each machine sets it, and an unset one fails the run saying so."""
        if self.pretrained is None or not self.pretrained.startswith("env:"):
            return self.pretrained
        var = self.pretrained[len("env:"):]
        value = os.environ.get(var, "").strip()
        if not value:
            raise DataError(
                f"backbone/open-clip: pretrained is env:{var} but ${var} is not set (set it to an open_clip state dict "
                f"file for {self.architecture}, e.g. GeoRSCLIP's RS5M_ViT-B-32.pt, or pass --set backbone.pretrained=PATH)"
            )
        return value

    def _local_checkpoint(self) -> Path | None:
        pretrained = self._pretrained()
        if pretrained is None:
            if self.hub_repo is not None and self.hub_file is not None:
                return hub_checkpoint(self.hub_repo, self.hub_file, self.sha256)
            return None
        path = Path(pretrained).expanduser()
        looks_like_path = path.suffix in (".pt", ".pth", ".bin", ".safetensors") or "/" in pretrained
        if looks_like_path and not path.is_file():
            raise DataError(
                f"{path}: backbone checkpoint not found (expected an open_clip state dict file for {self.architecture}, "
                "e.g. GeoRSCLIP's RS5M_ViT-B-32.pt)"
            )
        if looks_like_path:
            check_sha256(path, self.sha256, f"backbone {self.architecture}")
        return path if looks_like_path else None

    def build_model(self) -> nn.Module:
        local = self._local_checkpoint()
        kwargs = {"force_image_size": self.image_size} if self.image_size else {}
        if local is not None:
            model = create_model(self.architecture, pretrained=None, **kwargs)
            load_state(model, local, self.architecture)
            self._checksum, self._checkpoint = file_sha256(local), str(local.resolve())
        else:
            self._checkpoint = self._pretrained()  # an open_clip tag, or None for random weights
            model = create_model(self.architecture, pretrained=self._checkpoint, **kwargs)
            self._checksum = None if self.pretrained is None else f"open_clip:{self.architecture}:{self.pretrained}"
        return model

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self._tokenizer(texts)

    def provenance(self) -> dict[str, Any]:
        # ``pretrained`` as configured (possibly env:VAR); ``checkpoint`` the file or tag it resolved to.
        out = {"architecture": self.architecture, "pretrained": self.pretrained, "checkpoint": self._checkpoint,
               "checksum": self._checksum}
        if self.hub_repo is not None:
            out["hub"] = f"{self.hub_repo}/{self.hub_file}"
        return out


def load_state(model: nn.Module, path: Path, architecture: str) -> None:
    """Load an open_clip state dict (optionally wrapped as ``{'state_dict': ...}``)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files
        raise DataError(f"{path}: cannot be read as a checkpoint ({type(exc).__name__}: {exc})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise DataError(f"{path}: holds a {type(state).__name__}, not a state dict of named tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    mismatched = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    missing = [k for k in own if k not in state]
    if mismatched or len(missing) > len(own) // 2:
        detail = f"shape of {mismatched[0]} is {tuple(state[mismatched[0]].shape)}" if mismatched else f"{len(missing)} tensors missing"
        raise DataError(f"{path}: checkpoint is not a {architecture} state dict ({detail})")
    model.load_state_dict(state, strict=False)
