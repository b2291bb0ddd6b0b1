"""Interaction layers (kind ``interaction``, contract in :mod:`rdbench.adapters.parts`): the
readings of RDB's shared interaction layer that joins the two towers' adapters at each depth
(docs/method.md, "Shared interaction layer")."""

from __future__ import annotations

import torch
from torch import nn

from rdbench.adapters.parts import Interaction
from rdbench.registry import register


@register("interaction/none")
class NoInteraction(Interaction):
    """No shared layer: the two towers' adapters are independent (CMAA without interaction)."""


@register("interaction/shared-mlp")
class SharedMLPInteraction(Interaction):
    """A residual MLP ``r -> r/2 -> r`` whose weights both towers use at the same depth (the
    default reading of RDB's shared interaction layer, docs/method.md, "Shared interaction layer"). Its last layer
    starts at zero.

    Args:
        hidden_ratio: Hidden width of the MLP as a fraction of ``dim`` (at least one unit).
    """

    def __init__(self, dim: int, layer: int = 1, hidden_ratio: float = 0.5):
        super().__init__(dim, layer)
        hidden = max(int(dim * hidden_ratio), 1)
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(h)))


@register("interaction/shared-slice", example={"width": 8})
class SharedSliceInteraction(Interaction):
    """A shared slice of the up-projection (MRS-Adapter's reading, PE-RSITR 2023): both towers'
    up-projections end in the same ``r -> width`` map, zero-initialised, concatenated after each
    tower's own ``r -> D - width`` map.

    Args:
        width: Output width of the shared map, the last ``width`` features of each tower's
            adapter output; must be narrower than either tower.
    """

    def __init__(self, dim: int, layer: int = 1, width: int = 64):
        super().__init__(dim, layer)
        self.shared_width = width
        self.up = nn.Linear(dim, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def shared_up(self, h: torch.Tensor) -> torch.Tensor:
        return self.up(h)
