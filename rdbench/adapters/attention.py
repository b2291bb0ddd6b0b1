"""Token mixers (kind ``attention``, contract in :mod:`rdbench.adapters.parts`) that work inside
an adapter's bottleneck space: none, multi-head self-attention, differential attention (RDB's
DA) and two readings of hierarchical attention (RDB's HA); see docs/method.md.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rdbench.adapters.parts import Attention
from rdbench.registry import register


def attention_mask(length: int, padding: torch.Tensor | None, causal: bool, device, window: int | None = None) -> torch.Tensor | None:
    """(B or 1, 1, L, L) bool, True where a query may attend to a key.

    A padding query still attends to itself, so that no softmax row is empty (its output is
    never read by a real token).
    """
    allowed = torch.ones(length, length, dtype=torch.bool, device=device)
    if causal:
        allowed = torch.tril(allowed)
    if window is not None:
        idx = torch.arange(length, device=device)
        allowed &= (idx[:, None] - idx[None, :]).abs() < window
    allowed = allowed[None, None]
    if padding is not None:
        allowed = allowed & ~padding[:, None, None, :]
        allowed = allowed | torch.eye(length, dtype=torch.bool, device=device)[None, None]
    return allowed


@register("attention/none")
class NoAttention(Attention):
    """No token mixing: the host adapter is a plain bottleneck MLP (the ablation's "off")."""

    def forward(self, h: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        return torch.zeros_like(h)


@register("attention/mhsa")
class MultiHeadSelfAttention(Attention):
    """Ordinary multi-head softmax self-attention of the bottleneck's width (Vaswani et al., 2017).

    The control for DA and HA: same width, same placement, no differential or hierarchical
    structure. The output projection starts at zero, so the adapter starts as a plain bottleneck.

    Args:
        heads: Number of attention heads; ``dim`` must be divisible by it.
        window: If set, a token attends only to tokens fewer than ``window`` positions from it
            (a local band); None: the whole sequence.
    """

    def __init__(self, dim: int, layer: int = 1, causal: bool = False, heads: int = 4, window: int | None = None):
        super().__init__(dim, layer, causal)
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.window = heads, window
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, h: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = h.shape
        q, k, v = self.qkv(h).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        mask = attention_mask(n, padding, self.causal, h.device, self.window)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(out.transpose(1, 2).reshape(b, n, self.dim))


def lambda_init_schedule(layer: int) -> float:
    """Differential Transformer's depth schedule: ``0.8 - 0.6 * exp(-0.3 * (layer - 1))``."""
    return 0.8 - 0.6 * math.exp(-0.3 * (layer - 1))


@register("attention/diff")
class DifferentialAttention(Attention):
    """Differential attention (Differential Transformer V1, Ye et al., arXiv 2410.05258), the
    reading of RDB's DA in docs/method.md ("Differential attention").

    Per head, two softmax maps from split queries and keys; their difference cancels attention
    noise common to both: ``A = softmax(Q1 K1^T/sqrt d) - lambda softmax(Q2 K2^T/sqrt d)``, with
    ``lambda = exp(lq1.lk1) - exp(lq2.lk2) + lambda_init`` shared by the heads of one block,
    ``lambda_init`` from the host block's depth, values of width 2d, a per-head RMSNorm with a
    learnable scale, and the ``(1 - lambda_init)`` factor. ``second_map``, ``head_norm`` and
    ``head_scale`` switch those parts off (with all three off, this is softmax attention on the
    same projections; a test checks it). The output projection starts at zero.

    Args:
        heads: Number of differential heads; each splits its queries and keys in two, so ``dim``
            must be divisible by ``2 * heads``.
        second_map: Subtract the second softmax map, scaled by ``lambda`` (the differential part);
            False keeps the first map only.
        head_norm: Apply the per-head RMSNorm, with its learnable scale, to each head's output.
        head_scale: Multiply the heads' output by ``(1 - lambda_init)``.
    """

    def __init__(
        self,
        dim: int,
        layer: int = 1,
        causal: bool = False,
        heads: int = 2,
        second_map: bool = True,
        head_norm: bool = True,
        head_scale: bool = True,
    ):
        super().__init__(dim, layer, causal)
        if dim % (2 * heads):
            raise ValueError(f"dim {dim} must be divisible by 2 * heads ({2 * heads})")
        self.heads, self.head_dim = heads, dim // (2 * heads)
        self.second_map, self.head_norm, self.head_scale = second_map, head_norm, head_scale
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        nn.init.zeros_(self.out.weight)
        self.lambda_init = lambda_init_schedule(layer)
        d = self.head_dim
        self.lambda_q1 = nn.Parameter(torch.randn(d) * 0.1)
        self.lambda_k1 = nn.Parameter(torch.randn(d) * 0.1)
        self.lambda_q2 = nn.Parameter(torch.randn(d) * 0.1)
        self.lambda_k2 = nn.Parameter(torch.randn(d) * 0.1)
        self.norm = nn.RMSNorm(2 * d, eps=1e-5, elementwise_affine=True)

    def lambda_value(self) -> torch.Tensor:
        l1 = torch.exp(torch.dot(self.lambda_q1, self.lambda_k1))
        l2 = torch.exp(torch.dot(self.lambda_q2, self.lambda_k2))
        return l1 - l2 + self.lambda_init

    def forward(self, h: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = h.shape
        d, heads = self.head_dim, self.heads
        q = self.q(h).view(b, n, 2 * heads, d).transpose(1, 2)  # (B, 2H, L, d): [Q1 heads; Q2 heads]
        k = self.k(h).view(b, n, 2 * heads, d).transpose(1, 2)
        v = self.v(h).view(b, n, heads, 2 * d).transpose(1, 2)  # (B, H, L, 2d)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d)
        mask = attention_mask(n, padding, self.causal, h.device)
        if mask is not None and (self.causal or padding is not None):
            scores = scores.masked_fill(~mask, float("-inf"))
        maps = scores.softmax(dim=-1).view(b, 2, heads, n, n)  # pairs: head i uses maps (i, H + i)
        attn = maps[:, 0]
        if self.second_map:
            attn = attn - self.lambda_value() * maps[:, 1]
        out = attn @ v  # (B, H, L, 2d)
        if self.head_norm:
            out = self.norm(out)
        if self.head_scale:
            out = out * (1 - self.lambda_init)
        return self.out(out.transpose(1, 2).reshape(b, n, self.dim))


class AttentionPooling(nn.Module):
    """``s = sum_t alpha_t h_t`` with ``alpha = softmax_t(tanh(W h_t + b) . c)`` (HAN pooling).

    Causal on the text side: token t gets the pooled vector of its own prefix, so that no token
    sees a later one; CLIP's EOT token, the last real token, gets the whole sentence.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.context = nn.Parameter(torch.randn(dim) / math.sqrt(dim))

    def forward(self, h: torch.Tensor, padding: torch.Tensor | None, causal: bool) -> torch.Tensor:
        n = h.shape[1]
        energy = torch.tanh(self.proj(h)) @ self.context  # (B, L)
        scores = energy[:, None, :].expand(-1, n, -1)  # row t: the keys token t may pool
        mask = attention_mask(n, padding, causal, h.device)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, 0], float("-inf"))
        return scores.softmax(dim=-1) @ h


@register("attention/hierarchical")
class HierarchicalAttention(Attention):
    """Hierarchical attention, word level then sentence level: the reading of RDB's HA in
    docs/method.md, "Hierarchical attention" (the paper does not define HA; after Yang et al.'s hierarchical
    attention networks, NAACL 2016).

    1. token self-attention (causal on text, padding masked);
    2. attention pooling over real tokens into a sentence vector (a learned context vector);
    3. the sentence vector is fed back to every token through a gate ``g`` that starts at zero.

    Args:
        heads: Heads of the token-level self-attention (step 1); ``dim`` must be divisible by it.
    """

    def __init__(self, dim: int, layer: int = 1, causal: bool = False, heads: int = 4):
        super().__init__(dim, layer, causal)
        self.tokens = MultiHeadSelfAttention(dim, layer, causal, heads)
        self.pool = AttentionPooling(dim)
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, h: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        mixed = self.tokens(h, padding)
        sentence = self.pool(h + mixed, padding, self.causal)
        return mixed + self.gate * sentence


@register("attention/hierarchical-local-global")
class LocalGlobalAttention(Attention):
    """Hierarchical attention, local then global: phrase windows of width ``window`` (3 tokens),
    then full attention over the phrase-mixed tokens, fused by a gate that starts at zero.

    The second reading of RDB's HA (docs/method.md, "Hierarchical attention"), so a suite can compare the two.

    Args:
        heads: Heads of both the local and the global self-attention; ``dim`` must be divisible
            by it.
        window: Width of the local stage's phrase windows: a token attends to the tokens fewer
            than ``window`` positions from it (on the causal text tower, itself and the
            ``window - 1`` tokens before it).
    """

    def __init__(self, dim: int, layer: int = 1, causal: bool = False, heads: int = 4, window: int = 3):
        super().__init__(dim, layer, causal)
        self.local = MultiHeadSelfAttention(dim, layer, causal, heads, window=window)
        self.glob = MultiHeadSelfAttention(dim, layer, causal, heads)
        nn.init.xavier_uniform_(self.local.out.weight)  # the global stage's zero output keeps the start exact
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, h: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        phrases = self.local(h, padding)
        return self.gate * phrases + self.glob(h + phrases, padding)
