"""Prompt-tuning competitors: learned tokens in the text prompt (CoOp), in the vision sequence
(VPT, shallow or deep), or both (VL-Prompt), as PE-RSITR (TGRS 2023) benchmarks them.

Text prompts are inserted right after CLIP's start token: ``[SOT, ctx_1..ctx_n, caption, EOT]``,
cut to the context length. The caption's EOT token moves ``n`` places to the right, so the text
tower pools it there (``text_global_pool`` finds it by its id, the largest in the vocabulary,
so the shift is followed automatically; a caption cut short loses words, never its EOT).
Vision prompts are inserted after the class token, which the vision tower still pools.

Prompts change the token sequence, so these adapters are not the identity at initialisation.
"""

from __future__ import annotations

import torch
from torch import nn

from rdbench.adapters.base import PROMPT_SPACE, Adapter
from rdbench.registry import register


def make_room(tokens: torch.Tensor, n: int) -> torch.Tensor:
    """Token ids shifted right by ``n`` after the start token (placeholders 0 in the gap), cut to
    the context length; a caption too long to fit keeps its EOT token in the last position."""
    length = tokens.shape[1]
    if n >= length - 1:
        raise ValueError(f"{n} context tokens leave no room for the caption in a context of {length} tokens")
    eot = tokens.argmax(dim=-1)
    shifted = torch.cat([tokens[:, :1], torch.zeros_like(tokens[:, :n]), tokens[:, 1 : length - n]], dim=1)
    overflow = eot + n >= length
    if overflow.any():
        rows = overflow.nonzero().squeeze(1)
        shifted[rows, length - 1] = tokens[rows, eot[rows]]
    return shifted


