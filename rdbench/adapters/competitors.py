"""PEFT competitors of the PE-RSITR benchmark (Yuan et al., TGRS 2023), beyond prompts and LoRA:
linear probe, Houlsby adapters, CLIP-Adapter, MRS-Adapter, Cross-Modal Adapter and UniAdapter.

Each class's docstring names its paper, what it inserts and what trains. Where a method was
designed for another backbone (UniAdapter for BLIP, Cross-Modal Adapter for video CLIP), the
docstring says how it is read on open_clip's two towers of different widths.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from rdbench.adapters.base import (
    PROMPT_SPACE, Adapter, hook_block_mlp, hook_parallel, project_image, project_text, select_layers, tower_blocks, tower_widths,
)
from rdbench.adapters.basic import BottleneckBranch
from rdbench.registry import register


@register("adapter/linear-probe", tags=("baseline",), search_space=PROMPT_SPACE)
class LinearProbeAdapter(Adapter):
    """Linear probe (as in CLIP, Radford et al., 2021, and PE-RSITR): the two projection layers
    that map each tower's output into the joint space train; everything else is frozen."""

    frozen_towers = True  # only the projections train: the default heads apply them

    text_padding_invariant = True  # checked by tests/test_registry.py

    def trainable_parameters(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        for name in ("visual.proj", "text_projection"):
            module, _, attr = name.rpartition(".")
            owner = model.get_submodule(module) if module else model
            param = getattr(owner, attr)
            if isinstance(param, nn.Linear):  # some open_clip configs use Linear projections
                yield from ((f"model.{name}.{n}", p) for n, p in param.named_parameters())
            elif param is not None:
                yield f"model.{name}", param


@register("adapter/houlsby", tags=("baseline",))
class HoulsbyAdapter(Adapter):
    """Houlsby adapters (Houlsby et al., ICML 2019): a sequential bottleneck MLP after the
    attention sub-layer and after the MLP sub-layer of every block of both towers,
    ``y + up(relu(down(y)))`` on each sub-layer's output before its residual add; only the
    adapters train. ``up`` starts at zero. ``bottleneck=2`` keeps the count (0.15M on ViT-B/32)
    near PE-RSITR's "Adapter (0.17M)" row.

    Args:
        bottleneck: Width of each adapter's down-projection.
        layers: 0-based indices of the blocks that get adapters (negative ones count from the
            end); None: every block.
    """

    text_padding_invariant = True  # checked by tests/test_registry.py

    def __init__(self, bottleneck: int = 2, layers: list[int] | None = None):
        super().__init__()
        self.bottleneck, self.layers = bottleneck, layers
        self.branches = nn.ModuleDict()
        self._hooks: list = []

    def attach(self, model: nn.Module) -> None:
        blocks, widths = tower_blocks(model), tower_widths(model)
        for tower, tower_blocks_ in blocks.items():
            for index in select_layers(self.layers, len(tower_blocks_)):
                block = tower_blocks_[index]
                for sub, host in (("attn", block.ls_1), ("mlp", block.ls_2)):
                    branch = BottleneckBranch(widths[tower], self.bottleneck)
                    self.branches[f"{tower}_{index}_{sub}"] = branch
                    # ls_1 / ls_2 (LayerScale, identity unless configured) wrap each
                    # sub-layer's output just before the residual add: the Houlsby position.
                    self._hooks.append(host.register_forward_hook(_residual_branch(branch)))


def _residual_branch(branch: nn.Module):
    def hook(_module, _inputs, output):
        return output + branch(output)

    return hook


@register("adapter/clip-adapter", tags=("baseline",))
class CLIPAdapter(Adapter):
    """CLIP-Adapter (Gao et al., IJCV 2024): a residual MLP on each tower's *output embedding*,
    ``e' = ratio * relu(W2 relu(W1 e)) + (1 - ratio) * e`` without biases (its published form);
    the towers themselves are untouched. ``ratio=0.2`` is the paper's choice for images;
    PE-RSITR applies it to both towers, and its 0.52M on ViT-B/32 is reduction 2 (the CLIP-Adapter
    paper's default is 4), which is the default here.

    Args:
        ratio: Residual ratio in ``e' = ratio * mlp(e) + (1 - ratio) * e``, in [0, 1].
        reduction: The MLP's hidden width is the embedding width divided by ``reduction``.
        towers: The towers whose output embeddings get an MLP (``vision``, ``text``).
    """

    identity_at_init = False
    frozen_towers = True  # acts on the towers' outputs only: see head_image / head_text

    text_padding_invariant = True  # checked by tests/test_registry.py

    def __init__(self, ratio: float = 0.2, reduction: int = 2, towers: list[str] = ["vision", "text"]):  # noqa: B006
        super().__init__()
        if not 0.0 <= ratio <= 1.0:
            raise ValueError("ratio must be in [0, 1]")
        self.ratio, self.reduction, self.towers = ratio, reduction, list(towers)
        self.mlps = nn.ModuleDict()

    def attach(self, model: nn.Module) -> None:
        dim = int(model.visual.output_dim)
        for tower in self.towers:
            self.mlps[tower] = nn.Sequential(
                nn.Linear(dim, dim // self.reduction, bias=False), nn.ReLU(inplace=True),
                nn.Linear(dim // self.reduction, dim, bias=False), nn.ReLU(inplace=True),
            )

    def _mix(self, tower: str, emb: torch.Tensor) -> torch.Tensor:
        if tower not in self.mlps:
            return emb
        return self.ratio * self.mlps[tower](emb) + (1 - self.ratio) * emb

    def encode_image(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return self._mix("vision", model.encode_image(images))

    def encode_text(self, model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        return self._mix("text", model.encode_text(tokens))

    def head_image(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return self._mix("vision", project_image(model, features))

    def head_text(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return self._mix("text", project_text(model, features))


class MRSModule(nn.Module):
    """The one MRS-Adapter module: per-modality down-projections, ReLU, dropout, per-modality
    up-projections to ``D - shared`` and a shared ``shared -> shared`` up-projection whose output
    is concatenated. Up-projections start at zero."""

    def __init__(self, widths: dict[str, int], bottleneck: int, shared: int, dropout: float):
        super().__init__()
        if any(shared >= w for w in widths.values()):
            raise ValueError(f"the shared up-projection ({shared}) must be narrower than every tower ({widths})")
        self.down = nn.ModuleDict({t: nn.Linear(w, bottleneck) for t, w in widths.items()})
        self.up = nn.ModuleDict({t: nn.Linear(bottleneck, w - shared) for t, w in widths.items()})
        self.shared_up = nn.Linear(bottleneck, shared)
        self.act, self.dropout = nn.ReLU(), nn.Dropout(dropout)
        for layer in (*self.up.values(), self.shared_up):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, tower: str) -> torch.Tensor:
        h = self.dropout(self.act(self.down[tower](x)))
        return torch.cat([self.up[tower](h), self.shared_up(h)], dim=-1)


@register("adapter/mrs-adapter", tags=("baseline",), example={"shared": 8, "bottleneck": 8})
class MRSAdapter(Adapter):
    """MRS-Adapter (PE-RSITR, Yuan et al., TGRS 2023): **one** adapter module reused by every
    block of both towers, parallel to each MLP with the post-attention stream as input;
    modality-specific down-projections (768->64, 512->64), ReLU, dropout 0.5, modality-specific
    up-projections to D-64 plus a shared 64->64 up-projection concatenated; up-projections start
    at zero. Exactly 161,088 trainable parameters on ViT-B/32. Train it with ``loss/hmmc``.

    Args:
        bottleneck: Width of the modality-specific down-projections.
        shared: Output width of the shared ``bottleneck -> shared`` up-projection; each
            modality's own up-projection gives the other ``D - shared`` features.
        dropout: Dropout after the ReLU.
        scale: Factor on the module's output before it is added to the MLP's.
    """

    text_padding_invariant = True  # checked by tests/test_registry.py

    def __init__(self, bottleneck: int = 64, shared: int = 64, dropout: float = 0.5, scale: float = 1.0):
        super().__init__()
        self.bottleneck, self.shared, self.dropout, self.scale = bottleneck, shared, dropout, scale
        self.module = nn.Module()
        self._hooks: list = []

    def attach(self, model: nn.Module) -> None:
        widths = tower_widths(model)
        self.module = MRSModule(widths, self.bottleneck, self.shared, self.dropout)
        for tower, blocks in tower_blocks(model).items():
            for block in blocks:
                self._hooks += hook_block_mlp(block, self._branch(tower), "parallel")

    def _branch(self, tower: str):
        return lambda x: self.scale * self.module(x, tower)


class SharedCoreBranch(nn.Module):
    """Per-tower down and up projections around a ``r -> r`` core shared by both towers."""

    def __init__(self, width: int, bottleneck: int, core: nn.Module):
        super().__init__()
        self.down, self.up = nn.Linear(width, bottleneck), nn.Linear(bottleneck, width)
        object.__setattr__(self, "core", core)  # owned by the adapter, counted once
        self.act = nn.GELU()
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.down(x))
        return self.up(h + self.core(h))


class SharedCoreAdapter(Adapter):
    """Bottleneck adapters in both towers around an ``r -> r`` layer shared by the towers at each
    depth and sub-layer (parallel branches, fixed scale); subclasses choose the sub-layers.

    Args:
        bottleneck: Width ``r`` of the down-projections and of the shared ``r -> r`` layer.
        scale: Fixed factor on each branch's output.
        layers: 0-based indices of the blocks that get branches (negative ones count from the
            end); None: every block.
    """

    sublayers: tuple[str, ...] = ("mlp",)

    text_padding_invariant = True  # checked by tests/test_registry.py

    def __init__(self, bottleneck: int, scale: float = 0.1, layers: list[int] | None = None):
        super().__init__()
        self.bottleneck, self.scale, self.layers = bottleneck, scale, layers
        self.cores = nn.ModuleDict()
        self.branches = nn.ModuleDict()
        self._hooks: list = []

    def attach(self, model: nn.Module) -> None:
        widths = tower_widths(model)
        for tower, blocks in tower_blocks(model).items():
            for index in select_layers(self.layers, len(blocks)):
                block = blocks[index]
                for sub in self.sublayers:
                    key = f"{index}_{sub}"
                    if key not in self.cores:
                        self.cores[key] = nn.Linear(self.bottleneck, self.bottleneck)
                    branch = SharedCoreBranch(widths[tower], self.bottleneck, self.cores[key])
                    self.branches[f"{tower}_{key}"] = branch
                    reads, adds_to = (block.ln_2, block.mlp) if sub == "mlp" else (block.ln_1, block.ls_1)
                    self._hooks += hook_parallel(reads, adds_to, _scaled(branch, self.scale))


def _scaled(branch: nn.Module, scale: float):
    return lambda x: scale * branch(x)


@register("adapter/cross-modal-adapter", tags=("baseline",))
class CrossModalAdapter(SharedCoreAdapter):
    """Cross-Modal Adapter (Jiang et al., arXiv 2211.09623): bottleneck adapters in both towers
    whose middle ``r -> r`` weight is shared across modalities at each depth (its "weight
    sharing" between the video and text adapters), with modality-specific down and
    up-projections for open_clip's towers of different widths; parallel to the MLP, scale 0.1.
    ``bottleneck=5`` gives 0.17M on ViT-B/32 (PE-RSITR reports 0.16M).
    """

    sublayers = ("mlp",)

    def __init__(self, bottleneck: int = 5, scale: float = 0.1, layers: list[int] | None = None):
        super().__init__(bottleneck, scale, layers)


@register("adapter/uniadapter", tags=("baseline",))
class UniAdapter(SharedCoreAdapter):
    """UniAdapter (Lu et al., ICLR 2024): unified adapters whose up-projection is shared across
    modalities ("knowledge sharing"), plus modality-specific parts; inserted at both the
    attention and the MLP sub-layer (parallel, scale 0.1). On open_clip's towers of different
    widths the shared part is the bottleneck-space layer before each tower's own
    up-projection; every depth and sub-layer has its own shared layer. ``bottleneck=8`` gives
    0.52M on ViT-B/32 (PE-RSITR reports 0.55M).
    """

    sublayers = ("attn", "mlp")

    def __init__(self, bottleneck: int = 8, scale: float = 0.1, layers: list[int] | None = None):
        super().__init__(bottleneck, scale, layers)
