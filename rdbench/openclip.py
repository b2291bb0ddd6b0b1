"""The one place rdbench imports open_clip.

Every module that needs open_clip writes ``from rdbench.openclip import open_clip``. torchvision
(which open_clip imports) was made importable when the ``rdbench`` package was imported
(:mod:`rdbench._torchvision_compat`).
"""

import contextlib
import functools
import logging
import types
from collections import OrderedDict

import open_clip
import torch
from open_clip.transformer import text_global_pool

__all__ = ["open_clip", "create_model", "fold_friendly_attention", "get_tokenizer", "trim_text_padding", "text_trims_padding"]


class _NoRandomInitNotice(logging.Filter):
    """open_clip warns on the root logger whenever a model is built without pretrained weights;
    rdbench does that on purpose (it loads its own weights right after, or counts parameters)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


def create_model(name: str, pretrained: str | None = None, **kwargs):
    """``open_clip.create_model`` without the notice above when ``pretrained`` is None."""
    quiet = _NoRandomInitNotice()
    root = logging.getLogger()
    handlers = [root, *root.handlers]
    with contextlib.ExitStack() as stack:
        for h in handlers:
            h.addFilter(quiet)
            stack.callback(h.removeFilter, quiet)
        model = open_clip.create_model(name, pretrained=pretrained, **kwargs)
    return any_length_text(fold_friendly_attention(model))


class RememberingTokenizer:
    """An open_clip tokenizer that remembers its last results.

    The runs of a suite tokenize the same splits again and again (ftfy and BPE take about 0.3 s
    per 2,000 captions, a few percent of a run on the embedded default); in one process each
    list of captions is tokenized once. A result is handed out as a copy, so a caller may change
    it. ``tokenizer`` is the wrapped open_clip tokenizer (its attributes stay reachable there).
    """

    def __init__(self, tokenizer, keep: int = 16):
        self.tokenizer, self.keep = tokenizer, keep
        self._results: OrderedDict[tuple[str, ...], torch.Tensor] = OrderedDict()

    def __call__(self, texts: str | list[str]) -> torch.Tensor:
        key = (texts,) if isinstance(texts, str) else tuple(texts)
        tokens = self._results.get(key)
        if tokens is None:
            tokens = self._results[key] = self.tokenizer(list(key))
            while len(self._results) > self.keep:
                self._results.popitem(last=False)
        else:
            self._results.move_to_end(key)
        return tokens.clone()


@functools.lru_cache(maxsize=16)
def get_tokenizer(name: str) -> RememberingTokenizer:
    """``open_clip.get_tokenizer(name)``, built once per process and remembering its results."""
    return RememberingTokenizer(open_clip.get_tokenizer(name))


def _sequence_first_memory(module: torch.nn.MultiheadAttention, args: tuple, kwargs: dict):
    """Forward pre-hook: hand self-attention a (B, L, D) tensor whose memory is (L, B, D).

    ``nn.MultiheadAttention(batch_first=True)`` transposes its input to sequence-first and runs
    the in-projection ``F.linear`` on that non-contiguous view. ``torch.matmul`` folds such an
    input into one (L*B, D) matrix product (copying it) only when the weight needs a gradient;
    with a frozen weight, as under every PEFT method, it runs a batched product over an expanded
    weight instead, about 2x slower on CPU (measured in docs/performance.md). Laying the input
    out sequence-first makes the transpose contiguous, so both cases run the folded product that
    full fine-tuning already ran: full fine-tuning computes exactly what it did before, PEFT
    methods the same algorithm as full fine-tuning. Cross-attention (query is not key) and
    sequence-first modules are left alone.
    """
    if not module.batch_first or len(args) < 3:
        return None
    query, key, value = args[:3]
    if not (query is key and key is value) or query.dim() != 3 or query.transpose(0, 1).is_contiguous():
        return None
    relaid = query.transpose(0, 1).contiguous().transpose(0, 1)
    return (relaid, relaid, relaid, *args[3:]), kwargs


def fold_friendly_attention(model: torch.nn.Module) -> torch.nn.Module:
    """Install :func:`_sequence_first_memory` on every batch-first ``nn.MultiheadAttention``."""
    for module in model.modules():
        if isinstance(module, torch.nn.MultiheadAttention) and not getattr(module, "_rdbench_fold_hook", False):
            module.register_forward_pre_hook(_sequence_first_memory, with_kwargs=True)
            module._rdbench_fold_hook = True
    return model


def _encode_text_any_length(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """open_clip's ``CLIP.encode_text`` (3.x), with the positional embedding and the causal mask
    cut to the tokens' length: at full length it computes exactly what open_clip does."""
    length = text.shape[1]
    cast_dtype = self.transformer.get_cast_dtype()
    x = self.token_embedding(text).to(cast_dtype)
    x = x + self.positional_embedding[:length].to(cast_dtype)
    x = self.transformer(x, attn_mask=self.attn_mask[:length, :length])
    x = self.ln_final(x)
    x = text_global_pool(x, text, self.text_pool_type, eos_token_id=getattr(self, "text_eos_id", None))
    if self.text_projection is not None:
        x = self.text_projection(x) if isinstance(self.text_projection, torch.nn.Linear) else x @ self.text_projection
    return torch.nn.functional.normalize(x, dim=-1) if normalize else x


