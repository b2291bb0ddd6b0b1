"""Retrieval metrics for image-text retrieval, as the RSITR literature defines them (docs/metric.md).

``retrieval_metrics`` takes image and caption embeddings (or a precomputed image x caption
similarity matrix) and the caption -> image mapping, and returns, in percent:

* ``i2t_R@K`` (image query, "text retrieval"): the share of images for which at least one of
  their captions ranks in the top K of all captions;
* ``t2i_R@K`` (caption query, "image retrieval"): the share of captions whose own image ranks in
  the top K of all images; duplicated caption strings are separate queries;
* ``mR``: the mean of the six.

**Tie rule.** A positive ranks *below every negative with an equal score*: the rank of a query's
best positive is the number of negatives scoring greater than *or equal to* it. So no sort order,
device or library detail can inflate a result; the number of queries whose best positive tied
with at least one negative is reported (``ties_i2t``, ``ties_t2i``) so that a reader can see
when ties happened at all. With no ties this equals the VSE++/AMFMN, ALBEF/PIR and
CLIP_benchmark computations.

The computation is vectorised: each query's positive score comes from one gather (and a
scatter-max over an image's captions), then comparison passes over the similarity matrix count
what beats it; no per-query Python loop, no sort. Two kernels give identical ranks and ties:

* on CPU, NumPy over row chunks small enough to stay in cache (``chunk`` rows: both directions'
  comparisons reuse the chunk while it is hot, counts are uint8 sums, and the exact-tie pass
  only reduces per query when a chunk holds more equal scores than its positives). torch's
  boolean reductions widen element by element and cost several times more on CPU, which is why
  this path is NumPy (measured in docs/performance.md);
* on an accelerator, the same counts as torch operations on the device (no copy to the host).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

RECALL_KS = (1, 5, 10)
METRIC_NAMES = tuple(f"{d}_R@{k}" for d in ("i2t", "t2i") for k in RECALL_KS) + ("mR",)


def retrieval_metrics(
    image_emb: torch.Tensor | None = None,
    text_emb: torch.Tensor | None = None,
    text_to_image: torch.Tensor | Sequence[int] | None = None,
    *,
    similarity: torch.Tensor | None = None,
    ks: Sequence[int] = RECALL_KS,
    chunk: int | None = None,
    ranks: dict[str, torch.Tensor] | None = None,
    backend: str = "auto",
) -> dict[str, float]:
    """I2T/T2I recall at K and mR in percent, plus tie counts; see the module docstring.

    Args:
        image_emb: (N, E) image embeddings (normalised or not: the dot product is the score).
        text_emb: (M, E) caption embeddings.
        text_to_image: (M,) index into the images of each caption's own image.
        similarity: (N, M) scores, instead of the embeddings.
        ks: the cut-offs; ``mR`` averages every reported recall.
        chunk: rows processed at once (memory bound: chunk x M booleans); by default 32 on CPU
            (cache-sized) and 1024 on an accelerator.
        ranks: if a dict is given, it receives the per-query ranks (``i2t``: (N,), ``t2i``: (M,);
            0 is the top), which paired significance tests need.
        backend: ``"numpy"`` or ``"torch"`` kernel; ``"auto"`` takes NumPy for CPU tensors.
    """
    if similarity is None:
        if image_emb is None or text_emb is None:
            raise ValueError("give either image_emb and text_emb, or similarity")
        similarity = image_emb.float() @ text_emb.float().t()
    if text_to_image is None:
        raise ValueError("text_to_image is required")
    sim = similarity.float()
    n_images, n_texts = sim.shape
    owner = torch.as_tensor(text_to_image, dtype=torch.long, device=sim.device)
    if owner.shape != (n_texts,):
        raise ValueError(f"text_to_image has shape {tuple(owner.shape)}, expected ({n_texts},)")
    if n_texts and (owner.min() < 0 or owner.max() >= n_images):
        raise ValueError("text_to_image points outside the images")
    if n_images and torch.bincount(owner, minlength=n_images).min() == 0:
        raise ValueError("every image needs at least one caption")

    i2t_rank, i2t_ties, t2i_rank, t2i_ties = query_ranks(sim, owner, chunk=chunk, backend=backend)
    out: dict[str, float] = {}
    for k in ks:
        out[f"i2t_R@{k}"] = 100.0 * int((i2t_rank < k).sum()) / n_images
    for k in ks:
        out[f"t2i_R@{k}"] = 100.0 * int((t2i_rank < k).sum()) / n_texts
    out["mR"] = sum(out[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in ks) / (2 * len(ks))
    out["ties_i2t"] = int(i2t_ties)
    out["ties_t2i"] = int(t2i_ties)
    out["n_images"] = n_images
    out["n_captions"] = n_texts
    if ranks is not None:
        ranks["i2t"], ranks["t2i"] = i2t_rank.cpu(), t2i_rank.cpu()
    return out


def query_ranks(sim: torch.Tensor, owner: torch.Tensor, *, chunk: int | None = None,
                backend: str = "auto") -> tuple[torch.Tensor, int, torch.Tensor, int]:
    """Per-query ranks (ties against) and tie counts: (i2t ranks, i2t ties, t2i ranks, t2i ties)."""
    if backend == "auto":
        backend = "numpy" if sim.device.type == "cpu" else "torch"
    if backend == "numpy":
        s = sim.detach().cpu().float().contiguous().numpy()
        i2t, i2t_ties, t2i, t2i_ties = _numpy_ranks(s, owner.cpu().numpy(), chunk or 32)
        return torch.from_numpy(i2t), i2t_ties, torch.from_numpy(t2i), t2i_ties
    if backend != "torch":
        raise ValueError(f"backend must be 'auto', 'numpy' or 'torch', not {backend!r}")
    i2t, i2t_ties = _image_query_ranks(sim, owner, chunk or 1024)
    t2i, t2i_ties = _text_query_ranks(sim, owner, chunk or 1024)
    return i2t, i2t_ties, t2i, t2i_ties


def _numpy_ranks(s: np.ndarray, owner: np.ndarray, chunk: int) -> tuple[np.ndarray, int, np.ndarray, int]:
    """The CPU kernel: four comparison passes per cache-sized row chunk.

    Image queries: rank_i = #{captions >= best_i} - #{own captions >= best_i}. Caption queries:
    rank_j = #{images >= own score_j} - 1. Exact ties: a chunk's equal-score mask is reduced per
    query only when its total exceeds the positives it must contain (rare: duplicated captions
    or images), so tie counting costs one cheap total per chunk otherwise.
    """
    n, m = s.shape
    chunk = min(chunk, 65535)  # column counts of one chunk are uint16
    own = s[owner, np.arange(m)]
    best = np.full(n, -np.inf, dtype=s.dtype)
    np.maximum.at(best, owner, own)
    at_best = np.bincount(owner, weights=own == best[owner], minlength=n).astype(np.int64)
    captions_of_row = np.bincount(owner, minlength=n)
    ge_i, eq_i = np.empty(n, np.int64), at_best.copy()
    ge_t, eq_t = np.zeros(m, np.int64), np.ones(m, np.int64)
    mask = np.empty((min(chunk, n), m), dtype=bool)
    for a in range(0, n, chunk):
        rows = s[a : a + chunk]
        k = rows.shape[0]
        b, hit = best[a : a + k, None], mask[:k]
        count = hit.view(np.uint8)  # uint8 sums: a bool reduction would widen to int64 per element
        np.greater_equal(rows, b, out=hit)
        ge_i[a : a + k] = count.sum(1, dtype=np.int32)
        np.equal(rows, b, out=hit)
        if np.count_nonzero(hit) != at_best[a : a + k].sum():
            eq_i[a : a + k] = count.sum(1, dtype=np.int32)
        np.greater_equal(rows, own[None, :], out=hit)
        ge_t += count.sum(0, dtype=np.uint16)  # k <= chunk rows: no uint16 overflow
        np.equal(rows, own[None, :], out=hit)
        if np.count_nonzero(hit) != captions_of_row[a : a + k].sum():
            eq_t += count.sum(0, dtype=np.uint16)
            eq_t[(owner >= a) & (owner < a + k)] -= 1  # the own image was counted by the start value
    i2t, t2i = ge_i - at_best, ge_t - 1
    return i2t, int((eq_i > at_best).sum()), t2i, int((eq_t > 1).sum())


def _count(mask: torch.Tensor, dim: int) -> torch.Tensor:
    """True entries along ``dim``. Summing a bool tensor widens it to int64 element by element,
    about 2-3x slower on CPU than a float sum, which is exact for counts below 2**24."""
    return mask.to(torch.float32).sum(dim=dim).long()


def _positive_scores(sim: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
    """(M,) each caption's score with its own image."""
    return sim[owner, torch.arange(sim.shape[1], device=sim.device)]


