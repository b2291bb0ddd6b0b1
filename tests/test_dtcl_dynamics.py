"""DTCL's dynamics are relative to the run and tied to optimiser steps: the EMA teacher's
half-life, the consistency ramp-up, the once-per-optimiser-step hook under gradient
accumulation, the log-variances' own learning rate, and DWA's guard against losses near zero."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from rdbench.adapters.cmaa import CMAAdapter
from rdbench.losses.base import FALLBACK_TOTAL_STEPS, CompositeLoss, FixedWeighting, LossTerm, StepOutputs
from rdbench.losses.contrastive import InfoNCELoss
from rdbench.losses.dtcl import MIN_HALF_LIFE, ClassificationLoss, EMAConsistencyLoss, EMAPrototypeLoss, sigmoid_rampup
from rdbench.losses.weighting import DynamicWeightAveraging, UncertaintyWeighting
from rdbench.optim import AdamWOptimizer
from rdbench.testing import build_module, make_batch
import lightning as L  # after rdbench, which makes torchvision importable for lightning  # isort: skip


# -- 1. once per optimiser step, with a real Trainer ---------------------------------------------
class _ProbeTeacher(EMAConsistencyLoss):
    """The consistency term, recording at each update the Trainer's step, the run length and
    how many steps the torch optimiser has taken."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen: list[tuple[int, int, int]] = []

    def after_optimizer_step(self, module):
        super().after_optimizer_step(module)
        taken = int(next(iter(module.trainer.optimizers[0].state.values()))["step"])
        self.seen.append((module.trainer.global_step, self.run_length(module), taken))


