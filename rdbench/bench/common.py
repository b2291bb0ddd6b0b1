"""What every figure of ``rdbench bench`` shares: the geometry, the timing rule, the result type.

The timing rule, and why: this machine is shared and noisy (other processes come and go, the
CPU clock moves), so an absolute time measured at one moment says little about another moment.
Every figure is therefore a *ratio* of two variants measured in the same process, interleaved
(A, B, A, B, ...) so that a slow spell hits both, each after its own warm-up. A ratio is the
median of the per-round ratios (A_i / B_i, neighbours in time, so a slow minute cancels out),
robust to the one round a neighbour's job slowed down; each variant's median time is reported
beside it.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

ARCHITECTURE = "ViT-B-32"


@dataclass
class Settings:
    """The geometry of one bench: ViT-B-32 at 224 px in fp32; ``quick`` shrinks batches and repeats."""

    quick: bool = False
    batch: int = 32
    repeats: int = 5  # timed repetitions per variant (ViT-B-32 figures)
    warmup: int = 2  # untimed steps before each variant's timed ones (the first steps run slower)
    image_size: int = 224
    threads: int | None = None  # torch CPU threads when set by --threads (else torch's choice)

    @classmethod
    def make(cls, quick: bool, threads: int | None = None) -> "Settings":
        return cls(quick=True, batch=8, repeats=2, warmup=1, threads=threads) if quick else cls(threads=threads)

    @property
    def command(self) -> str:
        return "rdbench bench" + (" --quick" if self.quick else "") + (f" --threads {self.threads}" if self.threads else "")


@dataclass
class Figure:
    """One measured ratio, its target, and what a reader needs to trust it."""

    name: str
    ratio: float
    unit: str  # how the ratio reads, e.g. "x the full fine-tuning step time"
    target: str  # e.g. "<= 0.65"
    holds: bool | None  # None: reported only, no target
    details: list[str] = field(default_factory=list)
    command: str = "rdbench bench"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def shown(self) -> str:
        """The ratio as printed: three significant digits, or three decimals near 1 (where
        1.004 and 1 differ by what a target of 1.05 is about)."""
        return f"{self.ratio:.3f}" if 0.9 <= self.ratio < 1.1 else f"{self.ratio:.3g}"

    def line(self) -> str:
        verdict = "n/a" if self.holds is None else ("holds" if self.holds else "DOES NOT HOLD")
        return f"{self.name}: {self.shown} {self.unit} (target {self.target}: {verdict})"


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median of the per-round ratios of two interleaved sample lists (see the module docstring)."""
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError("paired samples need the same, non-zero number of rounds")
    return median([a / b for a, b in zip(numerator, denominator)])


def interleave(variants: dict[str, Callable[[], list[float]]], rounds: int) -> dict[str, list[float]]:
    """Call each variant's measuring function once per round, alternating; collect its samples.

    Each function returns the samples of one round (it does its own warm-up), so a round of A
    and a round of B always sit next to each other in time.
    """
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, measure in variants.items():
            samples[name].extend(measure())
    return samples


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def machine() -> str:
    """One line naming the machine, for the report."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    threads = torch.get_num_threads()
    return (f"{cpu}, {os.cpu_count()} CPU cores ({threads} torch thread{'s' if threads != 1 else ''}), "
            f"Python {platform.python_version()}, torch {torch.__version__}, {platform.system()}")


def clip_model(architecture: str = ARCHITECTURE, seed: int = 0):
    """A randomly initialised open_clip model (the bench measures cost, not accuracy)."""
    from rdbench.openclip import create_model

    torch.manual_seed(seed)
    return create_model(architecture, pretrained=None)


def build_module(adapter_key: str, model=None, *, feature_cache: bool = False, lr: float = 1e-5,
                 loss_key: str = "loss/infonce", num_classes: int = 0):
    """A RetrievalModule with the registered adapter ``adapter_key``, the loss ``loss_key``
    (InfoNCE unless told; ``num_classes`` scene classes for a classification term) and AdamW
    (constant schedule), assembled exactly as a run with these components is
    (:func:`rdbench.training.assemble.assemble`), around ``model`` or a random ViT-B-32."""
    from rdbench.resolution.run import DataOptions, ResolvedRun, Selection, as_composite
    from rdbench.resolution.spec import Prebuilt, resolve
    from rdbench.suite import RunPlan
    from rdbench.testing import ModelBackbone
    from rdbench.training.assemble import assemble

    components = {
        "backbone": Prebuilt(ModelBackbone(model if model is not None else clip_model())),
        "adapter": resolve(adapter_key, "adapter"),
        "loss": as_composite(resolve(loss_key, "loss")),
        "optimizer": resolve({"name": "optimizer/adamw", "lr": lr, "schedule": "constant"}, "optimizer"),
    }
    run = ResolvedRun(RunPlan("bench", adapter_key, 0, 0, {}), components, {}, DataOptions(feature_cache=feature_cache), Selection())
    return assemble(run, with_data=False, num_classes=num_classes).module


def random_batch(batch: int, image_size: int, architecture: str = ARCHITECTURE, seed: int = 0,
                 classes: int = 0) -> dict[str, torch.Tensor]:
    """A training batch of the loaders' kind: uint8 images, tokens, one image per caption, and
    scene labels (``-1``, unknown, unless ``classes`` are given: then every image has one)."""
    from rdbench.openclip import open_clip

    g = torch.Generator().manual_seed(seed)
    words = ["many buildings", "a green river", "two planes", "a large port", "dense forest", "a parking lot"]
    captions = [" and ".join(words[(i + k) % len(words)] for k in range(3)) for i in range(batch)]
    return {
        "images": torch.randint(0, 256, (batch, 3, image_size, image_size), generator=g, dtype=torch.uint8),
        "tokens": open_clip.get_tokenizer(architecture)(captions),
        "image_ids": torch.arange(batch),
        "labels": torch.arange(batch) % classes if classes else torch.full((batch,), -1),
    }


def trainable(module) -> list[torch.nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]
