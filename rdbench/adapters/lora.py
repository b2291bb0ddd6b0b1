"""LoRA (Hu et al., ICLR 2022) for open_clip, reaching inside the fused attention projections.

open_clip's blocks use ``nn.MultiheadAttention``, whose query, key and value projections are one
fused ``in_proj_weight`` (3D x D). LoRA here is a ``torch.nn.utils.parametrize`` parametrization
of that tensor (and of ``out_proj.weight`` and the MLP's linear layers when targeted):
``W_eff = W + (alpha / rank) * B A`` per targeted slice, with ``B`` zero-initialised so training
starts at the backbone. Every code path that reads the weight (training, the fused inference
fast path) sees ``W_eff``; ``merge`` folds the update into the weight for deployment.

Why not huggingface/peft: peft's LoRA does support ``nn.MultiheadAttention``, but it brings in
transformers and accelerate as dependencies and handles the fused projection by merging and
unmerging the weights around every forward pass; a parametrization from torch itself does the
same job with no dependency and no weight copies.
"""

from __future__ import annotations

import math
from typing import Iterator, Literal

import torch
from torch import nn
from torch.nn.utils import parametrize

from rdbench.adapters.base import LORA_SPACE, QKV, Adapter, fused_attention, qkv_rows, select_layers, tower_blocks
from rdbench.registry import register

Target = Literal["q", "k", "v", "out", "fc", "proj"]


class LoRADelta(nn.Module):
    """Adds ``scale * B A`` to rows ``[start, stop)`` of a weight (a slice of a fused projection)."""

    def __init__(self, rows: int, cols: int, rank: int, alpha: float, dropout: float, start: int = 0):
        super().__init__()
        self.start, self.rows, self.scale = start, rows, alpha / rank
        self.A = nn.Parameter(torch.empty(rank, cols))
        self.B = nn.Parameter(torch.zeros(rows, rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        # LoRA's dropout acts on the input of A; on a weight parametrization it becomes dropout
        # on A's columns, the same expected update (used by e.g. weight-space LoRA variants).
        self.dropout = nn.Dropout(dropout)

    def delta(self) -> torch.Tensor:
        return self.scale * self.B @ self.dropout(self.A)


class LoRAWeight(nn.Module):
    """The parametrization: ``W -> W + sum of its slices' deltas``."""

    def __init__(self, deltas: list[LoRADelta]):
        super().__init__()
        self.deltas = nn.ModuleList(deltas)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        update = torch.zeros_like(weight)
        for d in self.deltas:
            update[d.start : d.start + d.rows] = update[d.start : d.start + d.rows] + d.delta()
        return weight + update


@register("adapter/lora", tags=("baseline",), search_space=LORA_SPACE)
class LoRAAdapter(Adapter):
    """LoRA (Hu et al., ICLR 2022): low-rank updates ``W + (alpha/rank) B A`` of the attention
    projections of every block of both towers; only A and B train.

    ``targets`` picks the query, key and value slices of open_clip's fused ``in_proj_weight``
    (``q``, ``k``, ``v``), the attention output projection (``out``) and the MLP's layers
    (``fc``, ``proj``). Defaults (rank 8, alpha 16, q and v) follow the LoRA paper's attention
    setting. See the module docstring for why this is a torch parametrization, not peft.

    Args:
        rank: Rank of each update ``B A``.
        alpha: Scaling numerator: the update is ``(alpha / rank) B A``.
        dropout: Dropout on ``A``'s columns (LoRA's input dropout, moved onto the weight).
        targets: The weights that get an update: ``q``, ``k``, ``v`` (slices of the fused
            ``in_proj_weight``), ``out`` (the attention output projection), ``fc`` and ``proj``
            (the MLP's layers).
        towers: The towers that get updates (``vision``, ``text``).
        layers: 0-based indices of the blocks that get updates (negative ones count from the
            end); None: every block.
    """

    text_padding_invariant = True  # checked by tests/test_registry.py

    def __init__(
        self,
        rank: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.0,
        targets: list[Target] = ["q", "v"],  # noqa: B006 (read-only)
        towers: list[Literal["vision", "text"]] = ["vision", "text"],  # noqa: B006
        layers: list[int] | None = None,
    ):
        super().__init__()
        if rank < 1:
            raise ValueError("rank must be at least 1")
        unknown = set(targets) - {"q", "k", "v", "out", "fc", "proj"}
        if unknown or not targets:
            raise ValueError(f"targets must be a non-empty subset of q, k, v, out, fc, proj; got {targets}")
        self.rank, self.alpha, self.dropout, self.targets = rank, alpha, dropout, list(targets)
        self.towers, self.layers = list(towers), layers
        self.lora = nn.ModuleDict()
        self._hosts: list[tuple[nn.Module, str]] = []

    def attach(self, model: nn.Module) -> None:
        blocks = tower_blocks(model)
        for tower in self.towers:
            for index in select_layers(self.layers, len(blocks[tower])):
                block = blocks[tower][index]
                attn, width = block.attn, block.attn.embed_dim
                fused = [d for d in QKV if d in self.targets]
                if fused:
                    attn = fused_attention(block)
                    deltas = [LoRADelta(width, width, self.rank, self.alpha, self.dropout, start=qkv_rows(block, d).start) for d in fused]
                    self._add(f"{tower}_{index}_qkv", attn, "in_proj_weight", deltas)
                named = {"out": (attn.out_proj, "weight"), "fc": (block.mlp.c_fc, "weight"), "proj": (block.mlp.c_proj, "weight")}
                for target in ("out", "fc", "proj"):
                    if target in self.targets:
                        host, pname = named[target]
                        rows, cols = getattr(host, pname).shape
                        self._add(f"{tower}_{index}_{target}", host, pname, [LoRADelta(rows, cols, self.rank, self.alpha, self.dropout)])

    def _add(self, name: str, host: nn.Module, pname: str, deltas: list[LoRADelta]) -> None:
        weight = LoRAWeight(deltas)
        self.lora[name] = weight
        parametrize.register_parametrization(host, pname, weight, unsafe=True)
        self._hosts.append((host, pname))

    def trainable_parameters(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        for name, param in self.lora.named_parameters():
            yield f"adapter.lora.{name}", param

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the low-rank updates into the backbone's weights and remove the parametrizations."""
        for host, pname in self._hosts:
            parametrize.remove_parametrizations(host, pname, leave_parametrized=True)
        self._hosts.clear()
