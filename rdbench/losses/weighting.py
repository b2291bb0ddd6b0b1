"""Adaptive weightings of loss terms (kind ``weighting``): DTCL's "adaptive weighted
combination" (docs/method.md, "DTCL") and its alternatives. ``weighting/fixed`` lives in
:mod:`rdbench.losses.base` beside the contract."""

from __future__ import annotations

import math

import torch
from torch import nn

from rdbench.losses.base import Weighting
from rdbench.registry import register


@register("weighting/uncertainty")
class UncertaintyWeighting(Weighting):
    """Learned homoscedastic-uncertainty weights (Kendall, Gal and Cipolla, CVPR 2018), the
    default reading of DTCL's adaptive weighting: ``sum_k exp(-s_k) L_k + s_k`` with one learned
    log-variance ``s_k`` per term, initialised at ``init`` (0: every weight starts at 1). A
    term's schedule factor ``f_k`` (a ramp-up, 1 for most terms) scales its whole contribution,
    ``f_k (exp(-s_k) L_k + s_k)``: at the optimum ``exp(-s_k) = 1 / L_k`` whatever ``f_k``, so
    the weighting cannot undo the ramp, which it would if the ramp scaled ``L_k`` alone. The
    reported weight of term k is ``f_k exp(-s_k)``.

    The ``s_k`` train in their own optimiser group (``rdbench_lr``, see :mod:`rdbench.optim`)
    at ``lr`` with no weight decay. Why: Adam moves a parameter by at most about its learning
    rate per step, so at the adapter's rate (3e-3 for CMAA) an ``s_k`` moves by under 1 in a
    600-step cosine run (3e-3 x 600 x 0.5), and far less in practice: the "adaptive" weighting
    would stay a fixed one. The optimum ``s_k = log L_k`` lies O(1) from 0 for an InfoNCE and
    about -7 for a consistency KL of 1e-3; 0.05 reaches it within the first ~100-200 steps of
    a 600-step run, and its jitter there (about ``lr``) moves the weights by ~5 %. Weight
    decay would pull every weight towards 1, a bias Kendall et al.'s objective does not have.

    Why the weights are capped (``max_weight``): Kendall et al.'s optimum ``exp(-s_k) = 1 / L_k``
    assumes each loss is a likelihood whose noise stays away from zero. DTCL's consistency KL
    does not: the teacher is an average of the student, so the KL shrinks towards 0 and its
    optimal weight grows without bound. Measured on the embedded default (CMAA + DTCL, lr 3e-3,
    12 epochs, uncapped): the consistency weight reached 859 by step 319 while the contrastive
    weight fell to 0.35, the student was pinned to its lagging teacher, and val mR fell from 7.8
    after the first epoch to 5.8 (CMAA with InfoNCE alone: 14.4). ``s_k >= -log(max_weight)``
    keeps the weighting adaptive within a bounded range; the bound of 10 lets a term count 10x
    its raw value, the range in which uncertainty weights move in Kendall et al.'s experiments.

    Args:
        init: Initial log-variance ``s_k`` of every term.
        lr: Peak learning rate of the log-variances (the optimiser's schedule still applies);
            ``None`` trains them at the optimiser's own rate and weight decay.
        max_weight: Largest weight ``exp(-s_k)`` a term can get (``s_k`` is clamped at
            ``-log(max_weight)``); ``None`` leaves the weights unbounded, Kendall et al.'s form.
    """

    def __init__(self, init: float = 0.0, lr: float | None = 0.05, max_weight: float | None = 10.0):
        super().__init__()
        if lr is not None and lr <= 0:
            raise ValueError("lr must be positive (or None for the optimiser's own)")
        if max_weight is not None and max_weight <= 1:
            raise ValueError("max_weight must be greater than 1 (or None for no bound)")
        self.init, self.lr, self.max_weight = init, lr, max_weight
        self.log_vars = nn.ParameterDict()

    def _log_var(self, name: str) -> torch.Tensor:
        s = self.log_vars[name]
        return s if self.max_weight is None else s.clamp(min=-math.log(self.max_weight))

    def forward(self, values):
        return self.combine(values, {})

    def combine(self, values, factors):
        for name in values:
            if name not in self.log_vars:
                # CompositeLoss calls ``prepare`` with its term names at construction, before
                # the optimiser is built; a term appearing later would never be optimised.
                raise RuntimeError(f"weighting/uncertainty was not prepared for term {name!r}")
        s = {k: self._log_var(k) for k in values}
        total = sum(factors.get(k, 1.0) * (torch.exp(-s[k]) * v + s[k]) for k, v in values.items())
        return total, {k: factors.get(k, 1.0) * torch.exp(-s[k]).detach() for k in values}

    def prepare(self, names: list[str]) -> None:
        for name in names:
            if name not in self.log_vars:
                param = nn.Parameter(torch.tensor(float(self.init)))
                if self.lr is not None:
                    param.rdbench_lr = float(self.lr)
                    param.rdbench_weight_decay = 0.0
                self.log_vars[name] = param


