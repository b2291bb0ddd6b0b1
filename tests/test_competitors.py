"""PEFT competitors: published parameter counts, LoRA's math, prompts keep CLIP's pooling."""

from __future__ import annotations

import pytest
import torch

from rdbench.accounting import adapter_params
from rdbench.adapters.lora import LoRAAdapter
from rdbench.adapters.prompts import CoOpAdapter, VPTAdapter, encode_text_with_context, make_room
from rdbench.losses.base import StepOutputs
from rdbench.losses.contrastive import HMMCLoss, VSEPPLoss, positive_mask
from rdbench.testing import build_module, embeddings, make_batch, snapshot, tiny_clip, train_steps


@pytest.mark.slow  # builds ViT-B-32
@pytest.mark.parametrize("key, count", [("adapter/mrs-adapter", 161_088), ("adapter/full", 151_277_313), ("adapter/none", 0)])
def test_counts_on_vit_b_32(key, count):
    assert adapter_params(key, "ViT-B-32") == count


def test_lora_starts_at_the_backbone_and_updates_only_targeted_slices():
    module = build_module(LoRAAdapter(rank=2, targets=["q", "v", "out"]))
    batch = make_batch()
    attn = module.model.visual.transformer.resblocks[0].attn
    w0 = attn.in_proj_weight.detach().clone()  # the effective (parametrized) weight
    base = attn.parametrizations.in_proj_weight.original.detach().clone()
    torch.testing.assert_close(w0, base)  # B = 0: no change at start
    start = snapshot(module)
    train_steps(module, 2, batch)
    w1 = attn.in_proj_weight.detach()
    d = attn.embed_dim
    assert not torch.allclose(w1[:d], w0[:d])  # q changed
    torch.testing.assert_close(w1[d : 2 * d], w0[d : 2 * d])  # k untouched
    assert not torch.allclose(w1[2 * d :], w0[2 * d :])  # v changed
    torch.testing.assert_close(attn.parametrizations.in_proj_weight.original, base)  # frozen weight
    assert not torch.allclose(attn.out_proj.weight, start["model.visual.transformer.resblocks.0.attn.out_proj.parametrizations.weight.original"])


def test_lora_merge_gives_the_same_embeddings():
    module = build_module(LoRAAdapter(rank=2, targets=["q", "k", "v", "out", "fc"]))
    for p in module.adapter.parameters():
        torch.nn.init.normal_(p, std=0.05)
    batch = make_batch()
    before = embeddings(module, batch)
    module.adapter.merge()
    assert not hasattr(module.model.visual.transformer.resblocks[0].attn, "parametrizations")
    after = embeddings(module, batch)
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # builds ViT-B-32
def test_lora_in_suite_form_reaches_qkv_on_vit_b_32():
    # rank 8 on q and v in 12 blocks per tower: 2 targets x (8 x D + D x 8) = 32 D per block
    assert adapter_params({"name": "adapter/lora", "rank": 8}, "ViT-B-32") == 12 * 32 * 768 + 12 * 32 * 512 == 491_520


def test_text_context_moves_the_eot_token_and_keeps_it():
    tokens = torch.tensor([[49406, 10, 11, 49407, 0, 0, 0, 0], [49406, 1, 2, 3, 4, 5, 6, 49407]])
    shifted = make_room(tokens, 3)
    assert shifted[0].tolist() == [49406, 0, 0, 0, 10, 11, 49407, 0]
    assert shifted[1, -1] == 49407 and shifted[1].argmax() == 7  # a long caption keeps its EOT
    model = tiny_clip()
    model.eval()
    batch_tokens = make_batch()["tokens"]
    with torch.no_grad():
        plain = model.encode_text(batch_tokens)
        no_context = encode_text_with_context(model, batch_tokens, torch.zeros(0, 32))
    torch.testing.assert_close(no_context, plain)  # the same steps as open_clip's own encode_text


def test_coop_and_vpt_shapes():
    coop = CoOpAdapter(n_ctx=4)
    module = build_module(coop)
    assert coop.context.shape == (4, 32)
    vpt = VPTAdapter(n_tokens=3, deep=True)
    module = build_module(vpt)
    seen = {}
    block = module.model.visual.transformer.resblocks[1]
    def record(_module, _inputs, output):
        seen["shape"] = output.shape

    hook = block.register_forward_hook(record)
    module.eval()
    with torch.no_grad():
        module.embed_images(make_batch()["images"])
    hook.remove()
    assert seen["shape"][1] == 1 + 16 + 3  # class token, 4x4 patches, 3 prompts
    assert vpt.vision.prompts.shape == (2, 3, 32)


def step_of(n=6):
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(n, 8, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(n, 8, generator=g), dim=-1)
    return StepOutputs(img, txt, torch.tensor(10.0), torch.arange(n) // 2, torch.zeros(n, dtype=torch.long), {}, None)


def test_vsepp_matches_its_definition():
    s = step_of()
    sim = s.image_emb @ s.text_emb.t()
    pos = positive_mask(s.image_ids)
    total, count = 0.0, 0
    for i in range(6):
        for j in range(6):
            if pos[i, j]:
                neg_row = max(sim[i, k] for k in range(6) if not pos[i, k])
                neg_col = max(sim[k, j] for k in range(6) if not pos[k, j])
                total += max(0.0, 0.2 - sim[i, j] + neg_row) + max(0.0, 0.2 - sim[i, j] + neg_col)
                count += 1
    assert float(VSEPPLoss()(s)) == pytest.approx(float(total) / count, rel=1e-5)


def test_hmmc_trains_mrs_adapter():
    from rdbench.adapters.competitors import MRSAdapter

    module = build_module(MRSAdapter(bottleneck=8, shared=4), loss=HMMCLoss())
    losses = train_steps(module, 2)
    assert all(l > 0 for l in losses)
