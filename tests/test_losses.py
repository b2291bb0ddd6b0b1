"""Loss terms and weightings prove their math: the EMA teacher, uncertainty weights,
classification masking, multi-positive InfoNCE."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rdbench.adapters.cmaa import CMAAdapter
from rdbench.losses.base import CompositeLoss, FixedWeighting, StepOutputs
from rdbench.losses.contrastive import InfoNCELoss
from rdbench.losses.dtcl import ClassificationLoss, EMAConsistencyLoss, EMAPrototypeLoss
from rdbench.losses.weighting import DynamicWeightAveraging, UncertaintyWeighting
from rdbench.testing import build_module, make_batch, snapshot, train_steps


def step_of(n=4, labels=None, image_ids=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, 8, generator=g), dim=-1).requires_grad_()
    txt = F.normalize(torch.randn(n, 8, generator=g), dim=-1).requires_grad_()
    return StepOutputs(img, txt, torch.tensor(10.0), image_ids if image_ids is not None else torch.arange(n),
                       labels if labels is not None else torch.zeros(n, dtype=torch.long), {}, None)


def test_infonce_single_positive_equals_clip_loss():
    s = step_of()
    logits = 10.0 * s.image_emb @ s.text_emb.t()
    want = (F.cross_entropy(logits, torch.arange(4)) + F.cross_entropy(logits.t(), torch.arange(4))) / 2
    torch.testing.assert_close(InfoNCELoss()(s), want)


def test_infonce_treats_captions_of_one_image_as_positives():
    s = step_of(image_ids=torch.tensor([0, 0, 1, 1]))
    logits = 10.0 * s.image_emb @ s.text_emb.t()
    target = torch.tensor([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5]])
    want = (-(target * logits.log_softmax(1)).sum(1).mean() - (target * logits.t().log_softmax(1)).sum(1).mean()) / 2
    torch.testing.assert_close(InfoNCELoss()(s), want)


class _Module:
    num_classes, embed_dim = 3, 8


def test_classification_ignores_unlabelled_samples():
    term = ClassificationLoss()
    term.setup(_Module())
    s = step_of(labels=torch.tensor([0, -1, 2, -1]))
    loss = term(s)
    known = torch.tensor([True, False, True, False])
    want = (F.cross_entropy(term.heads["image"](s.image_emb[known]), torch.tensor([0, 2]))
            + F.cross_entropy(term.heads["text"](s.text_emb[known]), torch.tensor([0, 2]))) / 2
    torch.testing.assert_close(loss, want)
    loss.backward()
    assert torch.all(s.image_emb.grad[~known] == 0) and torch.any(s.image_emb.grad[known] != 0)
    none = term(step_of(labels=torch.full((4,), -1)))
    assert float(none) == 0.0
    shared = ClassificationLoss(shared_head=True)
    shared.setup(_Module())
    assert shared.heads["image"] is shared.heads["text"]


def test_uncertainty_weights_follow_kendall_and_receive_gradients():
    w = UncertaintyWeighting()
    w.prepare(["a", "b"])
    with torch.no_grad():
        w.log_vars["b"].fill_(0.5)
    values = {"a": torch.tensor(2.0), "b": torch.tensor(3.0)}
    total, weights = w(values)
    torch.testing.assert_close(total, torch.tensor(2.0 + math.exp(-0.5) * 3.0 + 0.5))
    assert float(weights["b"]) == pytest.approx(math.exp(-0.5))
    total.backward()
    assert w.log_vars["a"].grad is not None and float(w.log_vars["a"].grad) == pytest.approx(1 - 2.0)


def test_uncertainty_weights_train_inside_the_module():
    loss = CompositeLoss({"infonce": InfoNCELoss(), "cls": ClassificationLoss()}, UncertaintyWeighting())
    module = build_module(CMAAdapter(bottleneck=8), loss=loss)
    start = snapshot(module)
    train_steps(module, 2)
    assert not torch.equal(module.loss.weighting.log_vars["cls"], start["loss.weighting.log_vars.cls"])


def test_ema_teacher_follows_its_formula_and_never_gets_a_gradient():
    term = EMAConsistencyLoss(decay=0.9)
    module = build_module(CMAAdapter(bottleneck=8), loss=CompositeLoss({"infonce": InfoNCELoss(), "ema": term}))
    names = term.names
    assert names and all(n.startswith("adapter.") for n in names)
    teacher0 = {n: t.clone() for n, t in term.teacher_state().items()}
    params = dict(module.named_parameters())
    for n in names:
        torch.testing.assert_close(teacher0[n], params[n].detach())
    train_steps(module, 1)
    d = 0.9  # a constant decay: no warm-up cap
    for n in names:
        # bit for bit the per-tensor arithmetic the multi-tensor update replaced
        want = teacher0[n].clone().mul_(d).add_(params[n].detach(), alpha=1 - d)
        assert torch.equal(term.teacher_state()[n], want)
        assert not term.teacher_state()[n].requires_grad
    assert term.current_decay() == pytest.approx(0.9) and int(term.updates) == 1
    # the teacher forward pass builds no graph
    batch = make_batch()
    total, logs = module.compute_loss(batch)
    assert "loss/ema" in logs
    t_img, t_txt = term.teacher_embeddings(module_step(module, batch))
    assert not t_img.requires_grad and not t_txt.requires_grad


def module_step(module, batch):
    img, txt = module(batch["images"], batch["tokens"])
    return StepOutputs(img, txt, torch.tensor(10.0), batch["image_ids"], batch["labels"], batch, module)


def test_ema_consistency_is_zero_when_teacher_equals_student():
    term = EMAConsistencyLoss()
    module = build_module(CMAAdapter(bottleneck=8), loss=CompositeLoss({"ema": term}))
    module.eval()
    value = term(module_step(module, make_batch()))
    assert abs(float(value)) < 1e-6


def test_ema_prototypes_update_after_each_step_and_ignore_unlabelled():
    term = EMAPrototypeLoss(decay=0.5)
    term.setup(_Module())
    s = step_of(labels=torch.tensor([0, -1, 2, 2]))
    assert float(term(s)) == 0.0  # no prototype yet
    term.after_optimizer_step(None)
    assert term.seen.tolist() == [True, False, True]
    torch.testing.assert_close(term.image_prototypes[2], s.image_emb.detach()[2:].mean(0))
    s2 = step_of(labels=torch.tensor([2, 2, 2, 2]), seed=1)
    loss = term(s2)
    assert float(loss) > 0
    loss.backward()
    term.after_optimizer_step(None)
    torch.testing.assert_close(term.image_prototypes[2], 0.5 * s.image_emb.detach()[2:].mean(0) + 0.5 * s2.image_emb.detach().mean(0))


def test_fixed_and_dwa_weightings():
    total, weights = FixedWeighting({"a": 2.0})({"a": torch.tensor(1.0), "b": torch.tensor(3.0)})
    assert float(total) == 5.0 and float(weights["b"]) == 1.0
    dwa = DynamicWeightAveraging(temperature=1.0, window=1)
    for a, b in ((1.0, 1.0), (1.0, 1.0), (0.5, 1.0)):
        total, weights = dwa({"a": torch.tensor(a), "b": torch.tensor(b)})
    ratios = torch.tensor([0.5, 1.0])
    want = 2 * torch.softmax(ratios, 0)
    assert dwa._weights["a"] == pytest.approx(float(want[0])) and dwa._weights["b"] == pytest.approx(float(want[1]))


def test_composite_logs_every_term_and_weight():
    loss = CompositeLoss({"x": InfoNCELoss(), "y": InfoNCELoss()}, FixedWeighting({"y": 0.5}))
    total, logs = loss.evaluate(step_of())
    assert set(logs) == {"loss/x", "loss/y", "weight/x", "weight/y"}
    torch.testing.assert_close(total, logs["loss/x"] + 0.5 * logs["loss/y"])


def test_loss_and_weighting_contracts_are_enforced_when_built():
    """A term or weighting without forward cannot be built (abstract), rather than failing at
    its first training step."""
    from rdbench.losses.base import LossTerm, Weighting

    class NoForwardTerm(LossTerm):
        pass

    class NoForwardWeighting(Weighting):
        pass

    for cls in (NoForwardTerm, NoForwardWeighting):
        with pytest.raises(TypeError, match="abstract"):
            cls()
