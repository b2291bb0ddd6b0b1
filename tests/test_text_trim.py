"""Text batches cut at their longest caption, and tokenization remembered in a process: the
fast paths give the plain paths' results (docs/runs-per-hour.md)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rdbench.adapters.basic import BottleneckAdapter
from rdbench.adapters.cmaa import CMAAdapter
from rdbench.adapters.prompts import CoOpAdapter
from rdbench.openclip import get_tokenizer, open_clip, text_trims_padding, trim_text_padding
from rdbench.testing import build_module, check_text_padding, make_batch, tiny_clip, train_steps


def test_any_length_text_at_full_length_is_open_clips_own():
    model = tiny_clip()
    tokens = make_batch()["tokens"]
    assert text_trims_padding(model)
    with torch.no_grad():
        assert torch.equal(model.encode_text(tokens), open_clip.CLIP.encode_text(model, tokens))
        cut = trim_text_padding(tokens)
        assert cut.shape[1] < tokens.shape[1]
        torch.testing.assert_close(model.encode_text(cut), open_clip.CLIP.encode_text(model, tokens))


def test_a_text_tower_that_sees_its_padding_is_not_cut():
    """A bidirectional tower (mask removed) or first-token pooling: padding matters, no cutting."""
    from rdbench.openclip import any_length_text

    plain = tiny_clip()
    del plain.encode_text  # the instance's cut-capable encode_text; the class's is open_clip's
    plain._rdbench_any_length_text = False
    bidirectional = tiny_clip()
    del bidirectional.encode_text
    bidirectional._rdbench_any_length_text = False
    bidirectional.attn_mask.zero_()
    assert not text_trims_padding(any_length_text(bidirectional))
    first = tiny_clip()
    del first.encode_text
    first._rdbench_any_length_text = False
    first.text_pool_type = "first"
    assert not text_trims_padding(any_length_text(first))
    assert text_trims_padding(any_length_text(plain))


def test_trim_keeps_every_row_up_to_its_end_token():
    tokens = torch.tensor([[49406, 5, 49407, 0, 0, 0], [49406, 0, 7, 8, 49407, 0]])  # id 0 is also "!"
    assert torch.equal(trim_text_padding(tokens), tokens[:, :5])
    full = torch.tensor([[49406, 5, 6, 49407]])
    assert trim_text_padding(full) is full


def test_only_declaring_adapters_cut_their_text_batches():
    assert build_module(CMAAdapter(bottleneck=8), model=tiny_clip()).trim_text
    assert not build_module(CoOpAdapter(n_ctx=4), model=tiny_clip()).trim_text  # its context tokens shift the padding


class _MeanOverTokens(BottleneckAdapter):
    """A wrong declaration: the text branch mixes every position, padding included."""

    text_padding_invariant = True

    def attach(self, model: nn.Module) -> None:
        super().attach(model)
        self.mix = nn.Linear(model.transformer.width, model.transformer.width)

        def hook(_module, _inputs, output):
            return output + self.mix(output.mean(dim=1, keepdim=True))

        model.transformer.resblocks[0].register_forward_hook(hook)


def test_the_padding_check_catches_a_wrong_declaration():
    module = build_module(_MeanOverTokens(bottleneck=4), model=tiny_clip())
    with pytest.raises(AssertionError, match="depends on its padding"):
        check_text_padding(module)
    assert check_text_padding(build_module(CMAAdapter(bottleneck=8), model=tiny_clip())) < 1e-5


def test_training_on_cut_batches_follows_the_padded_path():
    """A few optimiser steps with and without cutting: the same losses and weights up to float
    rounding (cutting changes the matrix shapes, so not bit for bit)."""
    batch = make_batch(n=8)
    runs = []
    for cut in (False, True):
        module = build_module(CMAAdapter(bottleneck=8), model=tiny_clip())
        module.trim_text = cut
        losses = train_steps(module, 4, batch)
        runs.append((losses, {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}))
    (plain_losses, plain), (cut_losses, cut) = runs
    torch.testing.assert_close(torch.tensor(cut_losses), torch.tensor(plain_losses), rtol=1e-5, atol=1e-5)
    for name in plain:
        torch.testing.assert_close(cut[name], plain[name], rtol=1e-4, atol=1e-5)


def test_remembering_tokenizer_gives_open_clips_tokens_as_copies():
    captions = ["a port with boats", "green farmland", "a port with boats"]
    remembering = get_tokenizer("ViT-B-32")
    assert get_tokenizer("ViT-B-32") is remembering
    first = remembering(captions)
    assert torch.equal(first, open_clip.get_tokenizer("ViT-B-32")(captions))
    first.zero_()  # a caller's change does not reach the next caller
    assert torch.equal(remembering(captions), open_clip.get_tokenizer("ViT-B-32")(captions))
    assert torch.equal(remembering("green farmland"), open_clip.get_tokenizer("ViT-B-32")(["green farmland"]))
