"""The run diagnostics against closed forms: the modality gap, alignment, uniformity, recall per
class, the tower of a parameter, and the per-tower gradient ratio on a toy computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rdbench.diagnostics.embedding import alignment, geometry, modality_gap, recall_per_class, uniformity
from rdbench.diagnostics.gradients import TowerGradients
from rdbench.diagnostics.towers import tower_by_name
from rdbench.evaluation import retrieval_metrics


def test_gap_of_two_shifted_clouds_is_the_shift():
    # one ring shifted along e0 both ways: images on a cone around +e0, captions on the mirrored cone around -e0: the centres are
    # (+cos th, 0, ...) and (-cos th, 0, ...), so the gap is 2 cos th
    theta = 0.6
    ring = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
    x = torch.cat([torch.full((4, 1), math.cos(theta), dtype=torch.float64), math.sin(theta) * ring], 1)
    y = torch.cat([torch.full((4, 1), -math.cos(theta), dtype=torch.float64), math.sin(theta) * ring], 1)
    assert modality_gap(x, y) == pytest.approx(2 * math.cos(theta), abs=1e-12)
    assert modality_gap(3 * x, 0.5 * x) == pytest.approx(0.0, abs=1e-12)  # inputs are re-normalised


def test_alignment_is_zero_for_identical_pairs_and_four_for_opposite_ones():
    images = torch.randn(5, 8)
    owner = torch.tensor([0, 0, 1, 2, 3, 4, 4])
    assert alignment(images, images[owner] * 2, owner) == pytest.approx(0.0, abs=1e-12)
    assert alignment(images, -images[owner], owner) == pytest.approx(4.0, abs=1e-12)


def test_uniformity_of_an_orthonormal_set_and_of_one_repeated_point():
    # every pair of an orthonormal set is sqrt(2) apart: log exp(-t * 2) = -2t = -4 at t = 2
    assert uniformity(torch.eye(6)) == pytest.approx(-4.0, abs=1e-12)
    assert uniformity(torch.ones(7, 3)) == pytest.approx(0.0, abs=1e-12)


def test_uniformity_in_blocks_equals_the_full_matrix(monkeypatch):
    from rdbench.diagnostics import embedding

    x = torch.nn.functional.normalize(torch.randn(50, 4, dtype=torch.float64), dim=-1)
    sq = torch.cdist(x, x).pow(2)
    off = ~torch.eye(50, dtype=torch.bool)
    expected = float(torch.log(torch.exp(-2 * sq[off]).mean()))
    monkeypatch.setattr(embedding, "BLOCK", 7)  # ragged blocks
    assert uniformity(x) == pytest.approx(expected, abs=1e-10)


def test_geometry_names_what_the_record_holds():
    out = geometry(torch.eye(4), torch.eye(4), torch.arange(4))
    assert set(out) == {"modality_gap", "alignment", "uniformity", "uniformity_image", "uniformity_text"}
    assert out["alignment"] == 0 and out["modality_gap"] == 0


def test_recall_per_class_by_hand():
    labels = torch.tensor([0, 0, 1, 1])
    owner = torch.arange(4)  # one caption per image
    ranks = {"i2t": torch.tensor([0, 20, 3, 7]), "t2i": torch.tensor([0, 0, 20, 20])}
    out = recall_per_class(ranks, owner, labels, ["airport", "beach", "unused"])
    # airport: I2T R@1/5/10 = 50/50/50, T2I 100/100/100 -> 75; beach: I2T 0/50/100, T2I 0 -> 25
    assert out == {"airport": {"mR": 75.0, "n_images": 2}, "beach": {"mR": 25.0, "n_images": 2}}


def test_recall_per_class_of_one_class_is_the_split_mR():
    torch.manual_seed(0)
    images, texts = torch.randn(12, 6), torch.randn(36, 6)
    owner = torch.arange(12).repeat_interleave(3)
    ranks: dict = {}
    metrics = retrieval_metrics(images, texts, owner, ranks=ranks)
    out = recall_per_class(ranks, owner, torch.zeros(12, dtype=torch.long), ["all"])
    assert out["all"]["mR"] == pytest.approx(float(metrics["mR"]), abs=1e-9)


@pytest.mark.parametrize("name, tower", [
    ("model.visual.transformer.resblocks.0.attn.in_proj_weight", "image"),
    ("model.transformer.resblocks.1.mlp.c_fc.weight", "text"),
    ("model.token_embedding.weight", "text"),
    ("model.logit_scale", "shared"),
    ("adapter.branches.vision_0.down.weight", "image"),
    ("adapter.branches.text_3.mixer.q.weight", "text"),
    ("adapter.context", "text"),
    ("adapter.image.vision.prompts", "image"),
    ("adapter.interactions.0.fc1.weight", "shared"),
    ("adapter.module.shared_up.weight", "shared"),
    ("adapter.fuse_image_text.weight", "shared"),  # names both towers
])
def test_tower_by_name(name, tower):
    assert tower_by_name(name) == tower


class _Toy(torch.nn.Module):
    """Two scalars, one per tower, and a loss parameter the ratio must ignore."""

    def __init__(self):
        super().__init__()
        self.adapter = torch.nn.Module()
        self.adapter.image_scale = torch.nn.Parameter(torch.tensor(2.0))
        self.adapter.text_scale = torch.nn.Parameter(torch.tensor(1.0))
        self.loss = torch.nn.Module()
        self.loss.weight = torch.nn.Parameter(torch.tensor(100.0))
        self.adapter.tower_of = tower_by_name
        self.logged: list[dict] = []

    def log_dict(self, values, **_kwargs):
        self.logged.append(dict(values))


def test_gradient_ratio_on_a_two_parameter_toy_by_hand():
    toy, callback = _Toy(), TowerGradients()
    callback.on_fit_start(None, toy)
    callback.on_train_epoch_start(None, toy)
    a, b, w = toy.adapter.image_scale, toy.adapter.text_scale, toy.loss.weight
    for scale in (1.0, 2.0):
        toy.zero_grad()
        # L = s (3a + 4b^2 + w^2): dL/da = 3s, dL/db = 8 b s = 8s at b = 1, so text/image = 8/3
        (scale * (3 * a + 4 * b ** 2 + w ** 2)).backward()
        callback.on_before_optimizer_step(None, toy, None)
    assert toy.logged[0]["diag/grad_ratio_text_image_step"] == pytest.approx(8 / 3)
    assert toy.logged[1]["diag/grad_norm_image_step"] == pytest.approx(6.0)
    with torch.no_grad():
        a += 1.0  # 2 -> 3: the image tower moved by 1 from a norm of 2
    callback.on_train_epoch_end(None, toy)
    summary = callback.summary()
    assert summary["grad_ratio_text_image"] == pytest.approx(8 / 3)
    assert summary["grad_norm_image"] == pytest.approx(4.5) and summary["grad_norm_text"] == pytest.approx(12.0)
    assert summary["grad_norm_shared"] is None and summary["steps_measured"] == 2
    assert summary["update_image"] == pytest.approx(0.5) and summary["update_text"] == pytest.approx(0.0)
    # the sums travel in a checkpoint: a resumed callback reports the same summary
    again = TowerGradients()
    again.load_state_dict(callback.state_dict())
    assert again.summary() == summary


def test_one_tower_only_has_no_ratio():
    toy, callback = _Toy(), TowerGradients()
    toy.adapter.text_scale.requires_grad_(False)
    callback.on_fit_start(None, toy)
    (3 * toy.adapter.image_scale).backward()
    callback.on_before_optimizer_step(None, toy, None)
    assert callback.summary()["grad_ratio_text_image"] is None
