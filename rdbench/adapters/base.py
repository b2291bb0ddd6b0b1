"""The adapter contract, and the hook points every block-level adapter shares.

Contract (what an ``adapter/*`` component receives and must provide):

* ``attach(model)`` is called once with the open_clip ``CLIP`` model, before training. It may
  register forward hooks on the model's modules or swap modules; it must not copy the model.
* ``trainable_parameters(model)`` yields ``(name, parameter)`` for everything that trains. The
  default is the adapter's own parameters. The backbone is frozen first, so whatever this does
  not name stays frozen (``adapter/full`` names the whole backbone).
* ``encode_image(model, images)`` / ``encode_text(model, tokens)`` run the towers and return
  unnormalised embeddings. The defaults call the backbone's own ``encode_image``/``encode_text``
  (with the adapter's hooks active); prompt methods and output-side adapters override them.

Diagnostics (:mod:`rdbench.diagnostics.gradients`) ask ``tower_of(name)`` which tower a trained
parameter belongs to (``"image"``, ``"text"`` or ``"shared"``; ``name`` is the module's dotted
name, ``adapter.`` or ``model.`` first). The default reads the name
(:func:`rdbench.diagnostics.towers.tower_by_name`: ``vision``/``image`` or ``text``/``context``
among its words); an adapter whose names do not say it overrides the method.

Optional capability, for methods that act only after the frozen towers (zero-shot, linear
probe, CLIP-Adapter): ``frozen_towers = True`` declares that the towers up to their pooled,
pre-projection outputs neither change during training nor depend on the adapter, so those
outputs can be computed once per split and cached (:mod:`rdbench.training.feature_cache`).
Such an adapter maps cached features to embeddings with ``head_image(model, features)`` /
``head_text(model, features)``, which must equal ``encode_image`` / ``encode_text`` composed
with :func:`image_features` / :func:`text_features`. The default heads apply the backbone's
own projections, which is exactly what the default encoders do after the towers.

Optional capability, for adapters whose text side acts per token or masks the padding (the
mixer contract of :mod:`rdbench.adapters.parts` already asks that of mixers):
``text_padding_invariant = True`` declares that a caption's embedding does not depend on the
padding after its end token, trained or not. On a backbone whose text tower is causal and pools
at the end token (:func:`rdbench.openclip.text_trims_padding`), the module then drops the
padding columns that every caption of a batch has (:func:`rdbench.openclip.trim_text_padding`)
and evaluates captions sorted by length: the same embeddings up to float rounding, from a
fraction of the text tokens (docs/runs-per-hour.md). ``rdbench.testing.check_text_padding`` checks
the declaration with trained (randomised) weights; the registry test runs it on every key that
declares it.

The adapter is an ``nn.Module`` so that its parameters sit beside, not inside, the backbone:
a PEFT checkpoint is then the adapter's state plus whatever backbone tensors it declared.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn

from rdbench.diagnostics.towers import tower_by_name
from rdbench.registry import REGISTRY


def lr_space(low: float, high: float) -> dict[str, dict]:
    """A family's default search space for ``select``: the peak learning rate, log-uniform."""
    return {"optimizer.lr": {"type": "float", "low": low, "high": high, "log": True}}


#: Default learning-rate ranges of the method families for a suite's ``select`` slot
#: (docs/protocol.md, "Selection"). Each spans the values the family's papers train at with
#: AdamW, widened by about 3x on each side, because a tiny backbone and a short schedule move the
#: optimum: bottleneck adapters (Houlsby, AdaptFormer, UniAdapter, RDB's CMAA: 1e-4 to 5e-3 in
#: their papers and HarMA's recipe), LoRA (1e-4 to 1e-3 at rank 8 on CLIP), prompts and linear
#: heads (CoOp, VPT, CLIP-Adapter train only a few thousand values, at 2e-3 to 1e-2), and full
#: fine-tuning (1e-6 to 1e-5 on ViT-B CLIP; 1e-4 on the embedded tiny-rs).
ADAPTER_SPACE = lr_space(3.0e-4, 1.0e-2)
LORA_SPACE = lr_space(1.0e-4, 1.0e-2)
PROMPT_SPACE = lr_space(1.0e-3, 3.0e-2)
FULL_SPACE = lr_space(1.0e-5, 1.0e-3)


