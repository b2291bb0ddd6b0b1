"""CMAA, the Cross-Modal Asymmetric Adapter of RDB (Ning et al., 2025), and its symmetric twin.

The skeleton shared by both (docs/method.md, "CMAA skeleton"), in every selected block of each tower::

    h = act(W_down x)            # D -> r
    h = h + mixer(h)             # the tower's token mixer (DA, HA, MHSA or none)
    h = h + interaction_l(h)     # weights shared by both towers at depth l
    a = W_up h                   # r -> D, zero-initialised: training starts at the backbone
    x <- x + s * a               # parallel to the MLP or after it; s fixed or a learnable gate

CMAA puts differential attention in the image tower (VEA) and hierarchical attention in the
text tower (TSA). ``adapter/symmetric`` is the same class with one mixer for both towers, so the
two differ in one place only and a suite line can switch DA, HA or the interaction off.

The mixers and the interaction are kinds of their own (contracts in
:mod:`rdbench.adapters.parts`); the adapter receives them as builders.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import nn

from jsonargparse.typing import PositiveInt

from rdbench.adapters.attention import DifferentialAttention, HierarchicalAttention, NoAttention
from rdbench.adapters.base import Adapter, hook_block_mlp, select_layers, tower_blocks, tower_widths
from rdbench.adapters.basic import Scale
from rdbench.adapters.interactions import NoInteraction, SharedMLPInteraction
from rdbench.adapters.parts import Attention, Interaction
from rdbench.registry import register
from rdbench.resolution.spec import Builder


class AdapterBranch(nn.Module):
    """One tower's adapter in one block: down, mixer, shared interaction, up."""

    def __init__(self, width: int, bottleneck: int, mixer: Attention, interaction: Interaction, dropout: float):
        super().__init__()
        self.down = nn.Linear(width, bottleneck)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.mixer = mixer
        # The interaction is owned by the adapter (shared by both towers); a plain attribute
        # keeps it from being registered, and counted, twice.
        object.__setattr__(self, "interaction", interaction)
        if interaction.shared_width >= width:
            raise ValueError(f"the shared up-projection slice ({interaction.shared_width}) must be narrower than the tower ({width})")
        self.up = nn.Linear(bottleneck, width - interaction.shared_width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        h = self.dropout(self.act(self.down(x)))
        h = h + self.mixer(h, padding)
        h = h + self.interaction(h)
        a = self.up(h)
        if self.interaction.shared_width:
            a = torch.cat([a, self.interaction.shared_up(h)], dim=-1)
        return a


@register("adapter/cmaa", tags=("rdb",))
class CMAAdapter(Adapter):
    """Cross-Modal Asymmetric Adapter (RDB, Ning et al., 2025): VEA = bottleneck + differential
    attention on the image tower, TSA = bottleneck + hierarchical attention on the text tower,
    joined by a shared interaction layer at each depth. See the module docstring for the
    skeleton; the readings of DA, HA and the interaction are the mixers' own components.

    ``bottleneck=64`` is MRS-Adapter's width (equal in both towers, as the shared interaction
    needs); ``scale=0.1`` is AdaptFormer's fixed scale; ``learnable_scale`` makes it a gate.

    Args:
        bottleneck: Bottleneck width ``r`` of every branch, the same in both towers.
        vision_mixer: The image tower's token mixer (VEA's differential attention);
            ``attention/none`` switches it off.
        text_mixer: The text tower's token mixer (TSA's hierarchical attention);
            ``attention/none`` switches it off.
        interaction: The layer both towers share at each depth; ``interaction/none`` makes the
            two towers' adapters independent.
        position: ``parallel``: each branch reads the post-attention stream and its output is
            added to the MLP's; ``sequential``: it reads the block's output, after the MLP.
        scale: The output scale ``s`` in ``x + s * a`` (the gate's initial value when
            ``learnable_scale``).
        learnable_scale: Make ``s`` a learned gate, one per branch, starting at ``scale``.
        layers: 0-based indices of the blocks that get a branch (negative ones count from the
            end); None: every block.
        dropout: Dropout after the down-projection's activation.
    """

    text_padding_invariant = True  # checked by tests/test_registry.py

    def __init__(
        self,
        bottleneck: PositiveInt = 64,
        vision_mixer: Builder[Attention] = DifferentialAttention,
        text_mixer: Builder[Attention] = HierarchicalAttention,
        interaction: Builder[Interaction] = SharedMLPInteraction,
        position: Literal["parallel", "sequential"] = "parallel",
        scale: float = 0.1,
        learnable_scale: bool = False,
        layers: list[int] | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        if bottleneck < 1:
            raise ValueError("bottleneck must be at least 1")
        self.bottleneck, self.position, self.layers, self.dropout = bottleneck, position, layers, dropout
        self.scale_value, self.learnable_scale = scale, learnable_scale
        self.mixers: dict[str, Callable[..., Attention]] = {"vision": vision_mixer, "text": text_mixer}
        self.make_interaction = interaction
        self.branches = nn.ModuleDict()
        self.scales = nn.ModuleDict()
        self.interactions = nn.ModuleDict()
        self._padding: torch.Tensor | None = None
        self._hooks: list = []

    def before_encode_text(self, tokens: torch.Tensor) -> None:
        # CLIP's EOT token has the largest id; everything after it is padding.
        eot = tokens.argmax(dim=-1, keepdim=True)
        self._padding = torch.arange(tokens.shape[1], device=tokens.device)[None, :] > eot

    def attach(self, model: nn.Module) -> None:
        blocks, widths = tower_blocks(model), tower_widths(model)
        for tower in ("vision", "text"):
            for index in select_layers(self.layers, len(blocks[tower])):
                depth = index + 1
                key = str(index)
                if key not in self.interactions:
                    self.interactions[key] = self.make_interaction(dim=self.bottleneck, layer=depth)
                mixer = self.mixers[tower](dim=self.bottleneck, layer=depth, causal=tower == "text")
                branch = AdapterBranch(widths[tower], self.bottleneck, mixer, self.interactions[key], self.dropout)
                name = f"{tower}_{index}"
                self.branches[name] = branch
                self.scales[name] = Scale(self.scale_value, self.learnable_scale)
                self._hooks += hook_block_mlp(blocks[tower][index], self._branch_fn(name, tower), self.position)

    def _branch_fn(self, name: str, tower: str):
        def run(x: torch.Tensor) -> torch.Tensor:
            padding = self._padding if tower == "text" else None
            return self.scales[name](self.branches[name](x, padding))

        return run


@register("adapter/symmetric", tags=("baseline", "symmetric"))
class SymmetricAdapter(CMAAdapter):
    """The symmetric counterpart of CMAA: the same skeleton and the same ``mixer`` in both
    towers (none by default: a plain bottleneck adapter with GELU, the ablation's baseline).

    Args:
        mixer: The token mixer of both towers; ``attention/none`` gives a plain bottleneck.
    """

    def __init__(
        self,
        bottleneck: PositiveInt = 64,
        mixer: Builder[Attention] = NoAttention,
        interaction: Builder[Interaction] = NoInteraction,
        position: Literal["parallel", "sequential"] = "parallel",
        scale: float = 0.1,
        learnable_scale: bool = False,
        layers: list[int] | None = None,
        dropout: float = 0.0,
    ):
        super().__init__(bottleneck, mixer, mixer, interaction, position, scale, learnable_scale, layers, dropout)
