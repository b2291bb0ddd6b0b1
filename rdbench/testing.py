"""Conformance helpers for component authors (rdbench's own tests use them, and so can plugins).

They run a component on a *real* open_clip model, small enough for a unit test: the
``rdbench-test`` architecture (2 blocks per tower, width 32, 32 px, 16 tokens), randomly
initialised. ``check_adapter`` checks an adapter's contract and ``check_loss_term`` a loss
term's; ``build_module`` assembles the real :class:`~rdbench.training.module.RetrievalModule`
around components built in Python, and ``train_steps`` runs a few optimiser steps of it on a
synthetic batch with scene labels (it returns the losses and checks nothing by itself).

Example (in a plugin's tests)::

    from rdbench.testing import check_adapter
    def test_my_adapter():
        check_adapter(lambda: MyAdapter(rank=4))
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from rdbench.backbones.base import Backbone
from rdbench.losses.base import CompositeLoss, LossTerm
from rdbench.losses.contrastive import InfoNCELoss
from rdbench.openclip import create_model, open_clip, trim_text_padding
from rdbench.optim import AdamWOptimizer
from rdbench.resolution.run import DataOptions, ResolvedRun, Selection
from rdbench.resolution.spec import Prebuilt, resolve
from rdbench.suite import RunPlan
from rdbench.training.assemble import assemble

TEST_ARCHITECTURE = "rdbench-test"
_TEST_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
NUM_CLASSES = 3


def tiny_clip_config() -> None:
    """Make the ``rdbench-test`` architecture known to open_clip."""
    from open_clip.factory import _MODEL_CONFIGS

    _MODEL_CONFIGS.setdefault(TEST_ARCHITECTURE, _TEST_CONFIG)


def tiny_clip(seed: int = 0) -> nn.Module:
    """A randomly initialised open_clip CLIP of the ``rdbench-test`` architecture."""
    tiny_clip_config()
    torch.manual_seed(seed)
    return create_model(TEST_ARCHITECTURE, pretrained=None)


def tokenize(texts: list[str]) -> torch.Tensor:
    return open_clip.get_tokenizer("ViT-B-32", context_length=_TEST_CONFIG["text_cfg"]["context_length"])(texts)


def make_batch(n: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    """``n`` captions of ``n // 2`` images (two captions each), uint8 images, scene labels with
    one unlabelled image (-1)."""
    g = torch.Generator().manual_seed(seed)
    images_per = torch.randint(0, 256, (n // 2, 3, 32, 32), generator=g, dtype=torch.uint8)
    image_ids = torch.arange(n) // 2
    words = ["a port with three boats", "two red planes at the airport", "green farmland", "a river and a bridge",
             "white storage tanks", "houses in the top left corner", "a forest", "cars in a parking lot"]
    captions = [words[i % len(words)] for i in range(n)]
    labels = (image_ids % NUM_CLASSES).clone()
    labels[image_ids == 0] = -1
    return {"images": images_per[image_ids], "tokens": tokenize(captions), "image_ids": image_ids, "labels": labels}


class ModelBackbone(Backbone):
    """A backbone around a model already in hand (CLIP normalisation, the test tokenizer), so a
    conformance check or a benchmark can assemble a run around its own model."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.image_size = int(getattr(model.visual, "image_size", (32, 32))[0])
        self.mean, self.std = tuple(open_clip.OPENAI_DATASET_MEAN), tuple(open_clip.OPENAI_DATASET_STD)

    def build_model(self) -> nn.Module:
        return self.model

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return tokenize(texts)

    def provenance(self) -> dict:
        return {"architecture": "given", "pretrained": None, "checksum": None}


def conformance_run(adapter, loss=None, optimizer=None, model: nn.Module | None = None, *,
                    feature_cache: bool = False, seed: int = 0) -> ResolvedRun:
    """A resolved run around built components: the tiny model (or ``model``), InfoNCE and AdamW
    (constant schedule, lr 1e-2) unless given. A single loss term runs as a one-term composite."""
    if model is None:
        tiny_clip_config()
        backbone = resolve({"name": "backbone/open-clip", "architecture": TEST_ARCHITECTURE}, "backbone")
    else:
        backbone = Prebuilt(ModelBackbone(model))
    loss = loss if loss is not None else InfoNCELoss()
    if not isinstance(loss, CompositeLoss):
        loss = CompositeLoss({"term": loss})
    optimizer = optimizer or AdamWOptimizer(lr=1e-2, schedule="constant")
    components = {"backbone": backbone, "adapter": Prebuilt(adapter), "loss": Prebuilt(loss), "optimizer": Prebuilt(optimizer)}
    return ResolvedRun(RunPlan("conformance", "check", 0, seed, {}), components, {}, DataOptions(feature_cache=feature_cache), Selection())


