"""Adaptive weightings of loss terms (kind ``weighting``): DTCL's "adaptive weighted
combination" (docs/method.md, "DTCL") and its alternatives. ``weighting/fixed`` lives in
:mod:`rdbench.losses.base` beside the contract."""

from __future__ import annotations

import torch
from torch import nn

from rdbench.losses.base import Weighting
from rdbench.registry import register


@register("weighting/uncertainty")
class UncertaintyWeighting(Weighting):
    """Learned homoscedastic-uncertainty weights (Kendall, Gal and Cipolla, CVPR 2018), the
    default reading of DTCL's adaptive weighting: ``sum_k exp(-s_k) L_k + s_k`` with one learned
    log-variance ``s_k`` per term, initialised at ``init`` (0: every weight starts at 1). The
    ``s_k`` train with the adapter; the reported weight of term k is ``exp(-s_k)``.

    Args:
        init: Initial log-variance ``s_k`` of every term.
    """

    def __init__(self, init: float = 0.0):
        super().__init__()
        self.init = init
        self.log_vars = nn.ParameterDict()

    def forward(self, values):
        for name in values:
            if name not in self.log_vars:
                # CompositeLoss calls ``prepare`` with its term names at construction, before
                # the optimiser is built; a term appearing later would never be optimised.
                raise RuntimeError(f"weighting/uncertainty was not prepared for term {name!r}")
        total = sum(torch.exp(-self.log_vars[k]) * v + self.log_vars[k] for k, v in values.items())
        return total, {k: torch.exp(-self.log_vars[k]).detach() for k in values}

    def prepare(self, names: list[str]) -> None:
        for name in names:
            if name not in self.log_vars:
                self.log_vars[name] = nn.Parameter(torch.tensor(float(self.init)))


@register("weighting/dwa")
class DynamicWeightAveraging(Weighting):
    """Dynamic Weight Average (Liu, Johns and Davison, CVPR 2019): ``w_k = K softmax_k(r_k / T)``
    with ``r_k`` the ratio of term k's mean over the last window of ``window`` steps to its mean
    over the window before; weights are 1 until two windows have passed. Nothing is learned.

    Args:
        temperature: ``T`` in the softmax; a larger one keeps the weights closer to 1.
        window: Training steps per averaging window.
    """

    def __init__(self, temperature: float = 2.0, window: int = 20):
        super().__init__()
        if temperature <= 0 or window < 1:
            raise ValueError("temperature must be positive and window at least 1")
        self.temperature, self.window = temperature, window
        self._sums: dict[str, float] = {}
        self._steps = 0
        self._history: list[dict[str, float]] = []
        self._weights: dict[str, float] = {}

    def forward(self, values):
        if self.training:
            self._observe({k: float(v.detach()) for k, v in values.items()})
        weights = {k: torch.as_tensor(self._weights.get(k, 1.0), device=v.device) for k, v in values.items()}
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
            ratios = torch.tensor([last[k] / prev[k] if prev.get(k) else 1.0 for k in names])
            w = len(names) * torch.softmax(ratios / self.temperature, dim=0)
            self._weights = dict(zip(names, w.tolist()))
