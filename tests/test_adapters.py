"""Adapters: identity at initialisation, only declared parameters train, parameter counts."""

from __future__ import annotations

import pytest
import torch

from rdbench.adapters.attention import DifferentialAttention, HierarchicalAttention
from rdbench.adapters.basic import BottleneckAdapter, NoAdapter
from rdbench.adapters.cmaa import CMAAdapter
from rdbench.resolution.spec import resolve
from rdbench.testing import build_module, check_adapter, embeddings, make_batch, snapshot, tiny_clip, train_steps


def built(key: str, **args):
    """A component as a suite line would give it (nested keys resolved into builders)."""
    return resolve({"name": key, **args}, "adapter").build()


# Every registered adapter, mixer and interaction passes check_adapter from its example in
# test_every_component.py; these are the options the examples do not reach.
@pytest.mark.parametrize("make", [
    lambda: BottleneckAdapter(bottleneck=8, position="sequential", learnable_scale=True),
    lambda: built("adapter/cmaa", bottleneck=8, text_mixer="attention/hierarchical-local-global", position="sequential"),
], ids=["bottleneck-seq", "cmaa-localglobal-seq"])
def test_adapter_starts_at_the_backbone_and_trains_only_itself(make):
    counts = check_adapter(make)
    assert counts["trainable"] > 0 and counts["changed"] > 0


def test_none_trains_nothing():
    module = build_module(NoAdapter())
    assert sum(p.numel() for p in module.parameters() if p.requires_grad) == 0


def test_after_one_step_the_backbone_is_untouched():
    module = build_module(CMAAdapter(bottleneck=8))
    start = snapshot(module)
    train_steps(module, steps=1)
    for name, p in module.named_parameters():
        if name.startswith("model."):
            assert torch.equal(p, start[name]), name
    assert any(not torch.equal(p, start[n]) for n, p in module.named_parameters() if n.startswith("adapter."))


def test_interaction_is_shared_by_the_towers_at_each_depth():
    adapter = CMAAdapter(bottleneck=8)
    build_module(adapter)
    for index in range(2):
        assert adapter.branches[f"vision_{index}"].interaction is adapter.branches[f"text_{index}"].interaction
    # and is counted once
    ids = [id(p) for _, p in adapter.trainable_parameters(None)]
    assert len(ids) == len(set(ids))


def test_switching_the_mixer_changes_only_that_tower():
    a = built("adapter/cmaa", bottleneck=8, vision_mixer="attention/mhsa")
    build_module(a)
    assert type(a.branches["vision_0"].mixer).__name__ == "MultiHeadSelfAttention"
    assert type(a.branches["text_0"].mixer).__name__ == "HierarchicalAttention"
    assert a.branches["text_1"].mixer.causal and not a.branches["vision_1"].mixer.causal
    assert a.branches["vision_1"].mixer.layer == 2


def test_text_padding_does_not_change_caption_embeddings():
    """A caption's embedding must not depend on what fills the positions after its EOT token."""
    module = build_module(CMAAdapter(bottleneck=8, vision_mixer=DifferentialAttention, text_mixer=HierarchicalAttention))
    for p in module.adapter.parameters():
        torch.nn.init.normal_(p, std=0.2)
    batch = make_batch()
    tokens = batch["tokens"]
    eot = tokens.argmax(-1)
    noisy = tokens.clone()
    g = torch.Generator().manual_seed(1)
    for row, pos in enumerate(eot.tolist()):
        noisy[row, pos + 1 :] = torch.randint(1, 40000, (tokens.shape[1] - pos - 1,), generator=g)
    assert not torch.equal(noisy, tokens)
    _, text = embeddings(module, batch)
    _, text_noisy = embeddings(module, {**batch, "tokens": noisy})
    torch.testing.assert_close(text, text_noisy)


def test_base_interaction_owns_no_slice_of_the_up_projection():
    from rdbench.adapters.parts import Interaction

    h = torch.randn(2, 5, 8)
    assert Interaction(8).shared_up(h).shape == (2, 5, 0)