#: Added to both window means before DWA divides them, so that a term whose loss is ~0 (a
#: consistency KL while teacher and student coincide, a term with nothing to say) gives a ratio
#: near 1 instead of 0/0 or x/0.
DWA_EPS = 1e-8


@register("weighting/dwa")
class DynamicWeightAveraging(Weighting):
    """Dynamic Weight Average (Liu, Johns and Davison, CVPR 2019): ``w_k = K softmax_k(r_k / T)``
    with ``r_k`` the ratio of term k's mean over the last window of ``window`` training batches
    to its mean over the window before; weights are 1 until two windows have passed. Nothing is
    learned. The ratio is ``(last + eps) / (prev + eps)`` (``eps`` = 1e-8) clamped to
    ``[1 / max_ratio, max_ratio]``: Liu et al.'s ratios are loss descent rates near 1, and a
    term whose loss is ~0 in one window (a KL while teacher and student coincide) would
    otherwise divide by zero or take every weight. The default clamp of 4 bounds the weights,
    with T = 2 and three terms, within about [0.2, 2.3]. The windows see each term's value
    before its schedule factor (a ramp-up), which then scales the weighted contribution.

    Args:
        temperature: ``T`` in the softmax; a larger one keeps the weights closer to 1.
        window: Training batches per averaging window.
        max_ratio: Clamp of each descent ratio to ``[1 / max_ratio, max_ratio]``; above 1.
    """

    def __init__(self, temperature: float = 2.0, window: int = 20, max_ratio: float = 4.0):
        super().__init__()
        if temperature <= 0 or window < 1:
            raise ValueError("temperature must be positive and window at least 1")
        if not max_ratio > 1:
            raise ValueError("max_ratio must be above 1")
        self.temperature, self.window, self.max_ratio = temperature, window, max_ratio
        self._sums: dict[str, float] = {}
        self._steps = 0
        self._history: list[dict[str, float]] = []
        self._weights: dict[str, float] = {}

    def forward(self, values):
        return self.combine(values, {})

    def combine(self, values, factors):
        if self.training:
            self._observe({k: float(v.detach()) for k, v in values.items()})
        weights = {k: torch.as_tensor(factors.get(k, 1.0) * self._weights.get(k, 1.0), device=v.device)
                   for k, v in values.items()}
        return sum(weights[k] * v for k, v in values.items()), weights

    def _observe(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        self._steps += 1
        if self._steps < self.window:
            return
        self._history = (self._history + [{k: s / self._steps for k, s in self._sums.items()}])[-2:]
        self._sums, self._steps = {}, 0
        if len(self._history) == 2:
            prev, last = self._history
            names = list(last)
            ratios = torch.tensor([(last[k] + DWA_EPS) / (prev.get(k, last[k]) + DWA_EPS) for k in names],
                                  dtype=torch.float64)
            ratios = ratios.nan_to_num(nan=1.0).clamp(1 / self.max_ratio, self.max_ratio)
            w = len(names) * torch.softmax(ratios / self.temperature, dim=0)
            self._weights = dict(zip(names, w.tolist()))