def build_module(adapter, loss=None, optimizer=None, model: nn.Module | None = None, *, feature_cache: bool = False):
    """A RetrievalModule around the tiny model (InfoNCE and AdamW unless given), assembled by
    :func:`rdbench.training.assemble.assemble` exactly as a run's module is."""
    run = conformance_run(adapter, loss, optimizer, model, feature_cache=feature_cache)
    return assemble(run, with_data=False, num_classes=NUM_CLASSES).module


def train_steps(module, steps: int = 2, batch: dict[str, torch.Tensor] | None = None) -> list[float]:
    """Run ``steps`` optimiser steps exactly as the Trainer would; returns the losses."""
    batch = batch or make_batch()
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:  # zero-shot: nothing to train (the runner skips fit the same way)
        return []
    optimizer, scheduler = module.optimizer_factory.build(params, steps)
    module.train()
    losses = []
    for _ in range(steps):
        total, _ = module.compute_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        module.loss.after_optimizer_step(module)
        losses.append(float(total.detach()))
    return losses


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


@torch.no_grad()
def embeddings(module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    module.eval()
    return module(batch["images"], batch["tokens"])


def check_adapter(make_adapter: Callable[[], nn.Module], *, identity_at_init: bool | None = None, steps: int = 2) -> dict[str, int]:
    """Check the adapter contract on the tiny model; returns parameter counts.

    * ``identity_at_init`` (default: the adapter class's own ``identity_at_init``): attaching the
      adapter leaves the embeddings unchanged (zero-initialised output), as every residual
      adapter should;
    * after ``steps`` optimiser steps, every parameter the adapter declares trainable may have
      changed and *nothing else* has (the frozen backbone stays bit-identical), and at least one
      declared parameter did change;
    * the loss stays finite.
    """
    batch = make_batch()
    from rdbench.adapters.basic import NoAdapter

    reference = build_module(NoAdapter(), model=tiny_clip())
    before = embeddings(reference, batch)
    adapter = make_adapter()
    if identity_at_init is None:
        identity_at_init = getattr(adapter, "identity_at_init", True)
    module = build_module(adapter, model=tiny_clip())
    declared = {id(p) for _, p in adapter.trainable_parameters(module.model)}
    if identity_at_init:
        after = embeddings(module, batch)
        for a, b in zip(before, after):
            torch.testing.assert_close(a, b, msg=lambda m: f"the adapter changes the embeddings at initialisation: {m}")
    start = snapshot(module)
    losses = train_steps(module, steps, batch)
    assert all(torch.isfinite(torch.tensor(losses))), f"non-finite loss {losses}"
    changed = {n for n, p in module.named_parameters() if not torch.equal(p.detach(), start[n])}
    params = dict(module.named_parameters())
    undeclared = [n for n in changed if id(params[n]) not in declared and not n.startswith("loss.")]
    assert not undeclared, f"parameters changed that the adapter did not declare trainable: {undeclared[:5]}"
    if declared:
        assert any(id(params[n]) in declared for n in changed), "no declared parameter changed after training"
    if getattr(adapter, "text_padding_invariant", False):
        check_text_padding(module)
    return {"trainable": sum(p.numel() for _, p in adapter.trainable_parameters(module.model)), "changed": len(changed)}


@torch.no_grad()
def check_text_padding(module, tokens: torch.Tensor | None = None, *, seed: int = 0) -> float:
    """Check an adapter's ``text_padding_invariant`` declaration (rdbench.adapters.base) on
    ``module``: with every trained tensor randomised (an adapter that starts as the identity
    would pass trivially), captions cut at the batch's longest one embed as they do padded to
    the context length, in eval and in train mode (dropout off). Returns the largest difference.
    """
    assert module.trim_text, "the module does not cut text batches (adapter or backbone does not declare it)"
    g = torch.Generator().manual_seed(seed)
    for _, param in module.adapter.trainable_parameters(module.model):
        param.copy_(torch.randn(param.shape, generator=g) * 0.2)
    tokens = tokens if tokens is not None else make_batch()["tokens"]
    assert trim_text_padding(tokens).shape[1] < tokens.shape[1], "the captions fill the context: nothing to cut"
    worst = 0.0
    for train in (False, True):
        module.train(train)
        for m in module.modules():  # dropout would draw different masks for different lengths
            if isinstance(m, nn.Dropout):
                m.eval()
        module.trim_text = False
        padded = module.embed_texts(tokens)
        module.trim_text = True
        cut = module.embed_texts(tokens)
        torch.testing.assert_close(cut, padded, msg=lambda m: f"a caption's embedding depends on its padding: {m}")
        worst = max(worst, float((cut - padded).abs().max()))
    module.eval()
    return worst


def check_loss_term(make_term: Callable[[], LossTerm], *, adapter: nn.Module | None = None, steps: int = 2) -> dict[str, int]:
    """Check the loss-term contract on the tiny model (with a small bottleneck adapter unless
    ``adapter`` is given); returns the term's own parameter count and the run's trainable count.

    * the term is a :class:`~rdbench.losses.base.LossTerm` (``forward`` implemented);
    * ``forward(step)`` on the :class:`~rdbench.losses.base.StepOutputs` of a real batch returns
      a finite scalar tensor with a gradient, and after the training steps below that gradient
      reaches the adapter's parameters (the term depends on the embeddings; a term with state,
      such as prototypes that fill as batches pass, may contribute nothing at first);
    * ``factor`` and ``diagnostics`` work without a Trainer (``module`` ``None``): a number and a
      mapping of names to numbers;
    * the term's own parameters (a head, a learned weight) train: they are among the run's
      trainable parameters, counted in its records, and the ones that get a gradient change
      over ``steps`` optimiser steps (``after_optimizer_step`` runs after each), while the
      frozen backbone stays bit-identical and the loss finite.
    """
    from rdbench.adapters.basic import BottleneckAdapter

    term = make_term()
    assert isinstance(term, LossTerm), f"{type(term).__name__} is not a rdbench.losses.base.LossTerm"
    adapter = adapter if adapter is not None else BottleneckAdapter(bottleneck=4)
    module = build_module(adapter, loss=term, model=tiny_clip())
    factor = term.factor(None)
    assert isinstance(factor, (int, float)) and not isinstance(factor, bool), f"factor(None) returned {factor!r}, not a number"
    named = term.diagnostics(None)
    assert isinstance(named, dict) and all(isinstance(k, str) and isinstance(float(v), float) for k, v in named.items()), \
        f"diagnostics(None) returned {named!r}, not a mapping of names to numbers"
    batch = make_batch()
    module.train()
    value = term(module.step_outputs(batch))
    assert isinstance(value, torch.Tensor) and value.dim() == 0, \
        f"forward must return a scalar tensor, got {type(value).__name__} {tuple(getattr(value, 'shape', ()))}"
    assert torch.isfinite(value), f"forward returned {float(value)}"
    assert value.requires_grad, "forward's value has no gradient: it does not depend on the embeddings or the term's parameters"
    own = dict(term.named_parameters())
    assert all(p.requires_grad for p in own.values()), f"frozen term parameters: {[n for n, p in own.items() if not p.requires_grad]}"
    trainable = {id(p) for p in module.parameters() if p.requires_grad}
    assert all(id(p) in trainable for p in own.values()), "the term's parameters are not among the run's trainable parameters"
    start = snapshot(module)
    declared = {id(p) for _, p in adapter.trainable_parameters(module.model)} | {id(p) for p in own.values()}
    losses = train_steps(module, steps, batch)
    assert all(torch.isfinite(torch.tensor(losses))), f"non-finite loss {losses}"
    params = dict(module.named_parameters())
    frozen_changed = [n for n, p in params.items() if id(p) not in declared and not torch.equal(p.detach(), start[n])]
    assert not frozen_changed, f"parameters changed that neither the adapter nor the term trains: {frozen_changed[:5]}"
    # after the steps, so that a term with state (a teacher, prototypes that fill as batches pass)
    # is past the steps where it legitimately contributes nothing
    module.zero_grad(set_to_none=True)
    term(module.step_outputs(batch)).backward()
    reached = [n for n, p in adapter.trainable_parameters(module.model) if p.grad is not None and bool(p.grad.abs().sum() > 0)]
    assert reached, "the term's gradient reaches none of the adapter's parameters (does it use step.image_emb / step.text_emb?)"
    module.zero_grad(set_to_none=True)
    return {"term_params": sum(p.numel() for p in own.values()), "trainable": sum(p.numel() for p in module.parameters() if p.requires_grad)}


class KillOnce(LossTerm):
    """Fault injection for resume tests (by ``class_path``; not registered): InfoNCE, except that
    the ``at``-th call sends the process ``signal`` (``KILL``, as the OOM killer or a hard
    preemption does; ``TERM`` or ``INT``, as a scheduler or Ctrl-C does), once: the file
    ``marker`` is created first, and a process that finds it sends nothing (so the rerun that
    resumes, and a reference run given an existing marker, train the same maths)."""

    def __init__(self, at: int = 1, marker: str = "killed-once", signal: str = "KILL"):
        super().__init__()
        if signal not in ("KILL", "TERM", "INT"):
            raise ValueError(f"signal must be KILL, TERM or INT, got {signal!r}")
        self.at, self.marker, self.signal, self.calls = at, marker, signal, 0

    def forward(self, step):
        self.calls += 1
        if self.calls == self.at:
            import os
            import signal
            from pathlib import Path

            marker = Path(self.marker)
            if not marker.exists():
                marker.write_text(str(os.getpid()))
                os.kill(os.getpid(), getattr(signal, f"SIG{self.signal}"))
        return InfoNCELoss()(step)


class NaNAfterLoss(LossTerm):
    """Fault injection for reliability tests (use it by ``class_path``; it is not registered):
    InfoNCE for the first ``after`` calls, then NaN."""

    def __init__(self, after: int = 2):
        super().__init__()
        self.after, self.calls = after, 0

    def forward(self, step):
        self.calls += 1
        value = InfoNCELoss()(step)
        return value * float("nan") if self.calls > self.after else value