def text_trims_padding(model: torch.nn.Module) -> bool:
    """Whether a caption's embedding from ``model`` cannot depend on the padding after its end
    token: a causal text tower that pools at the end token (CLIP's ``argmax``), whose
    ``encode_text`` takes shorter sequences (:func:`any_length_text`)."""
    return bool(getattr(model, "_rdbench_any_length_text", False))


def any_length_text(model: torch.nn.Module) -> torch.nn.Module:
    """Let a CLIP model's ``encode_text`` take token sequences shorter than its context.

    open_clip's ``CLIP.encode_text`` adds the whole positional embedding, so it needs tokens
    padded to the context length, though with a causal tower and end-token pooling the padding
    after the last caption's end changes nothing. This installs the same function with both
    cut to the tokens' length, on CLIP models whose text tower is causal and pools at the end
    token; others (SigLIP's bidirectional tower, first- or last-token pooling, custom text
    towers) are left alone, and :func:`text_trims_padding` says which. Evaluating captions
    sorted by length and cutting each batch at its longest caption, and cutting training
    batches likewise, then encodes about a quarter of the text tokens in evaluation (each
    distinct caption once) and about 60 % in training on the embedded default
    (docs/runs-per-hour.md).
    """
    if type(model).encode_text is not open_clip.CLIP.encode_text or getattr(model, "text_pool_type", None) != "argmax":
        return model
    mask = getattr(model, "attn_mask", None)
    if not (isinstance(mask, torch.Tensor) and mask.is_floating_point() and mask.dim() == 2
            and isinstance(getattr(model, "positional_embedding", None), torch.Tensor)):
        return model
    above = torch.ones_like(mask, dtype=torch.bool).triu(1)
    if not (bool(torch.isneginf(mask[above]).all()) and bool((mask[~above] == 0).all())):
        return model  # not exactly causal: a token could see the padding after it
    model.encode_text = types.MethodType(_encode_text_any_length, model)
    model._rdbench_any_length_text = True
    return model


def trim_text_padding(tokens: torch.Tensor) -> torch.Tensor:
    """``tokens`` without the trailing columns that are padding (id 0) in every row.

    CLIP's tokenizer ends every caption with its end token (the largest id, never 0) and pads
    after it with 0, so the columns cut are after every row's end token.
    """
    used = tokens.ne(0).any(dim=0).nonzero()
    keep = int(used[-1]) + 1 if len(used) else 1
    return tokens if keep == tokens.shape[1] else tokens[:, :keep]
