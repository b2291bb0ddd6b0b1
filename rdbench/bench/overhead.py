"""Framework overhead: an rdbench training step inside a real Lightning Trainer against a plain
PyTorch loop over the same model, adapter, batch and loss.

rdbench's step is the whole of what a run pays per batch: ``RetrievalModule.training_step``
(normalisation on the device, the loss composition, the finiteness check, ``self.log`` of every
term and weight), Lightning's optimisation loop (``zero_grad``, backward, ``step``, the LR
scheduler), the ``on_train_batch_end`` hooks and the runner's callbacks (``ResumableCheckpoint``)
and logger (``CSVLogger``). The plain loop computes the same two embeddings and the same
multi-positive InfoNCE inline, with ``torch.optim.AdamW`` of the same settings (fused, as rdbench's
optimiser is on CPU), and nothing else.

Both are timed from one batch's hand-over to the next (Lightning: ``on_train_batch_start``; the
last step ends at ``on_train_epoch_end``, before the epoch-end checkpoint, a per-epoch cost), on
the same in-memory loader. Rounds alternate (Lightning fit, plain loop, ...); the figure is the
median of the ratios of neighbouring steps (step k of Lightning's round r over step k of the
plain round r). The tiny model (``rdbench-test``: 2 blocks, width 32, 32 px) makes the fixed
per-step cost visible; ViT-B-32 shows what it weighs in a real step.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from rdbench.bench.common import Figure, Settings, build_module, interleave, median, paired_ratio, random_batch, trainable
from rdbench.openclip import trim_text_padding


def _loader(batch: dict[str, torch.Tensor], steps: int):
    from torch.utils.data import DataLoader

    return DataLoader([batch] * steps, batch_size=None, shuffle=False)


def lightning_round(module, batch, warmup: int, steps: int, folder: Path, callbacks: tuple = ()) -> list[float]:
    """One ``Trainer.fit`` of ``warmup + steps`` batches; the per-step times after the warm-up.
    ``callbacks`` are added to the runner's own (the diagnostics figure times one)."""
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from rdbench.training.callbacks import ResumableCheckpoint
    from rdbench.training.execute import CHECKPOINT_EVERY
    from rdbench.resolution.run import TRAINER_DEFAULTS

    marks: list[float] = []

    class Clock(L.Callback):
        def on_train_batch_start(self, *_args) -> None:
            marks.append(time.perf_counter())

        def on_train_epoch_end(self, *_args) -> None:
            marks.append(time.perf_counter())

    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    settings = {**TRAINER_DEFAULTS, "accelerator": "cpu", "max_epochs": 1, "enable_progress_bar": False,
                "limit_val_batches": 0}
    trainer = L.Trainer(**settings, logger=CSVLogger(folder, name="logs", version=""), default_root_dir=folder,
                        callbacks=[Clock(), ResumableCheckpoint(folder / "last.ckpt", CHECKPOINT_EVERY), *callbacks])
    trainer.fit(module, train_dataloaders=_loader(batch, warmup + steps), weights_only=True)
    return [b - a for a, b in zip(marks, marks[1:])][warmup:]


def plain_round(module, batch, warmup: int, steps: int) -> list[float]:
    """The same steps as a plain PyTorch loop: embeddings, InfoNCE, backward, AdamW."""
    model, adapter = module.model, module.adapter
    mean, std = module.mean, module.std
    optimizer = torch.optim.AdamW(trainable(module), lr=1e-5, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.0,
                                  fused=True)  # what optimizer/adamw takes on CPU
    module.train()
    marks = []
    for b in _loader(batch, warmup + steps):
        marks.append(time.perf_counter())
        images = (b["images"].float().div(255) - mean) / std
        image_emb = F.normalize(adapter.encode_image(model, images), dim=-1)
        tokens = trim_text_padding(b["tokens"]) if module.trim_text else b["tokens"]  # as the module cuts them
        text_emb = F.normalize(adapter.encode_text(model, tokens), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100.0) * image_emb @ text_emb.t()
        targets = (b["image_ids"][:, None] == b["image_ids"][None, :]).float()
        targets = targets / targets.sum(dim=1, keepdim=True)
        loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    marks.append(time.perf_counter())
    return [b - a for a, b in zip(marks, marks[1:])][warmup:]


def compare(module, batch, rounds: int, warmup: int, steps: int, later_warmup: int | None = None) -> dict[str, list[float]]:
    """Interleaved rounds of both; ``later_warmup`` (default ``warmup``) for rounds after the first."""
    seen = {"lightning": 0, "plain": 0}
    later = warmup if later_warmup is None else later_warmup
    with tempfile.TemporaryDirectory(prefix="rdbench-bench-") as tmp:
        def lightning() -> list[float]:
            w = warmup if seen["lightning"] == 0 else later
            seen["lightning"] += 1
            return lightning_round(module, batch, w, steps, Path(tmp) / f"l{seen['lightning']}")

        def plain() -> list[float]:
            w = warmup if seen["plain"] == 0 else later
            seen["plain"] += 1
            return plain_round(module, batch, w, steps)

        return interleave({"lightning": lightning, "plain": plain}, rounds)


def tiny_batch(batch: int) -> dict[str, torch.Tensor]:
    from rdbench.testing import tokenize

    b = random_batch(batch, 32)
    b["tokens"] = tokenize(["a port with three boats and a river"] * batch)
    return b


def figures(settings: Settings) -> list[Figure]:
    from rdbench.testing import tiny_clip

    out = []
    tiny = compare(build_module("adapter/cmaa", tiny_clip()), tiny_batch(32), rounds=3, warmup=2, steps=10)
    vit_warmup = settings.warmup
    vit = compare(build_module("adapter/cmaa"), random_batch(settings.batch, settings.image_size),
                  rounds=settings.repeats, warmup=vit_warmup, steps=1, later_warmup=0)
    for label, samples, per, target in (
        ("ViT-B-32", vit, f"batch {settings.batch}, {settings.image_size} px, {settings.repeats} interleaved rounds of "
         f"1 timed step (the first round after {vit_warmup} warm-up steps)", True),
        ("tiny rdbench-test model", tiny, "batch 32, 32 px, 3 interleaved rounds of 10 timed steps after 2 warm-up steps each", False),
    ):
        light, plain = median(samples["lightning"]), median(samples["plain"])
        ratio = paired_ratio(samples["lightning"], samples["plain"])
        details = [
            f"CMAA adapter, InfoNCE, AdamW, fp32; {per}",
            f"median step: rdbench (Lightning Trainer) {light * 1e3:.1f} ms, plain PyTorch loop {plain * 1e3:.1f} ms; "
            f"difference {(light - plain) * 1e3:+.1f} ms per step; the figure is the median of the per-step ratios of "
            "neighbouring rounds",
        ]
        if not target:
            details.append("reported to make the fixed per-step cost visible; the target applies to the benchmark geometry")
        out.append(Figure(f"Framework overhead, {label} (rdbench step / plain loop)", ratio, "x",
                          "<= 1.10" if target else "none (see ViT-B-32)", (ratio <= 1.10) if target else None,
                          details, settings.command, {"lightning_s": light, "plain_s": plain}))
    return out
