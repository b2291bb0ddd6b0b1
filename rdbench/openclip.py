"""The one place rdbench imports open_clip.

Every module that needs open_clip writes ``from rdbench.openclip import open_clip``. torchvision
(which open_clip imports) was made importable when the ``rdbench`` package was imported
(:mod:`rdbench._torchvision_compat`).
"""

import contextlib
import logging

import open_clip
import torch

__all__ = ["open_clip", "create_model", "fold_friendly_attention"]


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
    return fold_friendly_attention(model)


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
