"""Geometry of a split's embeddings: the modality gap, alignment, uniformity, recall per class.

RDB (Ning et al., 2025) argues that fine-tuning lets the text modality dominate and leaves a
*representation discrepancy* between the towers. Recall alone cannot show whether a method
changes that; these quantities describe the two embedding clouds themselves:

* **Modality gap** (Liang et al., NeurIPS 2022, "Mind the Gap"): the distance between the centre
  of the normalised image embeddings and the centre of the normalised text embeddings,
  ``||mean_i x_i - mean_j y_j||``; 0 when the clouds share a centre, at most 2.
* **Alignment** (Wang and Isola, ICML 2020): the mean squared distance of matching pairs,
  ``E ||x - y||^2`` over every caption and its image; 0 when each caption sits on its image.
* **Uniformity** (same paper): ``log E exp(-t ||x - x'||^2)`` over distinct pairs of one
  modality, ``t = 2``; lower is more uniform on the sphere (an orthonormal set gives ``-2t``,
  identical points 0). Reported per modality and as their mean.

All inputs are re-normalised, so raw tower outputs may be passed. Uniformity is computed in
blocks, never as a full ``n x n`` matrix, and on at most :data:`UNIFORMITY_POINTS` evenly
spaced items of a larger split (an estimate of the same mean; 4,096 points give 8.4 million
pairs), so that evaluating a 50,000-caption split stays linear in its size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: Wang and Isola's temperature for uniformity.
UNIFORMITY_T = 2.0
#: Rows per block of the pairwise distances (a block is ``BLOCK x n`` floats).
BLOCK = 1024
#: Items of one modality uniformity is computed on, at most (evenly spaced through the split).
UNIFORMITY_POINTS = 4096


def modality_gap(image_emb: torch.Tensor, text_emb: torch.Tensor) -> float:
    """Distance between the centres of the normalised image and text embeddings."""
    x, y = F.normalize(image_emb.double(), dim=-1), F.normalize(text_emb.double(), dim=-1)
    return float((x.mean(0) - y.mean(0)).norm())


def alignment(image_emb: torch.Tensor, text_emb: torch.Tensor, caption_image: torch.Tensor) -> float:
    """Mean squared distance between each caption's embedding and its image's."""
    x, y = F.normalize(image_emb.double(), dim=-1), F.normalize(text_emb.double(), dim=-1)
    return float((y - x[caption_image.to(x.device)]).pow(2).sum(-1).mean())


def uniformity(emb: torch.Tensor, t: float = UNIFORMITY_T) -> float:
    """``log`` of the mean of ``exp(-t ||x_i - x_j||^2)`` over the pairs ``i != j``."""
    if len(emb) > UNIFORMITY_POINTS:
        emb = emb[torch.linspace(0, len(emb) - 1, UNIFORMITY_POINTS, device=emb.device).round().long()]
    x = F.normalize(emb.double(), dim=-1)
    n = len(x)
    if n < 2:
        return float("nan")
    parts = []
    for start in range(0, n, BLOCK):
        block = x[start:start + BLOCK]
        # ||a - b||^2 = 2 - 2 a.b on the unit sphere (clamped: rounding can make it negative)
        sq = (2 - 2 * block @ x.T).clamp_min(0)
        logits = -t * sq
        rows = torch.arange(len(block), device=x.device)
        logits[rows, rows + start] = -math.inf  # leave out i == j
        parts.append(torch.logsumexp(logits.flatten(), 0))
    return float(torch.logsumexp(torch.stack(parts), 0) - math.log(n * (n - 1)))


def geometry(image_emb: torch.Tensor, text_emb: torch.Tensor, caption_image: torch.Tensor) -> dict[str, float | None]:
    """Every quantity above for one split, under the names the record uses."""
    u_image, u_text = uniformity(image_emb), uniformity(text_emb)
    values = {
        "modality_gap": modality_gap(image_emb, text_emb),
        "alignment": alignment(image_emb, text_emb, caption_image),
        "uniformity": (u_image + u_text) / 2,
        "uniformity_image": u_image,
        "uniformity_text": u_text,
    }
    # JSON has no NaN: a split too small for a value (one image) records None
    return {k: v if math.isfinite(v) else None for k, v in values.items()}


def recall_per_class(ranks: dict[str, torch.Tensor], caption_image: torch.Tensor, labels: torch.Tensor,
                     classes: list[str], ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, dict[str, float]]:
    """mR (the mean of I2T and T2I R@1/5/10, in percent) of the queries of each scene class.

    ``ranks``: per-query ranks of the correct item (0 = first), ``"i2t"`` per image and
    ``"t2i"`` per caption, as :func:`rdbench.evaluation.retrieval_metrics` gives them; an image
    query belongs to its own class, a caption to its image's. Images without a class (label -1)
    are left out. Each class also reports its number of images.
    """
    labels = labels.to(caption_image.device)
    i2t, t2i = ranks["i2t"].to(labels.device), ranks["t2i"].to(labels.device)
    caption_labels = labels[caption_image]
    out: dict[str, dict[str, float]] = {}
    for index, name in enumerate(classes):
        images, captions = labels == index, caption_labels == index
        if not bool(images.any()):
            continue
        recalls = [float((i2t[images] < k).double().mean() * 100) for k in ks]
        recalls += [float((t2i[captions] < k).double().mean() * 100) for k in ks]
        out[name] = {"mR": sum(recalls) / len(recalls), "n_images": int(images.sum())}
    return out
