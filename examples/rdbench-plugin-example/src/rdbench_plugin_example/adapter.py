"""``adapter/gated-mlp``: a bottleneck adapter whose output passes a learned per-channel gate.

A plugin adapter subclasses :class:`rdbench.adapters.base.Adapter` and uses rdbench's hook
helpers to sit at each block's MLP; rdbench freezes the backbone and trains what
``trainable_parameters`` yields (by default, the adapter's own parameters).
"""

from __future__ import annotations

import torch
from torch import nn

from rdbench.adapters.base import Adapter, hook_block_mlp, tower_blocks, tower_widths


class GatedBranch(nn.Module):
    def __init__(self, width: int, bottleneck: int):
        super().__init__()
        self.down, self.up = nn.Linear(width, bottleneck), nn.Linear(bottleneck, width)
        self.gate = nn.Parameter(torch.zeros(width))  # starts closed: the backbone is unchanged
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.gate) * self.up(self.act(self.down(x)))


class GatedMLPAdapter(Adapter):
    """Gated bottleneck MLP parallel to every block's MLP in both towers (an example plugin)."""

    #: Arguments of a small working instance: rdbench's registry-driven test builds the plugin
    #: with them on its tiny test model (docs/plugins.md, section 4).
    example = {"bottleneck": 4}

    def __init__(self, bottleneck: int = 16):
        super().__init__()
        if bottleneck < 1:
            raise ValueError("bottleneck must be at least 1")
        self.bottleneck = bottleneck
        self.branches = nn.ModuleDict()
        self._hooks: list = []

    def attach(self, model: nn.Module) -> None:
        widths = tower_widths(model)
        for tower, blocks in tower_blocks(model).items():
            for index, block in enumerate(blocks):
                branch = GatedBranch(widths[tower], self.bottleneck)
                self.branches[f"{tower}_{index}"] = branch
                self._hooks += hook_block_mlp(block, branch, "parallel")
