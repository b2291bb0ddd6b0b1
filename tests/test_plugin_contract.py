"""The plugin contract of docs/plugins.md, followed as a stranger would: an (IA)^3 adapter that
rescales keys, values and the MLP's hidden activation through rdbench's public hook helpers,
and a SigLIP loss term with its own parameters, each checked by the conformance helpers; and
the helpers refusing terms that break the contract."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from rdbench.adapters.base import Adapter, fused_attention, hook_mlp_hidden, mlp_hidden_width, qkv_rows, tower_blocks
from rdbench.losses.base import LossTerm, StepOutputs
from rdbench.testing import build_module, check_adapter, check_loss_term, make_batch, tiny_clip


class ScaleRows(nn.Module):
    """A parametrization: the rows ``rows`` of a weight (or bias) multiplied by ``scale``."""

    def __init__(self, scale: nn.Parameter, rows: slice):
        super().__init__()
        self.scale, self.rows = scale, rows

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        factor = torch.ones(weight.shape[0], dtype=weight.dtype, device=weight.device)
        factor = torch.cat([factor[: self.rows.start], self.scale, factor[self.rows.stop:]])
        return weight * (factor[:, None] if weight.dim() == 2 else factor)


class IA3(Adapter):
    """(IA)^3 (Liu et al., 2022): learned vectors rescale keys, values and the MLP's hidden
    activation of every block; initialised to ones, so the model is unchanged at the start."""

    def __init__(self):
        super().__init__()
        self.scales = nn.ParameterDict()

    def attach(self, model: nn.Module) -> None:
        for tower, blocks in tower_blocks(model).items():
            for i, block in enumerate(blocks):
                attn = fused_attention(block)
                for which in ("k", "v"):
                    scale = self.scales[f"{tower}_{i}_{which}"] = nn.Parameter(torch.ones(attn.embed_dim))
                    rows = qkv_rows(block, which)
                    parametrize.register_parametrization(attn, "in_proj_weight", ScaleRows(scale, rows), unsafe=True)
                    parametrize.register_parametrization(attn, "in_proj_bias", ScaleRows(scale, rows), unsafe=True)
                ff = self.scales[f"{tower}_{i}_ff"] = nn.Parameter(torch.ones(mlp_hidden_width(block)))
                hook_mlp_hidden(block, lambda h, ff=ff: h * ff)


class SigLIP(LossTerm):
    """The sigmoid loss of SigLIP (Zhai et al., 2023) with its own temperature and bias."""

    def __init__(self):
        super().__init__()
        self.log_t = nn.Parameter(torch.tensor(math.log(10.0)))
        self.bias = nn.Parameter(torch.tensor(-10.0))

    def forward(self, step: StepOutputs) -> torch.Tensor:
        logits = step.image_emb @ step.text_emb.T * self.log_t.exp() + self.bias
        same = (step.image_ids[:, None] == step.image_ids[None, :]).float()
        return -F.logsigmoid((2 * same - 1) * logits).sum() / len(logits)


def test_an_ia3_adapter_reaches_keys_values_and_the_mlp_activation_through_the_helpers():
    counts = check_adapter(IA3)  # identity at initialisation without any zero: scales of one
    model = tiny_clip()
    blocks = sum(len(b) for b in tower_blocks(model).values())
    assert mlp_hidden_width(tower_blocks(model)["text"][0]) == 4 * 32
    assert counts["trainable"] == blocks * (2 * 32 + 4 * 32)
    module = build_module(IA3(), model=tiny_clip())
    block = tower_blocks(module.model)["vision"][0]
    scale = module.adapter.scales["vision_0_v"]
    with torch.no_grad():
        scale.fill_(2.0)
    rows = qkv_rows(block, "v")
    raw = block.attn.parametrizations.in_proj_weight.original
    torch.testing.assert_close(block.attn.in_proj_weight[rows], 2 * raw[rows])
    torch.testing.assert_close(block.attn.in_proj_weight[qkv_rows(block, "q")], raw[qkv_rows(block, "q")])


def test_fused_attention_names_the_block_it_cannot_read():
    with pytest.raises(ValueError, match="Linear: expected open_clip's block"):
        fused_attention(nn.Linear(2, 2))


def test_a_siglip_term_with_its_own_parameters_passes_the_loss_contract():
    counts = check_loss_term(SigLIP)
    assert counts["term_params"] == 2
    plain = check_loss_term(lambda: __import__("rdbench.losses.contrastive", fromlist=["x"]).InfoNCELoss())
    assert counts["trainable"] == plain["trainable"] + 2  # the term's parameters are counted


def test_step_outputs_carry_the_temperature_as_clip_applies_it():
    module = build_module(IA3(), model=tiny_clip())
    with torch.no_grad():
        module.model.logit_scale.fill_(math.log(1000.0))
    step = module.step_outputs(make_batch())
    assert float(step.logit_scale) == pytest.approx(100.0)  # exp() applied, capped at 100
    assert torch.allclose(step.image_emb.norm(dim=-1), torch.ones(len(step.image_emb)))


class ReturnsFloat(LossTerm):
    def forward(self, step):
        return float((step.image_emb * step.text_emb).sum())


class ReturnsVector(LossTerm):
    def forward(self, step):
        return (step.image_emb * step.text_emb).sum(dim=-1)


class Detached(LossTerm):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, step):
        return self.w * (step.image_emb * step.text_emb).sum().detach()


@pytest.mark.parametrize("term, message", [
    (ReturnsFloat, "scalar tensor, got float"),
    (ReturnsVector, r"scalar tensor, got Tensor \(6,\)"),
    (Detached, "reaches none of the adapter's parameters"),
    (lambda: nn.Linear(2, 2), "is not a rdbench.losses.base.LossTerm"),
])
def test_the_loss_contract_check_names_what_a_term_breaks(term, message):
    with pytest.raises(AssertionError, match=message):
        check_loss_term(term)
