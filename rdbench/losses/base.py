"""The loss-term contract, the weighting contract, and the composition of terms into one loss.

Contract of a ``loss/*`` term: an ``nn.Module`` whose ``forward(step)`` takes a
:class:`StepOutputs` (embeddings, temperature, image ids, scene labels, and the module itself for
anything else it needs, e.g. a teacher forward pass) and returns a scalar tensor. Optional hooks,
called by the LightningModule (or the composite) for every term without knowing which term it is:

* ``setup(module)``: once, after the adapter is attached (build heads, copy a teacher);
* ``after_optimizer_step(module)``: once per optimiser step, after it (update an EMA teacher);
  with gradient accumulation that is once per ``accumulate_grad_batches`` micro-batches, so a
  term that collects something in ``forward`` collects every micro-batch of the step;
* ``factor(module)``: the term's schedule factor at this step (a ramp-up), 1.0 by default. The
  composite multiplies the term's *whole* contribution by it, after the weighting (a learned
  weighting's regulariser included), so that a weighting cannot undo it;
* ``diagnostics(module)``: named numbers to log at each step (a teacher's decay, a ramp); the
  composite logs each as ``<name>/<term>``.

``module`` is the LightningModule; a term reads the run's length from its Trainer when there is
one (:func:`total_optimizer_steps`) and must also work without (``module`` may be a bare object
or ``None`` in unit tests).

A term's own parameters (a classification head) train with the adapter's.

Contract of a ``weighting/*``: an ``nn.Module`` whose ``forward(values)`` takes the named term
values and returns ``(total, weights)``, ``weights`` being the effective weight of each term (for
logging). A learned weighting's parameters train too; ``prepare(names)`` is called once with
the term names so that it can create them before the optimiser is built, and may mark them with
their own learning rate (``param.rdbench_lr``, see :mod:`rdbench.optim`). The composite calls
``combine(values, factors)``; its default scales the values by the factors, exact for weights
that do not depend on the values; a weighting whose weights do (learned, or from the values'
history) overrides it.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rdbench.registry import REGISTRY, register


@dataclass
class StepOutputs:
    """What one training step hands to the loss terms."""

    image_emb: torch.Tensor  # (B, E), L2-normalised
    text_emb: torch.Tensor  # (B, E), L2-normalised
    logit_scale: torch.Tensor  # the backbone's temperature, exp() already applied
    image_ids: torch.Tensor  # (B,) int: captions of one image share an id
    labels: torch.Tensor  # (B,) int scene class, -1 where unknown
    batch: dict[str, Any]  # the raw batch (images, tokens, ...)
    module: Any  # the LightningModule, for terms that need more (a second forward pass)


class LossTerm(nn.Module, metaclass=abc.ABCMeta):
    """Base class of loss terms; see the module docstring for the contract. ``forward`` is
    abstract: a term without one fails when it is built, not at its first training step."""

    def setup(self, module: Any) -> None:
        """Called once after the adapter is attached."""

    def after_optimizer_step(self, module: Any) -> None:
        """Called once after every optimiser step (not after every micro-batch)."""

    def factor(self, module: Any) -> float:
        """The schedule factor of the term's whole contribution at this step (1: none)."""
        return 1.0

    def diagnostics(self, module: Any) -> dict[str, float]:
        """Named numbers to log at this step (none by default)."""
        return {}

    @abc.abstractmethod
    def forward(self, step: StepOutputs) -> torch.Tensor:
        """The term's value for one training step."""