def encode_text_with_context(model: nn.Module, tokens: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """open_clip's ``CLIP.encode_text`` with ``n`` learned embeddings after the start token.

    Mirrors open_clip's own steps (embedding, positions, causal transformer, final norm, EOT
    pooling, projection) so that only the inserted context differs.
    """
    from open_clip.transformer import text_global_pool

    n = context.shape[0]
    shifted = make_room(tokens, n)
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(shifted).to(cast)
    x = torch.cat([x[:, :1], context.to(cast).unsqueeze(0).expand(len(x), -1, -1), x[:, 1 + n :]], dim=1)
    x = x + model.positional_embedding.to(cast)
    x = model.transformer(x, attn_mask=model.attn_mask)
    x = model.ln_final(x)
    x = text_global_pool(x, shifted, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    if isinstance(model.text_projection, nn.Linear):
        return model.text_projection(x)
    return x @ model.text_projection if model.text_projection is not None else x


@register("adapter/coop", tags=("baseline", "prompt"), example={"n_ctx": 4}, search_space=PROMPT_SPACE)
class CoOpAdapter(Adapter):
    """CoOp (Zhou et al., IJCV 2022): ``n_ctx`` learned context embeddings in the text prompt,
    shared by every caption (the unified-context variant); only they train.

    Inserted after the start token; initialised from N(0, 0.02^2) as in CoOp.

    Args:
        n_ctx: Number of learned context embeddings; they take room in the text context, so a
            caption longer than what is left loses its last words (its EOT token is kept).
        init_std: Standard deviation of the normal initialisation.
    """

    identity_at_init = False

    def __init__(self, n_ctx: int = 16, init_std: float = 0.02):
        super().__init__()
        if n_ctx < 1:
            raise ValueError("n_ctx must be at least 1")
        self.n_ctx, self.init_std = n_ctx, init_std
        self.context = nn.Parameter(torch.empty(0))

    def attach(self, model: nn.Module) -> None:
        width = model.token_embedding.embedding_dim
        self.context = nn.Parameter(torch.randn(self.n_ctx, width) * self.init_std)

    def encode_text(self, model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        return encode_text_with_context(model, tokens, self.context)


class VisionPrompts(nn.Module):
    """Learned tokens after the class token of the vision tower: at the input (shallow) or
    replaced before every block (deep), by forward hooks on open_clip's own modules."""

    def __init__(self, n_tokens: int, width: int, depth: int, deep: bool, init_std: float):
        super().__init__()
        self.n = n_tokens
        self.prompts = nn.Parameter(torch.randn(depth if deep else 1, n_tokens, width) * init_std)
        self.deep = deep

    def attach(self, visual: nn.Module) -> list:
        hooks = [visual.ln_pre.register_forward_hook(self._insert)]
        if self.deep:
            for i, block in enumerate(visual.transformer.resblocks):
                if i > 0:
                    hooks.append(block.register_forward_pre_hook(self._replacer(i), with_kwargs=True))
        return hooks

    def _insert(self, _module, _inputs, x: torch.Tensor) -> torch.Tensor:
        prompts = self.prompts[0].to(x.dtype).unsqueeze(0).expand(len(x), -1, -1)
        return torch.cat([x[:, :1], prompts, x[:, 1:]], dim=1)

    def _replacer(self, depth: int):
        def replace(_module, args, kwargs):
            x = args[0]
            prompts = self.prompts[depth].to(x.dtype).unsqueeze(0).expand(len(x), -1, -1)
            return (torch.cat([x[:, :1], prompts, x[:, 1 + self.n :]], dim=1), *args[1:]), kwargs

        return replace


@register("adapter/vpt", tags=("baseline", "prompt"), example={"n_tokens": 4}, search_space=PROMPT_SPACE)
class VPTAdapter(Adapter):
    """VPT (Jia et al., ECCV 2022): ``n_tokens`` learned tokens in the vision tower's sequence,
    after the class token. ``deep`` (the default, as PE-RSITR's "VPT (deep)") gives every block
    its own tokens; shallow inserts them once at the input. Only the prompts train.
    ``n_tokens=50`` (deep) gives PE-RSITR's 0.46M on ViT-B/32.

    Args:
        n_tokens: Number of learned tokens (per block when ``deep``).
        deep: Give every block its own tokens; False inserts them once at the input.
        init_std: Standard deviation of the normal initialisation.
    """

    identity_at_init = False

    text_padding_invariant = True  # checked by tests/test_registry.py

    def __init__(self, n_tokens: int = 50, deep: bool = True, init_std: float = 0.02):
        super().__init__()
        if n_tokens < 1:
            raise ValueError("n_tokens must be at least 1")
        self.n_tokens, self.deep, self.init_std = n_tokens, deep, init_std
        self.vision = nn.Module()
        self._hooks: list = []

    def attach(self, model: nn.Module) -> None:
        visual = model.visual
        self.vision = VisionPrompts(self.n_tokens, visual.transformer.width, len(visual.transformer.resblocks), self.deep, self.init_std)
        self._hooks = self.vision.attach(visual)


@register("adapter/vl-prompt", tags=("baseline", "prompt"), example={"n_ctx": 4, "n_tokens": 4},
          search_space=PROMPT_SPACE)
class VLPromptAdapter(Adapter):
    """VL-Prompt (prompts in both towers, as PE-RSITR benchmarks it; after Khattak et al.'s
    independent vision-language prompting): CoOp-style context in the text prompt and VPT tokens
    in the vision tower, learned independently. Only the prompts train. The defaults (16 text
    context tokens, 50 deep vision tokens) give PE-RSITR's 0.47M on ViT-B/32.

    Args:
        n_ctx: Number of learned context embeddings in the text prompt (as ``adapter/coop``).
        n_tokens: Number of learned vision tokens (per block when ``deep``, as ``adapter/vpt``).
        deep: Give every vision block its own tokens; False inserts them once at the input.
        init_std: Standard deviation of the normal initialisation of both prompts.
    """

    identity_at_init = False

    def __init__(self, n_ctx: int = 16, n_tokens: int = 50, deep: bool = True, init_std: float = 0.02):
        super().__init__()
        self.text = CoOpAdapter(n_ctx, init_std)
        self.image = VPTAdapter(n_tokens, deep, init_std)

    def attach(self, model: nn.Module) -> None:
        self.text.attach(model)
        self.image.attach(model)

    def encode_text(self, model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        return self.text.encode_text(model, tokens)