def test_teacher_updates_once_per_optimizer_step_under_gradient_accumulation():
    teacher = _ProbeTeacher(half_life_ratio=1.0)
    loss = CompositeLoss({"infonce": InfoNCELoss(), "ema": teacher})
    module = build_module(CMAAdapter(bottleneck=8), loss=loss)
    batches = [make_batch(seed=i) for i in range(6)]  # 6 micro-batches, 2 per step: 3 steps
    trainer = L.Trainer(max_epochs=1, accumulate_grad_batches=2, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    assert trainer.global_step == 3
    assert int(teacher.updates) == trainer.global_step == 3
    # once per step, right after the torch optimiser's step (Lightning counts the step as
    # completed, global_step, once the hook has returned)
    assert [taken for _, _, taken in teacher.seen] == [1, 2, 3]
    assert [step for step, _, _ in teacher.seen] == [0, 1, 2]
    assert {n for _, n, _ in teacher.seen} == {3}  # the run's length came from the Trainer, not the fallback
    # the decay and the ramp are logged; with a 3-step run the half-life is at its floor
    metrics = trainer.callback_metrics
    assert float(metrics["train/ema_decay/ema"]) == pytest.approx(0.5 ** (1 / MIN_HALF_LIFE))
    assert 0 < float(metrics["train/ramp/ema"]) <= 1


def test_prototypes_take_every_micro_batch_of_an_optimizer_step():
    term = EMAPrototypeLoss(decay=0.5)

    class _Module:
        num_classes, embed_dim = 3, 8

    term.setup(_Module())
    g = torch.Generator().manual_seed(0)
    first, second = torch.randn(2, 8, generator=g), torch.randn(2, 8, generator=g)
    for emb in (first, second):  # two micro-batches of class 1, then one optimiser step
        term(StepOutputs(emb, emb, torch.tensor(10.0), torch.arange(2), torch.tensor([1, 1]), {}, None))
    term.after_optimizer_step(None)
    torch.testing.assert_close(term.image_prototypes[1], torch.cat([first, second]).mean(0))


# -- 2. the half-life --------------------------------------------------------------------------
def _teacher(**kwargs) -> tuple[EMAConsistencyLoss, nn.Module]:
    torch.manual_seed(0)
    student = nn.Linear(3, 2)
    term = EMAConsistencyLoss(**kwargs)
    term.setup(student)
    with torch.no_grad():  # a teacher away from the student, which then stands still
        for name in term.names:
            term.teacher_state()[name].add_(1.0)
    return term, student


@pytest.mark.parametrize("kwargs, half_life", [
    ({"half_life": 7}, 7),
    ({"half_life_ratio": 0.1, "total_steps": 200}, 20),
    ({"half_life_ratio": 0.05, "total_steps": 40}, MIN_HALF_LIFE),  # 2 steps, floored
    ({}, 0.05 * FALLBACK_TOTAL_STEPS),  # the default, without a Trainer
])
def test_teacher_moves_half_way_in_one_half_life(kwargs, half_life):
    term, student = _teacher(**kwargs)
    start = {n: t.clone() for n, t in term.teacher_state().items()}
    assert term.half_life_steps(None) == pytest.approx(half_life)
    assert term.current_decay(None) == pytest.approx(0.5 ** (1 / half_life))
    params = dict(student.named_parameters())
    for _ in range(int(half_life)):
        term.after_optimizer_step(student)
    left = 0.5 ** (int(half_life) / half_life)  # exactly 0.5 for an integral half-life
    for name in term.names:
        want = params[name].detach() + left * (start[name] - params[name].detach())
        torch.testing.assert_close(term.teacher_state()[name], want)
    assert int(term.updates) == int(half_life)


def test_half_life_options_are_exclusive_and_decay_stays_constant():
    with pytest.raises(ValueError, match="give one of"):
        EMAConsistencyLoss(half_life=10, decay=0.99)
    with pytest.raises(ValueError, match="give one of"):
        EMAConsistencyLoss(half_life_ratio=0.1, half_life=10)
    term, student = _teacher(decay=0.9)
    for _ in range(3):
        term.after_optimizer_step(student)
    assert term.current_decay(student) == 0.9  # no (1 + t) / (10 + t) cap


# -- 3. the ramp-up ----------------------------------------------------------------------------
def test_rampup_follows_the_sigmoid_of_laine_and_aila():
    term = EMAConsistencyLoss(rampup_ratio=0.2, total_steps=100)  # a ramp of 20 steps
    expected = {0: math.exp(-5.0), 10: math.exp(-5.0 * 0.25), 20: 1.0, 50: 1.0}
    for updates, want in expected.items():
        term.updates.fill_(updates)
        assert term.factor(None) == pytest.approx(want)
        assert term.diagnostics(None)["ramp"] == pytest.approx(want)
    assert sigmoid_rampup(0.5) == pytest.approx(math.exp(-1.25))
    off = EMAConsistencyLoss(rampup_ratio=0.0)
    assert off.factor(None) == 1.0


class _Ramped(LossTerm):
    """A constant term with a schedule factor and a diagnostic."""

    def __init__(self, value: float, factor: float):
        super().__init__()
        self.value, self._factor = value, factor

    def factor(self, module):
        return self._factor

    def diagnostics(self, module):
        return {"ramp": self._factor}

    def forward(self, step):
        return step.image_emb.sum() * 0.0 + self.value


def test_the_factor_scales_the_whole_contribution_and_is_logged():
    step = StepOutputs(torch.zeros(2, 4), torch.zeros(2, 4), torch.tensor(10.0), torch.arange(2),
                       torch.zeros(2, dtype=torch.long), {}, None)
    fixed = CompositeLoss({"a": _Ramped(2.0, 1.0), "b": _Ramped(3.0, 0.25)}, FixedWeighting({"b": 2.0}))
    total, logs = fixed.evaluate(step)
    assert float(total) == pytest.approx(2.0 + 0.25 * 2.0 * 3.0)
    assert float(logs["loss/b"]) == 3.0 and float(logs["weight/b"]) == pytest.approx(0.5)
    assert float(logs["ramp/b"]) == 0.25 and float(logs["ramp/a"]) == 1.0
    # uncertainty: f (exp(-s) L + s), so the gradient on s, and its optimum, ignore f
    learned = CompositeLoss({"a": _Ramped(2.0, 1.0), "b": _Ramped(3.0, 0.25)}, UncertaintyWeighting())
    with torch.no_grad():
        learned.weighting.log_vars["b"].fill_(0.5)
    total, _ = learned.evaluate(step)
    assert float(total) == pytest.approx(2.0 + 0.25 * (math.exp(-0.5) * 3.0 + 0.5))
    total.backward()
    assert float(learned.weighting.log_vars["b"].grad) == pytest.approx(0.25 * (1 - math.exp(-0.5) * 3.0))


# -- 4. the log-variances' own learning rate ---------------------------------------------------
def test_log_variances_get_their_own_param_group():
    loss = CompositeLoss({"infonce": InfoNCELoss(), "cls": ClassificationLoss()}, UncertaintyWeighting(lr=0.05))
    module = build_module(CMAAdapter(bottleneck=8), loss=loss, optimizer=AdamWOptimizer(lr=3e-3, weight_decay=0.01))
    optimizer, _ = module.optimizer_factory.build([p for p in module.parameters() if p.requires_grad], 100)
    log_vars = {id(p) for p in module.loss.weighting.log_vars.values()}
    own = [g for g in optimizer.param_groups if {id(p) for p in g["params"]} & log_vars]
    assert len(own) == 1 and {id(p) for p in own[0]["params"]} == log_vars
    assert own[0]["lr"] == pytest.approx(0.05) and own[0]["weight_decay"] == 0.0
    rest = [g for g in optimizer.param_groups if g is not own[0]]
    assert rest and all(g["lr"] == pytest.approx(3e-3) and g["weight_decay"] == 0.01 for g in rest)


def _move_in_100_steps(lr: float | None) -> float:
    torch.manual_seed(0)
    adapter = nn.Parameter(torch.randn(4))
    weighting = UncertaintyWeighting(lr=lr)
    weighting.prepare(["a"])
    factory = AdamWOptimizer(lr=3e-3, schedule="constant", fused=False)
    optimizer, scheduler = factory.build([adapter, *weighting.parameters()], 100)
    for _ in range(100):  # a toy term near 10: the optimum is s = log 10
        total, _ = weighting({"a": 10.0 + adapter.pow(2).mean()})
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        scheduler.step()
    return float(weighting.log_vars["a"].detach())


def test_log_variances_move_order_one_within_100_steps():
    assert _move_in_100_steps(0.05) > 0.5
    assert _move_in_100_steps(None) < 0.5  # at the adapter's rate they would not


# -- 5. DWA with a loss near zero --------------------------------------------------------------
def test_dwa_weights_stay_finite_and_clamped_with_a_near_zero_loss():
    dwa = DynamicWeightAveraging(temperature=2.0, window=1, max_ratio=4.0)
    lo, hi, k = 1 / 4.0, 4.0, 3
    top = k * math.exp(hi / 2) / (math.exp(hi / 2) + (k - 1) * math.exp(lo / 2))
    bottom = k * math.exp(lo / 2) / (math.exp(lo / 2) + (k - 1) * math.exp(hi / 2))
    sequence = [(1.0, 1.0, 1.0), (1e-12, 1.0, 1.0), (1.0, 1e-12, 1.0), (1e-12, 1e-12, 1.0)]
    for a, b, c in sequence:
        dwa({"a": torch.tensor(a), "b": torch.tensor(b), "c": torch.tensor(c)})
        weights = torch.tensor(list(dwa._weights.values()) or [1.0])
        assert torch.isfinite(weights).all()
        assert bool((weights >= bottom - 1e-9).all() and (weights <= top + 1e-9).all()), weights
    # the last ratios: a 1e-12 / 1.0 -> clamped to 1/4, b 1e-12 / 1e-12 -> 1 (not noise), c 1
    want = k * torch.softmax(torch.tensor([lo, 1.0, 1.0], dtype=torch.float64) / 2.0, dim=0)
    assert [dwa._weights[n] for n in "abc"] == pytest.approx(want.tolist())


def test_uncertainty_weights_are_capped_for_a_vanishing_term():
    """A consistency KL that shrinks towards 0 would drive its Kendall weight 1/L without bound
    (measured: 859 after 319 steps); the cap holds it at max_weight, and the clamped log-variance
    gets no further gradient."""
    import math

    import torch

    from rdbench.losses.weighting import UncertaintyWeighting

    w = UncertaintyWeighting(lr=0.05, max_weight=10.0)
    w.prepare(["contrastive", "consistency"])
    opt = torch.optim.Adam(w.parameters(), lr=0.05)
    for _ in range(400):
        values = {"contrastive": torch.tensor(2.8), "consistency": torch.tensor(1e-3)}
        total, weights = w(values)
        opt.zero_grad()
        total.backward()
        opt.step()
    assert weights["consistency"].item() == pytest.approx(10.0, rel=1e-4)
    assert weights["contrastive"].item() == pytest.approx(1 / 2.8, rel=0.1)  # Kendall's optimum, inside the cap
    unbounded = UncertaintyWeighting(max_weight=None)
    unbounded.prepare(["c"])
    with torch.no_grad():
        unbounded.log_vars["c"].fill_(-math.log(500.0))
    assert unbounded({"c": torch.tensor(1e-3)})[1]["c"].item() == pytest.approx(500.0, rel=1e-4)
