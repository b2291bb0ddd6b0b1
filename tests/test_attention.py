"""The token mixers prove their math: DA reduces to softmax attention, lambda_init follows its
schedule, text mixers are causal and blind to padding."""

from __future__ import annotations

import math

import pytest
import torch

from rdbench.adapters.attention import (
    DifferentialAttention,
    HierarchicalAttention,
    LocalGlobalAttention,
    MultiHeadSelfAttention,
    NoAttention,
    lambda_init_schedule,
)

torch.manual_seed(0)


def test_lambda_init_schedule_for_layers_1_to_12():
    for layer in range(1, 13):
        assert DifferentialAttention(16, layer=layer).lambda_init == pytest.approx(0.8 - 0.6 * math.exp(-0.3 * (layer - 1)))
    assert lambda_init_schedule(1) == pytest.approx(0.2)
    assert lambda_init_schedule(12) == pytest.approx(0.8 - 0.6 * math.exp(-3.3))


def test_differential_attention_without_second_map_is_softmax_attention():
    da = DifferentialAttention(16, layer=3, heads=2, second_map=False, head_norm=False, head_scale=False)
    torch.nn.init.normal_(da.out.weight)
    h = torch.randn(3, 7, 16)
    b, n, d, heads = 3, 7, da.head_dim, da.heads
    q = da.q(h).view(b, n, 2 * heads, d).transpose(1, 2)[:, :heads]  # Q1 of each head
    k = da.k(h).view(b, n, 2 * heads, d).transpose(1, 2)[:, :heads]
    v = da.v(h).view(b, n, heads, 2 * d).transpose(1, 2)
    expected = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1) @ v
    expected = da.out(expected.transpose(1, 2).reshape(b, n, 16))
    torch.testing.assert_close(da(h), expected)


def test_differential_attention_subtracts_lambda_times_second_map():
    da = DifferentialAttention(16, layer=2, heads=2, head_norm=False, head_scale=False)
    torch.nn.init.normal_(da.out.weight)
    h = torch.randn(2, 5, 16)
    full = da(h)
    da.second_map = False
    first = da(h)
    da.second_map = True
    with torch.no_grad():  # lambda = 0: exp(0) - exp(0) + lambda_init = lambda_init -> force 0
        for p in (da.lambda_q1, da.lambda_k1, da.lambda_q2, da.lambda_k2):
            p.zero_()
        da.lambda_init = 0.0
    torch.testing.assert_close(da(h), first)
    assert not torch.allclose(full, first)


@pytest.mark.parametrize("mixer", [
    lambda: MultiHeadSelfAttention(16, causal=True, heads=4),
    lambda: DifferentialAttention(16, causal=True, heads=2),
    lambda: HierarchicalAttention(16, causal=True, heads=4),
    lambda: LocalGlobalAttention(16, causal=True, heads=4),
], ids=["mhsa", "diff", "hierarchical", "local-global"])
def test_text_mixers_are_causal_and_ignore_padding(mixer):
    m = mixer()
    for p in m.parameters():  # zero-initialised outputs and gates would make the test vacuous
        torch.nn.init.normal_(p, std=0.3)
    h = torch.randn(2, 9, 16)
    padding = torch.zeros(2, 9, dtype=torch.bool)
    padding[:, 6:] = True
    out = m(h, padding)
    # padding changes: real tokens unchanged
    h2 = h.clone()
    h2[:, 6:] = torch.randn(2, 3, 16) * 10
    torch.testing.assert_close(m(h2, padding)[:, :6], out[:, :6])
    # a later real token changes: earlier tokens unchanged (no token sees a later one)
    h3 = h.clone()
    h3[:, 4] += 5.0
    out3 = m(h3, padding)
    torch.testing.assert_close(out3[:, :4], out[:, :4])
    assert not torch.allclose(out3[:, 4:6], out[:, 4:6])


def test_hierarchical_feeds_the_sentence_vector_back_through_a_zero_gate():
    m = HierarchicalAttention(16, causal=False, heads=4)
    torch.nn.init.normal_(m.tokens.out.weight)
    h = torch.randn(2, 6, 16)
    without = m.tokens(h)
    torch.testing.assert_close(m(h), without)  # g = 0 at initialisation
    with torch.no_grad():
        m.gate.fill_(1.0)
    sentence = m.pool(h + without, None, False)
    torch.testing.assert_close(m(h), without + sentence)
    assert torch.allclose(sentence[:, 0], sentence[:, -1])  # non-causal: one vector for all tokens


def test_none_mixer_is_zero():
    h = torch.randn(2, 4, 8)
    assert torch.equal(NoAttention(8)(h), torch.zeros_like(h))
