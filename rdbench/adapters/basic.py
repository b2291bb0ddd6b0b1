"""Reference points of every comparison: zero-shot, full fine-tuning, and the symmetric
bottleneck adapter (AdaptFormer style) that the asymmetric methods are measured against."""

from __future__ import annotations

import math
from typing import Iterator, Literal

import torch
from torch import nn

from rdbench.adapters.base import FULL_SPACE, Adapter, hook_block_mlp, select_layers, tower_blocks, tower_widths
from jsonargparse.typing import PositiveInt

from rdbench.registry import register


@register("adapter/none", tags=("baseline",), search_space={})
class NoAdapter(Adapter):
    """Zero-shot: the backbone as it is; nothing trains (0 parameters)."""

    frozen_towers = True  # the towers' outputs can be cached (rdbench.training.feature_cache)
    text_padding_invariant = True  # checked by tests/test_registry.py


@register("adapter/full", tags=("baseline",), search_space=FULL_SPACE)
class FullFineTuning(Adapter):
    """Full fine-tuning: every backbone parameter trains, the temperature included.

    The upper reference of PEFT tables (PE-RSITR, GeoRSCLIP-FT); 151,277,313 parameters on
    ViT-B-32.
    """

    text_padding_invariant = True  # checked by tests/test_registry.py

    def trainable_parameters(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        for name, param in model.named_parameters():
            yield f"model.{name}", param


class BottleneckBranch(nn.Module):
    """``x -> up(act(down(x)))`` with ``up`` zero-initialised, so training starts at the backbone."""

    def __init__(self, width: int, bottleneck: int, dropout: float = 0.0):
        super().__init__()
        self.down = nn.Linear(width, bottleneck)
        self.act = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(bottleneck, width)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.dropout(self.act(self.down(x))))


class Scale(nn.Module):
    """The adapter's output scale ``s`` in ``x + s * a``: fixed, or a learnable gate."""

    def __init__(self, value: float, learnable: bool):
        super().__init__()
        if learnable:
            self.value = nn.Parameter(torch.tensor(float(value)))
        else:
            self.register_buffer("value", torch.tensor(float(value)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value * x


@register("adapter/bottleneck", tags=("baseline", "symmetric"))
class BottleneckAdapter(Adapter):
    """Symmetric MLP bottleneck adapter in every block of both towers (AdaptFormer, Chen et al.,
    NeurIPS 2022).

    Inserts ``x + s * up(relu(down(x)))`` at each selected block's MLP sub-layer, parallel to the
    MLP by default (AdaptFormer's placement) or sequentially after it. Only the adapters train.
    ``bottleneck=64`` follows MRS-Adapter's width; ``scale=0.1`` is AdaptFormer's.

    Args:
        bottleneck: Width of each branch's down-projection.
        scale: The output scale ``s`` (the gate's initial value when ``learnable_scale``).
        learnable_scale: Make ``s`` a learned gate, one per branch, starting at ``scale``.
        position: ``parallel``: each branch reads the post-attention stream and its output is
            added to the MLP's; ``sequential``: it reads the block's output, after the MLP.
        towers: The towers that get adapters (``vision``, ``text``).
        layers: 0-based indices of the blocks that get a branch (negative ones count from the
            end); None: every block.
        dropout: Dropout after the ReLU.
    """

    text_padding_invariant = True  # checked by tests/test_registry.py

    def __init__(
        self,
        bottleneck: PositiveInt = 64,
        scale: float = 0.1,
        learnable_scale: bool = False,
        position: Literal["parallel", "sequential"] = "parallel",
        towers: list[Literal["vision", "text"]] = ["vision", "text"],  # noqa: B006 (read-only)
        layers: list[int] | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        if bottleneck < 1:
            raise ValueError("bottleneck must be at least 1")
        self.bottleneck, self.position, self.towers, self.layers = bottleneck, position, list(towers), layers
        self.scale_value, self.learnable_scale, self.dropout = scale, learnable_scale, dropout
        self.branches = nn.ModuleDict()
        self.scales = nn.ModuleDict()
        self._hooks: list = []

    def attach(self, model: nn.Module) -> None:
        blocks, widths = tower_blocks(model), tower_widths(model)
        for tower in self.towers:
            for index in select_layers(self.layers, len(blocks[tower])):
                name = f"{tower}_{index}"
                branch = BottleneckBranch(widths[tower], self.bottleneck, self.dropout)
                scale = Scale(self.scale_value, self.learnable_scale)
                self.branches[name], self.scales[name] = branch, scale
                self._hooks += hook_block_mlp(blocks[tower][index], _scaled(branch, scale), self.position)


def _scaled(branch: nn.Module, scale: nn.Module):
    return lambda x: scale(branch(x))
