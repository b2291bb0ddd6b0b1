"""The cost of the run diagnostics on a training step (docs/diagnostics.md): the same Lightning
step with and without :class:`~rdbench.diagnostics.gradients.TowerGradients`.

Every run measures per-tower gradient norms at each optimiser step (one ``torch._foreach_norm``
per tower over the trainable parameters) and their relative update once per epoch; the
embedding geometry is computed once per validation epoch, never in a training step. The figure
is the ratio of a Lightning step with the callback over one without it, on the same module,
batch and loader, rounds interleaved as in :mod:`rdbench.bench.overhead` (whose
:func:`~rdbench.bench.overhead.lightning_round` both use). Target: at most 1.05 on the benchmark
geometry; the tiny model, whose step is a few milliseconds, is reported to show the fixed cost.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

from rdbench.bench.common import Figure, Settings, build_module, interleave, median, paired_ratio, random_batch
from rdbench.bench.overhead import lightning_round, tiny_batch

TARGET = 1.05


def compare(module, batch, rounds: int, warmup: int, steps: int) -> dict[str, list[float]]:
    """Interleaved Lightning rounds with and without the diagnostics callback."""
    from rdbench.diagnostics.gradients import TowerGradients

    count = {"with": 0, "without": 0}
    with tempfile.TemporaryDirectory(prefix="rdbench-bench-") as tmp:
        def rounds_of(name: str, callbacks: Callable[[], tuple]) -> Callable[[], list[float]]:
            def measure() -> list[float]:  # a fresh callback per round, as a run has
                count[name] += 1
                return lightning_round(module, batch, warmup, steps, Path(tmp) / f"{name}{count[name]}", callbacks())
            return measure

        return interleave({"with": rounds_of("with", lambda: (TowerGradients(),)),
                           "without": rounds_of("without", tuple)}, rounds)


def figures(settings: Settings) -> list[Figure]:
    from rdbench.testing import tiny_clip

    vit_steps = 1 if settings.quick else 3
    out = []
    vit = compare(build_module("adapter/cmaa"), random_batch(settings.batch, settings.image_size),
                  rounds=settings.repeats, warmup=settings.warmup, steps=vit_steps)
    tiny = compare(build_module("adapter/cmaa", tiny_clip()), tiny_batch(32), rounds=3, warmup=2, steps=20)
    for label, samples, per, target in (
        ("ViT-B-32", vit, f"batch {settings.batch}, {settings.image_size} px, {settings.repeats} interleaved rounds of "
         f"{vit_steps} timed step(s) after {settings.warmup} warm-up step(s) each", True),
        ("tiny rdbench-test model", tiny, "batch 32, 32 px, 3 interleaved rounds of 20 timed steps after 2 warm-up steps each", False),
    ):
        with_, without = median(samples["with"]), median(samples["without"])
        ratio = paired_ratio(samples["with"], samples["without"])
        details = [
            f"CMAA adapter, InfoNCE, AdamW, fp32, in a real Lightning Trainer; {per}",
            f"median step: with the diagnostics {with_ * 1e3:.1f} ms, without {without * 1e3:.1f} ms; "
            f"difference {(with_ - without) * 1e3:+.2f} ms per step",
        ]
        if not target:
            details.append("reported to make the fixed per-step cost visible; the target applies to the benchmark geometry")
        out.append(Figure(f"Diagnostics cost, {label} (step with / without the gradient diagnostics)", ratio, "x",
                          f"<= {TARGET:.2f}" if target else "none (see ViT-B-32)", (ratio <= TARGET) if target else None,
                          details, settings.command, {"with_s": with_, "without_s": without}))
    return out
