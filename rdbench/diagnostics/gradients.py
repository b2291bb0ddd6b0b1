"""Per-tower gradient balance during training: which modality drives the optimisation.

RDB (Ning et al., 2025) motivates its asymmetric adapter by the text modality dominating
fine-tuning. :class:`TowerGradients` measures that at every optimiser step: the gradient norm of
the trainable parameters of each tower, their ratio ``grad_ratio_text_image`` (text over image;
above 1, text dominates), and once per epoch each tower's relative update size
``||theta_end - theta_start|| / ||theta_start||``.

Which tower a parameter belongs to is the adapter's answer (``Adapter.tower_of``, by default
:func:`tower_by_name`): ``"image"``, ``"text"`` or ``"shared"`` (a module both towers pass
through, CMAA's interaction layer, UniAdapter's shared cores, the logit scale). The loss's own
parameters (classification heads, learned task weights) are not part of either tower and are
left out. A method that trains one tower only (VPT, CoOp) has no ratio: it is recorded as None.

The norms are taken with ``torch._foreach_norm`` after the gradients of an optimiser step are
complete (Lightning's ``on_before_optimizer_step`` comes after the last micro-batch when
gradients accumulate, and after AMP's unscaling), so they are the gradients the optimiser uses.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import lightning as L
import torch

from rdbench.diagnostics.towers import TOWERS, tower_by_name


def group_parameters(named: list[tuple[str, torch.nn.Parameter]],
                     tower_of: Callable[[str], str]) -> dict[str, list[torch.nn.Parameter]]:
    """Trainable model and adapter parameters by tower (the loss's parameters left out)."""
    groups: dict[str, list[torch.nn.Parameter]] = {t: [] for t in TOWERS}
    for name, param in named:
        if not param.requires_grad or name.startswith("loss."):
            continue
        tower = tower_of(name)
        if tower not in groups:
            raise ValueError(f"tower_of({name!r}) returned {tower!r}, not one of {', '.join(TOWERS)}")
        groups[tower].append(param)
    return groups


def grad_norm(params: list[torch.nn.Parameter]) -> float | None:
    """The L2 norm of the gradients of ``params`` together (None when none has a gradient)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return None
    return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0 or not math.isfinite(denominator):
        return None
    return numerator / denominator


class TowerGradients(L.Callback):
    """Log per-tower gradient norms and their ratio every optimiser step, per-tower relative
    update sizes every epoch, and keep the run's summary for the record (:meth:`summary`)."""

    def __init__(self) -> None:
        self.groups: dict[str, list[torch.nn.Parameter]] = {}
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.updates: dict[str, list[float]] = {t: [] for t in TOWERS}
        self._start: dict[str, list[torch.Tensor]] = {}
        self._epoch_sums: dict[str, float] = {}
        self._epoch_counts: dict[str, int] = {}

    def on_fit_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        tower_of = getattr(pl_module.adapter, "tower_of", tower_by_name)
        self.groups = group_parameters(list(pl_module.named_parameters()), tower_of)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self._start = {t: [p.detach().clone() for p in ps] for t, ps in self.groups.items() if ps}

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: Any, optimizer: Any) -> None:
        norms = {t: grad_norm(ps) for t, ps in self.groups.items()}
        values = {f"grad_norm_{t}": n for t, n in norms.items()}
        values["grad_ratio_text_image"] = ratio(norms["text"], norms["image"])
        logged = {}
        for key, value in values.items():
            if value is None or not math.isfinite(value):
                continue
            for sums, counts in ((self.sums, self.counts), (self._epoch_sums, self._epoch_counts)):
                sums[key] = sums.get(key, 0.0) + value
                counts[key] = counts.get(key, 0) + 1
            logged[f"diag/{key}_step"] = value
        # Lightning's logging costs more than the norms on a small model: the step curve is
        # logged only on the steps the logger writes (Lightning's own predicate, the same during
        # this hook as when it writes the batch's metrics); the means cover every step.
        connector = getattr(trainer, "_logger_connector", None)
        if logged and (connector is None or connector.should_update_logs):
            pl_module.log_dict(logged, on_step=True, on_epoch=False)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        logged = {f"diag/{k}_epoch": self._epoch_sums[k] / n for k, n in self._epoch_counts.items() if n}
        self._epoch_sums, self._epoch_counts = {}, {}
        for tower, before in self._start.items():
            after = self.groups[tower]
            start = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(before)))
            moved = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(
                torch._foreach_sub([p.detach() for p in after], before))))
            if float(start) > 0:
                self.updates[tower].append(float(moved / start))
                logged[f"diag/update_{tower}"] = self.updates[tower][-1]
        if logged:
            pl_module.log_dict(logged, on_step=False, on_epoch=True)
        self._start = {}

    def summary(self) -> dict[str, float | None]:
        """Means over the run's optimiser steps (norms, ratio) and epochs (update sizes); the
        mean of the per-step ratios, not the ratio of the mean norms."""
        out: dict[str, float | None] = {}
        for key in ("grad_ratio_text_image", *(f"grad_norm_{t}" for t in TOWERS)):
            out[key] = self.sums[key] / self.counts[key] if self.counts.get(key) else None
        for tower in TOWERS:
            values = self.updates[tower]
            out[f"update_{tower}"] = sum(values) / len(values) if values else None
        out["steps_measured"] = max(self.counts.values(), default=0)
        return out

    # The running sums travel in last.ckpt, so a resumed run's means cover the whole run; a
    # checkpoint taken mid-epoch also carries the epoch's sums so far and the parameters as the
    # epoch began (Lightning does not call on_train_epoch_start again when it resumes mid-epoch),
    # so the epoch's curve point and update size equal an uninterrupted run's.
    def state_dict(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "counts": dict(self.counts), "updates": {t: list(v) for t, v in self.updates.items()},
                "epoch_sums": dict(self._epoch_sums), "epoch_counts": dict(self._epoch_counts),
                "epoch_start": {t: list(v) for t, v in self._start.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.sums = dict(state_dict.get("sums", {}))
        self.counts = dict(state_dict.get("counts", {}))
        self.updates = {t: list(state_dict.get("updates", {}).get(t, [])) for t in TOWERS}
        self._epoch_sums = dict(state_dict.get("epoch_sums", {}))
        self._epoch_counts = dict(state_dict.get("epoch_counts", {}))
        self._start = {t: list(v) for t, v in state_dict.get("epoch_start", {}).items()}