def _image_query_ranks(sim: torch.Tensor, owner: torch.Tensor, chunk: int) -> tuple[torch.Tensor, int]:
    """Rank of each image's best caption among the negatives (ties counted against).

    One comparison pass: rank_i = #{captions scoring >= best_i} - #{own captions scoring >= best_i};
    the best positive per image comes from a scatter-max over the captions' positive scores.
    """
    n_images = sim.shape[0]
    pos = _positive_scores(sim, owner)
    best = torch.full((n_images,), float("-inf"), device=sim.device).scatter_reduce(0, owner, pos, reduce="amax")
    own_ge = torch.zeros(n_images, dtype=torch.long, device=sim.device).scatter_add(0, owner, (pos >= best[owner]).long())
    ge = torch.cat([_count(sim[a : a + chunk] >= best[a : a + chunk, None], 1) for a in range(0, n_images, chunk)])
    gt = torch.cat([_count(sim[a : a + chunk] > best[a : a + chunk, None], 1) for a in range(0, n_images, chunk)])
    ranks = ge - own_ge
    ties = int(((ge - gt) - own_ge > 0).sum())  # a negative scores exactly the best positive's score
    return ranks, ties


def _text_query_ranks(sim: torch.Tensor, owner: torch.Tensor, chunk: int) -> tuple[torch.Tensor, int]:
    """Rank of each caption's own image among the other images (ties counted against):
    #{images scoring >= the own image's score} - 1 (the own image itself), in one pass."""
    pos = _positive_scores(sim, owner)
    ge = torch.zeros_like(pos, dtype=torch.long)
    gt = torch.zeros_like(pos, dtype=torch.long)
    for a in range(0, sim.shape[0], chunk):
        rows = sim[a : a + chunk]
        ge += _count(rows >= pos[None, :], 0)
        gt += _count(rows > pos[None, :], 0)
    ranks = ge - 1
    ties = int((ge - gt - 1 > 0).sum())
    return ranks, ties


def per_query_hits(sim: torch.Tensor, text_to_image: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-query hit indicators at ``k`` (image queries, caption queries), for paired tests."""
    owner = torch.as_tensor(text_to_image, dtype=torch.long, device=sim.device)
    i2t, _, t2i, _ = query_ranks(sim.float(), owner)
    return i2t < k, t2i < k
