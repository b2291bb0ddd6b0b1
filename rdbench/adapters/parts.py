"""Contracts of the two kinds that live inside an adapter's bottleneck: ``attention`` and
``interaction``.

Contract of an ``attention/*`` component (a token mixer): an ``nn.Module`` built by its host
adapter with ``dim`` (the bottleneck width), ``layer`` (the 1-based depth of the host block) and
``causal`` (True on CLIP's text tower); ``forward(h, padding)`` takes ``h`` of shape (B, L, dim)
and a (B, L) bool mask that is True at padding tokens (or None), and returns the mixer's output
of the same shape. The host adds it as a residual (``h + mixer(h)``), so a mixer that returns
zeros is "no mixer". On the text side every mixer honours CLIP's causal mask and never lets a
padding token reach a real one, so a caption's embedding does not depend on its padding.

Contract of an ``interaction/*`` component (RDB's shared interaction layer and its readings):
built by the adapter with ``dim`` (r) and ``layer`` (1-based depth); ``forward(h)`` returns a
residual added to ``h`` in both towers; ``shared_width`` (default 0) and ``shared_up(h)`` let an
interaction own a slice of the up-projection instead (MRS-Adapter's shared up-projection). No
token ever crosses towers, so images and captions stay independently encodable for gallery
retrieval.

An adapter receives these as builders (``Builder[Attention]``): callables that it calls with the
arguments only it knows (``dim``, ``layer``, ``causal``), once per block.
"""

from __future__ import annotations

import torch
from torch import nn

from rdbench.registry import REGISTRY


class Attention(nn.Module):
    """Base class of token mixers; see the module docstring for the contract.

    Args:
        dim: Width of the tokens it mixes, the host adapter's bottleneck width ``r``; passed by
            the host.
        layer: 1-based depth of the host block (differential attention's ``lambda_init`` depends
            on it); passed by the host.
        causal: Apply CLIP's causal mask (True on the text tower); passed by the host.
    """

    def __init__(self, dim: int, layer: int = 1, causal: bool = False):
        super().__init__()
        self.dim, self.layer, self.causal = dim, layer, causal


class Interaction(nn.Module):
    """Base class of interaction layers; see the module docstring for the contract.

    Args:
        dim: Width of the bottleneck space it acts in, the adapter's ``r``; passed by the host.
        layer: 1-based depth of the blocks it joins; passed by the host.
    """

    shared_width: int = 0

    def __init__(self, dim: int, layer: int = 1):
        super().__init__()
        self.dim, self.layer = dim, layer

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(h)

    def shared_up(self, h: torch.Tensor) -> torch.Tensor:
        """This interaction's slice of the up-projection (``shared_width`` features): empty here.
        An interaction that sets ``shared_width`` overrides it; one that does not leaves the
        adapter's output ``shared_width`` features short, so the residual add fails on the first
        batch instead of training on a silent slice of zeros."""
        return h.new_zeros(*h.shape[:-1], 0)


REGISTRY.define_kind("attention", Attention)
REGISTRY.define_kind("interaction", Interaction)
