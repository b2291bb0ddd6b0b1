"""Registry-driven: every registered attention, interaction, adapter, loss and weighting is built
from its key and trained two steps on a real (tiny) open_clip model."""

from __future__ import annotations

import pytest

from rdbench.adapters.cmaa import CMAAdapter
from rdbench.losses.base import CompositeLoss
from rdbench.registry import REGISTRY
from rdbench.resolve import resolve
from rdbench.testing import build_module, check_adapter, train_steps

#: Arguments for components that cannot be built from their key alone.
EXAMPLE_ARGS = {
    "loss/composite": {"terms": {"infonce": "loss/infonce"}},
    # the test model has 32-wide towers and a 16-token context
    "interaction/shared-slice": {"width": 8},
    "adapter/mrs-adapter": {"shared": 8, "bottleneck": 8},
    "adapter/coop": {"n_ctx": 4},
    "adapter/vl-prompt": {"n_ctx": 4, "n_tokens": 4},
    "adapter/vpt": {"n_tokens": 4},
}


def keys(kind):
    return [e.key for e in REGISTRY.entries(kind)]


def build(key, kind):
    spec = {"name": key, **EXAMPLE_ARGS.get(key, {})}
    return resolve(spec, kind).build()


@pytest.mark.parametrize("key", keys("attention"))
def test_every_attention_mixer_trains_in_both_towers(key):
    check_adapter(lambda: CMAAdapter(bottleneck=8, vision_mixer=key, text_mixer=key))


@pytest.mark.parametrize("key", keys("interaction"))
def test_every_interaction_trains(key):
    check_adapter(lambda: CMAAdapter(bottleneck=8, interaction={"name": key, **EXAMPLE_ARGS.get(key, {})}))


@pytest.mark.parametrize("key", keys("adapter"))
def test_every_adapter_trains_only_what_it_declares(key):
    check_adapter(lambda: build(key, "adapter"))


@pytest.mark.parametrize("key", keys("loss"))
def test_every_loss_term_trains(key):
    loss = build(key, "loss")
    module = build_module(CMAAdapter(bottleneck=8), loss=loss)
    losses = train_steps(module, 2)
    assert len(losses) == 2 and all(l == l and abs(l) < 1e6 for l in losses)


@pytest.mark.parametrize("key", keys("weighting"))
def test_every_weighting_trains(key):
    loss = CompositeLoss({"a": build("loss/infonce", "loss"), "b": build("loss/classification", "loss")}, build(key, "weighting"))
    module = build_module(CMAAdapter(bottleneck=8), loss=loss)
    losses = train_steps(module, 2)
    assert all(l == l for l in losses)
