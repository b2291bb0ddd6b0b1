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

The adapter is an ``nn.Module`` so that its parameters sit beside, not inside, the backbone:
a PEFT checkpoint is then the adapter's state plus whatever backbone tensors it declared.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import nn

from rdbench.registry import REGISTRY


class Adapter(nn.Module):
    """Base class of every adapter; see the module docstring for the contract."""

    #: Whether attaching the adapter leaves the embeddings unchanged (a zero-initialised
    #: residual); prompt methods that insert tokens are not, and say so.
    identity_at_init: bool = True

    def attach(self, model: nn.Module) -> None:
        """Insert the adapter into ``model`` (hooks or module swaps). Default: nothing."""

    def trainable_parameters(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        """Everything that trains, named; the default is the adapter's own parameters."""
        for name, param in self.named_parameters():
            yield f"adapter.{name}", param

    def before_encode_text(self, tokens: torch.Tensor) -> None:
        """Called with the token ids before the text tower runs (text mixers need the padding)."""

    def encode_image(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return model.encode_image(images)

    def encode_text(self, model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        self.before_encode_text(tokens)
        return model.encode_text(tokens)


REGISTRY.define_kind("adapter", Adapter)


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
        stash: dict[str, torch.Tensor] = {}

        def keep_input(_module, inputs):
            stash["x"] = inputs[0]

        def add_branch(_module, _inputs, output):
            return output + branch(stash.pop("x"))

        return [block.ln_2.register_forward_pre_hook(keep_input), block.mlp.register_forward_hook(add_branch)]
    if position == "sequential":

        def after_block(_module, _inputs, output):
            return output + branch(output)

        return [block.register_forward_hook(after_block)]
    raise ValueError(f"position must be 'parallel' or 'sequential', got {position!r}")
