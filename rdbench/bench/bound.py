"""The bound of a PEFT step against full fine-tuning, computed from the model's own matrix products.

A training step multiplies matrices three times per linear layer (docs/performance.md): the
forward product, the input gradient (for the layers below) and the weight gradient. Freezing the
backbone removes only the weight gradients; the input gradients stay wherever an adapter sits
below, which for an adapter in every block (CMAA, docs/method.md's placement) is every layer but
those under the first block's adapter. The attention core (``Q K^T`` and ``A V``) has no weight:
its forward and both input gradients run in either case. The patch embedding needs no input
gradient (its input is the image): full fine-tuning pays its forward and weight gradient, PEFT its
forward only. Full fine-tuning also runs AdamW over every weight, which PEFT all but skips.

So, with ``F`` the products' floating-point operations of a full step, ``P`` those of a PEFT
step without the adapter's own, and ``o`` the share of the full step its optimiser takes (timed),
the PEFT step can at best take ``(1 - o) * P / F`` of the full step, assuming the products run at
one speed. The products are counted on the real model, by forward hooks on one batch.
"""

from __future__ import annotations

import torch
from torch import nn

from rdbench.openclip import text_trims_padding, trim_text_padding


def product_flops(model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """Forward floating-point operations of one batch through ``model``'s matrix products, by
    kind: ``linear`` (every ``nn.Linear``, attention projections included), ``attention``
    (the ``Q K^T`` and ``A V`` products), ``patch`` (the image tower's first convolution). The
    towers' final projections (one ``(width, embed)`` product per item) are left out: they are
    a thousandth of the rest."""
    flops = {"linear": 0.0, "attention": 0.0, "patch": 0.0}
    handles = []

    def linear(module, inputs, output):
        flops["linear"] += 2.0 * output.numel() * module.in_features

    def attention(module, inputs, output):
        # nn.MultiheadAttention multiplies by its in- and out-projection weights itself (its
        # out_proj module is never called), so both are counted here
        query = inputs[0]
        width = query.shape[-1]
        length = query.shape[1] if module.batch_first or query.dim() == 2 else query.shape[0]
        rows = query.numel() // width  # batch x length tokens
        flops["linear"] += 2.0 * rows * width * 4 * width  # in-projection (3 D) and out-projection (D)
        flops["attention"] += 2 * 2.0 * rows * length * width  # Q K^T and A V

    def patch(module, inputs, output):
        kernel = module.weight[0].numel()
        flops["patch"] += 2.0 * output.numel() * kernel

    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            handles.append(module.register_forward_hook(attention))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear))
    conv = getattr(getattr(model, "visual", None), "conv1", None)
    if isinstance(conv, nn.Conv2d):
        handles.append(conv.register_forward_hook(patch))
    try:
        with torch.no_grad():
            model.encode_image(batch["images"].float() / 255.0)
            # the tokens a step's text tower sees: cut at the longest caption where the model allows
            model.encode_text(trim_text_padding(batch["tokens"]) if text_trims_padding(model) else batch["tokens"])
    finally:
        for handle in handles:
            handle.remove()
    return flops


def step_products(flops: dict[str, float]) -> dict[str, float]:
    """The products of a full and of a PEFT training step (see the module docstring)."""
    full = 3 * flops["linear"] + 3 * flops["attention"] + 2 * flops["patch"]
    peft = 2 * flops["linear"] + 3 * flops["attention"] + flops["patch"]
    return {"full": full, "peft": peft, "ratio": peft / full}


def peft_bound(flops: dict[str, float], optimizer_share: float) -> float:
    """The least PEFT / full step-time ratio: the products' ratio on the full step's non-optimiser share."""
    return (1.0 - optimizer_share) * step_products(flops)["ratio"]


#: How :func:`time_by_kind` sorts the profiler's operators (first match on the lower-cased name).
KINDS = (
    ("matrix products", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "convolution")),
    ("attention kernels", ("scaled_dot_product", "flash_attention")),
    ("optimiser", ("_foreach_", "optimizer.step", "adam")),
    ("copies and layout", ("aten::copy_", "aten::clone", "aten::contiguous", "aten::cat", "aten::_to_copy",
                           "aten::stack", "aten::index")),
)
REST = "elementwise, norms and the rest"


def time_by_kind(step) -> dict[str, float]:
    """Self CPU seconds of one call of ``step`` by kind of operator (:data:`KINDS`), from
    ``torch.profiler``: where a step's time goes beyond its matrix products."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    out = dict.fromkeys([kind for kind, _ in KINDS] + [REST], 0.0)
    for event in prof.key_averages():
        name = event.key.lower()
        kind = next((k for k, keys in KINDS if any(s in name for s in keys)), REST)
        out[kind] += event.self_cpu_time_total / 1e6
    return out
