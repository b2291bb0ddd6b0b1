"""Evaluating a split: embed every image and caption once, compute the metric, return it.

:func:`evaluate` runs Lightning's predict loop over a split's evaluation loader (images first,
then captions, each rank its shard under DDP), gathers the embeddings of every rank, and
returns an :class:`Evaluation` (metrics, tie counts and per-query ranks) to its caller. The
validation loop that drives model selection computes its metrics with the same
:func:`split_evaluation`, so the number a checkpoint was selected on and the number reported
for it are computed one way.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from rdbench.diagnostics.embedding import geometry, recall_per_class
from rdbench.evaluation import lineage_metrics, retrieval_metrics

#: Counts an evaluation reports beside the metrics (docs/metric.md: ties count against a query).
COUNTS = ("n_images", "n_captions", "ties_i2t", "ties_t2i")


@dataclass
class Evaluation:
    """The metrics of one split (recalls and mR in percent), its counts, and per-query ranks."""

    metrics: dict[str, float]
    counts: dict[str, int]
    ranks: dict[str, torch.Tensor]  # "i2t": (n_images,), "t2i": (n_captions,); 0 = ranked first
    #: The same recalls under each public evaluation code's tie handling (docs/metric.md), when
    #: asked for: {"vsepp": {"i2t_R@1": ..., "mR": ...}, "pir": {...}, "clip_benchmark": {...}}.
    lineages: dict[str, dict[str, float]] = field(default_factory=dict)
    #: The embeddings' geometry (:func:`rdbench.diagnostics.embedding.geometry`: modality gap,
    #: alignment, uniformity), and from :func:`evaluate` the recall per scene class.
    diagnostics: dict[str, Any] = field(default_factory=dict)


def split_evaluation(chunks: list[tuple[str, torch.Tensor, torch.Tensor]], caption_image: torch.Tensor,
                     *, lineages: bool = False, same_caption: torch.Tensor | None = None) -> Evaluation:
    """The metric of a split from its ``(kind, item indices, embeddings)`` chunks (any order,
    any rank's share: every rank's chunks are gathered first); with ``lineages``, also the
    recalls under the public evaluation codes' tie handling, from the same similarities.

    ``same_caption`` (:attr:`rdbench.data.loading.loaders.SplitData.same_caption`): captions
    that repeat another were not encoded and take its embedding."""
    chunks = _gathered(chunks)
    images = _ordered([(i, e) for kind, i, e in chunks if kind == "images"])
    texts = _ordered([(i, e) for kind, i, e in chunks if kind == "texts"], len(caption_image))
    if same_caption is not None:
        texts = texts[same_caption.to(texts.device)]
    ranks: dict[str, torch.Tensor] = {}
    values = retrieval_metrics(images, texts, caption_image.to(images.device), ranks=ranks)
    counts = {k: int(values[k]) for k in COUNTS}
    metrics = {k: float(v) for k, v in values.items() if k not in COUNTS}
    # each public evaluation code scores the embeddings its own way (which decides what ties)
    extra = lineage_metrics(None, caption_image.to(images.device), image_emb=images, text_emb=texts) if lineages else {}
    return Evaluation(metrics, counts, ranks, extra, geometry(images, texts, caption_image.to(images.device)))


def evaluate(trainer: Any, module: Any, data: Any, split: str, *, lineages: bool = False) -> Evaluation:
    """Encode ``split`` with ``module`` in ``trainer``'s predict loop and return its metrics
    (with ``lineages``, also under the public evaluation codes' tie handling)."""
    module.predict_split = data.predict_split = split
    with warnings.catch_warnings():
        # KindBatches yields every index exactly once (tested); Lightning cannot know that
        warnings.filterwarnings("ignore", message=".*custom batch sampler.*")
        chunks = trainer.predict(module, datamodule=data, return_predictions=True)
    items = data.split(split)
    result = split_evaluation(list(chunks or []), items.caption_image, lineages=lineages, same_caption=items.same_caption)
    result.diagnostics["per_class"] = recall_per_class(result.ranks, items.caption_image, items.labels, list(data.classes))
    return result


def _gathered(chunks: list[tuple[str, torch.Tensor, torch.Tensor]]) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Every rank's chunks, on every rank (DDP evaluation encodes a shard per rank); the metric
    is then computed on the whole split, identically everywhere."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return chunks
    local = [(k, i.cpu(), e.detach().cpu()) for k, i, e in chunks]
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, local)
    device = chunks[0][2].device if chunks else torch.device("cpu")
    return [(k, i.to(device), e.to(device)) for part in everyone for k, i, e in part]


def _ordered(chunks: list[tuple[torch.Tensor, torch.Tensor]], n: int | None = None) -> torch.Tensor:
    """Embeddings in item order (``n`` rows; rows of items not encoded are NaN), whatever order
    the batches came in."""
    index = torch.cat([i for i, _ in chunks])
    emb = torch.cat([e for _, e in chunks])
    out = emb.new_full((len(emb) if n is None else n, *emb.shape[1:]), float("nan"))
    out[index.to(emb.device)] = emb
    return out