class Adapter(nn.Module):
    """Base class of every adapter; see the module docstring for the contract."""

    #: The family's default hyper-parameter space for a suite's ``select`` slot (set by
    #: ``register(..., search_space=...)``; a plugin sets the attribute). Empty: nothing trains.
    search_space: dict = ADAPTER_SPACE

    #: Whether attaching the adapter leaves the embeddings unchanged (a zero-initialised
    #: residual); prompt methods that insert tokens are not, and say so.
    identity_at_init: bool = True

    #: Whether the adapter leaves both towers frozen and hook-free up to their pre-projection
    #: outputs, so that those can be cached (see the module docstring); off unless declared.
    frozen_towers: bool = False

    #: Whether a caption's embedding is independent of the padding after its end token, so that
    #: batches may be cut at their longest caption (see the module docstring); off unless declared.
    text_padding_invariant: bool = False

    def attach(self, model: nn.Module) -> None:
        """Insert the adapter into ``model`` (hooks or module swaps). Default: nothing."""

    def trainable_parameters(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        """Everything that trains, named; the default is the adapter's own parameters."""
        for name, param in self.named_parameters():
            yield f"adapter.{name}", param

    def tower_of(self, name: str) -> str:
        """``"image"``, ``"text"`` or ``"shared"``: the tower the parameter ``name`` serves."""
        return tower_by_name(name)

    def before_encode_text(self, tokens: torch.Tensor) -> None:
        """Called with the token ids before the text tower runs (text mixers need the padding)."""

    def encode_image(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return model.encode_image(images)

    def encode_text(self, model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        self.before_encode_text(tokens)
        return model.encode_text(tokens)

    def head_image(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        """Pre-projection image features -> unnormalised embeddings (``frozen_towers`` only)."""
        return project_image(model, features)

    def head_text(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        """Pre-projection caption features -> unnormalised embeddings (``frozen_towers`` only)."""
        return project_text(model, features)


REGISTRY.define_kind("adapter", Adapter)


@contextlib.contextmanager
def _no_projections(model: nn.Module):
    """Both towers without their final projections, for the duration of the block.

    open_clip applies ``visual.proj`` and ``text_projection`` as the very last step of each
    tower and skips them when they are ``None``; removing them for a moment yields the pooled
    pre-projection outputs with open_clip's own tower code (pooling, final norm) in charge.
    """
    saved = model.visual.proj, model.text_projection
    model.visual.proj, model.text_projection = None, None
    try:
        yield
    finally:
        model.visual.proj, model.text_projection = saved


def image_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The image tower's pooled output before its projection (normalised float images in)."""
    with _no_projections(model):
        return model.encode_image(images)


def text_features(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The text tower's pooled output before its projection."""
    with _no_projections(model):
        return model.encode_text(tokens)


def _project(projection, features: torch.Tensor) -> torch.Tensor:
    if projection is None:
        return features
    if isinstance(projection, nn.Module):  # some open_clip configs use Linear projections
        return projection(features)
    return features @ projection  # the very operation open_clip's towers end with


def project_image(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    return _project(model.visual.proj, features)


def project_text(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    return _project(model.text_projection, features)


def tower_blocks(model: nn.Module) -> dict[str, list[nn.Module]]:
    """The residual blocks of each tower of an open_clip CLIP model, by tower name."""
    return {"vision": list(model.visual.transformer.resblocks), "text": list(model.transformer.resblocks)}


def tower_widths(model: nn.Module) -> dict[str, int]:
    return {"vision": model.visual.transformer.width, "text": model.transformer.width}


def select_layers(layers: list[int] | None, depth: int) -> list[int]:
    """0-based block indices; ``None`` means every block, negative indices count from the end."""
    if layers is None:
        return list(range(depth))
    out = sorted({i % depth for i in layers if -depth <= i < depth})
    if len(out) != len(set(layers)):
        raise ValueError(f"layers {layers} out of range for a tower of {depth} blocks")
    return out


def hook_block_mlp(block: nn.Module, branch: Callable[[torch.Tensor], torch.Tensor], position: str) -> list:
    """Add ``branch`` at a block's MLP sub-layer, in parallel or in sequence.

    * parallel (AdaptFormer, MRS-Adapter): the branch reads the post-attention residual stream
      ``x`` (the input of ``ln_2``) and its output is added to the MLP's output.
    * sequential (Houlsby-style, after the MLP): the branch reads the block's output ``y`` and
      ``y + branch(y)`` replaces it.

    Forward hooks, rather than a rewritten block, keep open_clip's own block code in charge
    (LayerScale, attention variants, gradient checkpointing), whatever its version.
    """
    if position == "parallel":
        return hook_parallel(block.ln_2, block.mlp, branch)
    if position == "sequential":

        def after_block(_module, _inputs, output):
            return output + branch(output)

        return [block.register_forward_hook(after_block)]
    raise ValueError(f"position must be 'parallel' or 'sequential', got {position!r}")


def hook_parallel(reads: nn.Module, adds_to: nn.Module, branch: Callable[[torch.Tensor], torch.Tensor]) -> list:
    """``branch(input of reads)`` is added to the output of ``adds_to``: a branch parallel to the
    sub-layer between them (``ln_2`` -> ``mlp`` for the MLP, ``ln_1`` -> ``ls_1`` for attention)."""
    stash: dict[str, torch.Tensor] = {}

    def keep_input(_module, inputs):
        stash["x"] = inputs[0]

    def add_branch(_module, _inputs, output):
        return output + branch(stash.pop("x"))

    return [reads.register_forward_pre_hook(keep_input), adds_to.register_forward_hook(add_branch)]


# -- inside a block: the fused attention projections and the MLP's hidden activation ----------
#: The order of the query, key and value rows in a fused ``in_proj_weight`` (``nn.MultiheadAttention``).
QKV = ("q", "k", "v")


def fused_attention(block: nn.Module) -> nn.MultiheadAttention:
    """A block's self-attention, checked to keep query, key and value in one fused projection.

    open_clip's ``ResidualAttentionBlock`` runs ``nn.MultiheadAttention``, which computes the
    three in one matrix product: ``in_proj_weight`` is ``(3 D, D)`` and ``in_proj_bias`` ``(3 D,)``,
    rows ``[0, D)`` for the queries, ``[D, 2 D)`` the keys, ``[2 D, 3 D)`` the values
    (:func:`qkv_rows`). There is no separate module per projection to hook: a method that changes
    them (LoRA's low-rank update, (IA)^3's rescaling of keys and values) acts on those rows, best
    through a ``torch.nn.utils.parametrize`` parametrization of ``in_proj_weight`` (and
    ``in_proj_bias``), which keeps PyTorch's fused attention kernel and open_clip's block code in
    charge; ``adapter/lora`` does exactly that (rdbench/adapters/lora.py)."""
    attn = getattr(block, "attn", None)
    if not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim or attn.in_proj_weight is None:
        raise ValueError(f"{type(block).__name__}: expected open_clip's block with nn.MultiheadAttention and a fused "
                         "in_proj_weight (timm and custom attention blocks keep q, k, v elsewhere)")
    return attn


def qkv_rows(block: nn.Module, which: str) -> slice:
    """The rows of ``in_proj_weight`` / ``in_proj_bias`` that make ``which`` (``"q"``, ``"k"`` or
    ``"v"``) in the block's fused attention (:func:`fused_attention`)."""
    width = fused_attention(block).embed_dim
    return slice(QKV.index(which) * width, (QKV.index(which) + 1) * width)


def mlp_hidden_width(block: nn.Module) -> int:
    """The width of a block's MLP hidden layer (``mlp_ratio`` x the tower width: 2048 for a
    ViT-B-32 text block of width 512, 3072 for its image blocks of width 768)."""
    return block.mlp.c_fc.out_features


def hook_mlp_hidden(block: nn.Module, change: Callable[[torch.Tensor], torch.Tensor]) -> list:
    """Replace the MLP's hidden activation ``h`` (after the non-linearity, before ``c_proj``;
    shape ``(..., mlp_hidden_width(block))``) with ``change(h)``: a forward pre-hook on
    ``c_proj``, which sees the activation whatever non-linearity (and optional norm) the
    backbone put before it. (IA)^3's ``l_ff`` scaling is ``change = lambda h: h * scale``.
    Returns the hook handles."""

    def before_projection(_module, inputs):
        return (change(inputs[0]), *inputs[1:])

    return [block.mlp.c_proj.register_forward_pre_hook(before_projection)]