class Weighting(nn.Module, metaclass=abc.ABCMeta):
    """Base class of term weightings; see the module docstring for the contract (``forward``
    is abstract, as for :class:`LossTerm`)."""

    def prepare(self, names: list[str]) -> None:
        """Called once with the term names, before the optimiser exists (learned weights)."""

    @abc.abstractmethod
    def forward(self, values: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted total and the weight of each term."""

    def combine(self, values: dict[str, torch.Tensor], factors: dict[str, float]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The total with each term's whole contribution multiplied by its factor (missing: 1),
        and each term's effective weight. This default scales the values, which is exact where
        the weights do not depend on the values (``weighting/fixed``)."""
        if all(factors.get(k, 1.0) == 1.0 for k in values):
            return self(values)
        total, weights = self({k: factors.get(k, 1.0) * v for k, v in values.items()})
        return total, {k: factors.get(k, 1.0) * torch.as_tensor(w) for k, w in weights.items()}


REGISTRY.define_kind("loss", LossTerm)
REGISTRY.define_kind("weighting", Weighting)


@register("weighting/fixed")
class FixedWeighting(Weighting):
    """Fixed weights ``sum_k w_k L_k`` (1.0 for every term not named).

    Args:
        weights: Weight of each term, by the term's name in the composite.
    """

    def __init__(self, weights: dict[str, float] | None = None):
        super().__init__()
        self.weights = dict(weights or {})

    def forward(self, values):
        weights = {k: torch.as_tensor(float(self.weights.get(k, 1.0)), device=v.device) for k, v in values.items()}
        total = sum(weights[k] * v for k, v in values.items())
        return total, weights


@register("loss/composite", defaults={"weighting": "weighting/fixed"},
          example={"terms": {"infonce": "loss/infonce"}})
class CompositeLoss(LossTerm):
    """Named loss terms combined by a weighting; what the LightningModule optimises.

    A suite's ``loss`` slot may name a single term (``loss/infonce``): resolution then wraps it
    as the only term of a composite with fixed weights, so ``config.yaml`` shows the composite
    that runs and the module always sees this class. Without a weighting (Python use) the
    weights are fixed at 1.

    Args:
        terms: The loss terms by name; a name appears in the logs as ``loss/<name>`` and
            ``weight/<name>`` and is what the weighting's arguments refer to.
        weighting: How the terms' values combine into one loss.
    """

    def __init__(self, terms: dict[str, LossTerm], weighting: Weighting | None = None):
        super().__init__()
        if not terms:
            raise ValueError("a composite loss needs at least one term")
        self.terms = nn.ModuleDict(terms)
        self.weighting = weighting if weighting is not None else FixedWeighting()
        self.weighting.prepare(list(terms))

    def setup(self, module: Any) -> None:
        for term in self.terms.values():
            term.setup(module)

    def after_optimizer_step(self, module: Any) -> None:
        for term in self.terms.values():
            term.after_optimizer_step(module)

    def evaluate(self, step: StepOutputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The total, and for logging every term's value (``loss/<name>``, before its factor),
        its effective weight (``weight/<name>``, factor included) and its diagnostics
        (``<key>/<name>``)."""
        values = {name: term(step) for name, term in self.terms.items()}
        factors = {name: float(term.factor(step.module)) for name, term in self.terms.items()}
        total, weights = self.weighting.combine(values, factors)
        logs = {f"loss/{k}": v.detach() for k, v in values.items()}
        logs.update({f"weight/{k}": torch.as_tensor(w).detach() for k, w in weights.items()})
        for name, term in self.terms.items():
            logs.update({f"{key}/{name}": torch.as_tensor(float(v)) for key, v in term.diagnostics(step.module).items()})
        return total, logs

    def forward(self, step: StepOutputs) -> torch.Tensor:
        return self.evaluate(step)[0]


#: The run length assumed where no Trainer says it (unit tests, :func:`rdbench.testing.train_steps`):
#: about the optimiser steps of a run on the embedded default.
FALLBACK_TOTAL_STEPS = 600


def total_optimizer_steps(module: Any, fallback: int = FALLBACK_TOTAL_STEPS) -> int:
    """The run's total optimiser steps: ``trainer.estimated_stepping_batches`` (gradient
    accumulation, ``max_steps`` and devices accounted for) while ``module`` is attached to a
    Trainer that is fitting, else ``fallback`` (no Trainer, an infinite or unknown length)."""
    try:
        trainer = module.trainer
    except (AttributeError, RuntimeError):  # no module, or a LightningModule without a Trainer
        return fallback
    if trainer is None or not getattr(trainer, "training", False):
        return fallback
    steps = trainer.estimated_stepping_batches
    return int(steps) if math.isfinite(steps) and steps >= 1 else fallback
