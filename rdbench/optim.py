"""Optimiser factories (kind ``optimizer``): what the LightningModule calls in
``configure_optimizers`` with the parameters that train and the number of steps.

Contract: ``build(params, total_steps) -> (torch.optim.Optimizer, LR scheduler or None)``; a
scheduler is stepped every optimiser step.

Per-parameter learning rates: a component may mark one of its parameters with its own peak
learning rate, ``param.rdbench_lr = 0.05``, and optionally its own weight decay,
``param.rdbench_weight_decay = 0.0`` (``weighting/uncertainty`` does, for its log-variances, which
the adapter's rate would barely move in a short run). A factory puts the marked parameters in
param groups of their own with those values (unmarked values: the factory's); the schedule's
factor applies to every group alike (a ``LambdaLR`` scales each group's own initial rate). The
LightningModule never branches on which component asked. The mark is a plain attribute of the
``nn.Parameter``: it survives ``.to()`` and pickling, not ``copy.deepcopy``, so it is set where
the parameter is created.
"""

from __future__ import annotations

import abc
import math
from typing import Iterable, Literal

import torch

from jsonargparse.typing import PositiveFloat

from rdbench.registry import REGISTRY, register


class Optimizer(abc.ABC):
    """Base class of optimiser factories; see the module docstring."""

    @abc.abstractmethod
    def build(self, params: Iterable[torch.nn.Parameter], total_steps: int):  # pragma: no cover - contract
        """Contract method: every registered component overrides it."""


REGISTRY.define_kind("optimizer", Optimizer)


@register("optimizer/adamw")
class AdamWOptimizer(Optimizer):
    """AdamW with linear warm-up then a constant, cosine or linear schedule.

    Defaults follow HarMA's PEFT recipe on GeoRSCLIP (betas 0.9/0.98, docs/method.md, "Hyper-parameters from the public record").
    ``fused``: torch's one-kernel AdamW; ``None`` (the default) takes it wherever every parameter
    lives on a CPU or CUDA device, which torch's fused kernel supports. It matters for full
    fine-tuning, whose optimiser step over ViT-B-32's 151M weights costs about 1.2 s on one CPU
    thread with the per-tensor loop and 0.2 s fused: a benchmark must not handicap the method
    PEFT is compared against. ``False`` forces the per-tensor implementation.

    Args:
        lr: Peak learning rate, reached at the end of the warm-up.
        weight_decay: AdamW's decoupled weight decay.
        betas: Adam's ``(beta1, beta2)``.
        eps: Adam's epsilon.
        warmup_ratio: Fraction of the total steps spent in the linear warm-up, in [0, 1).
        schedule: The learning rate after the warm-up: ``constant``, or a ``cosine`` or
            ``linear`` decay to 0 at the last step.
        fused: Use torch's fused AdamW (True), the per-tensor loop (False), or decide from
            where the parameters live (None).
    """

    def __init__(
        self,
        lr: PositiveFloat = 1e-3,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-6,
        warmup_ratio: float = 0.0,
        schedule: Literal["constant", "cosine", "linear"] = "cosine",
        fused: bool | None = None,
    ):
        if lr <= 0:
            raise ValueError("lr must be positive")
        if not 0 <= warmup_ratio < 1:
            raise ValueError("warmup_ratio must be in [0, 1)")
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, tuple(betas), eps
        self.warmup_ratio, self.schedule, self.fused = warmup_ratio, schedule, fused

    def build(self, params, total_steps):
        params = [p for p in params if p.requires_grad]
        fused = self.fused
        if fused is None:
            fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
        kwargs = {"fused": True} if fused else {}
        opt = torch.optim.AdamW(param_groups(params, self.lr, self.weight_decay), lr=self.lr,
                                weight_decay=self.weight_decay, betas=self.betas, eps=self.eps, **kwargs)
        total = max(int(total_steps), 1)
        warmup = int(self.warmup_ratio * total)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(total - warmup, 1)
            if self.schedule == "cosine":
                return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
            if self.schedule == "linear":
                return max(1.0 - progress, 0.0)
            return 1.0

        return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def param_groups(params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float) -> list[dict]:
    """``params`` as torch param groups: the unmarked ones first, then one group per distinct
    ``(rdbench_lr, rdbench_weight_decay)`` mark (see the module docstring), in the order met."""
    plain: list[torch.nn.Parameter] = []
    marked: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for p in params:
        own_lr, own_wd = getattr(p, "rdbench_lr", None), getattr(p, "rdbench_weight_decay", None)
        if own_lr is None and own_wd is None:
            plain.append(p)
            continue
        key = (float(own_lr if own_lr is not None else lr), float(own_wd if own_wd is not None else weight_decay))
        if key[0] <= 0:
            raise ValueError(f"a parameter is marked with rdbench_lr={own_lr}; it must be positive")
        marked.setdefault(key, []).append(p)
    groups = [{"params": plain}] if plain else []
    groups += [{"params": ps, "lr": g_lr, "weight_decay": g_wd} for (g_lr, g_wd), ps in marked.items()]
    return groups
