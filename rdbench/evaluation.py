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

**Other tie rules.** ``tie_rule`` (one of :data:`TIE_RULES`) instead reproduces a public
evaluation code, sort order among equal scores included: ``"vsepp"`` (VSE++ / AMFMN, the lineage
of PE-RSITR's tables), ``"pir"`` (ALBEF's ``itm_eval`` as PIR and HarMA run it) and
``"clip_benchmark"`` (``torch.topk`` in batches of 64). Those kernels live in
:mod:`rdbench.lineages`; :func:`lineage_metrics` gives all three from one matrix. "strict" stays
the default because it is the only rule no sort order can move.

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

from typing import Mapping, NamedTuple, Sequence

import numpy as np
import torch

from rdbench.lineages import LINEAGES as LINEAGE_RULES
from rdbench.lineages import SORT_DTYPE, argsort_ranks, topk_hits

RECALL_KS = (1, 5, 10)
METRIC_NAMES = tuple(f"{d}_R@{k}" for d in ("i2t", "t2i") for k in RECALL_KS) + ("mR",)
#: How equal scores fall: rdbench's own rule first, then the public evaluation codes it can
#: reproduce (rdbench.lineages, docs/metric.md "Tie handling of the public evaluation codes").
TIE_RULES = ("strict", *LINEAGE_RULES)


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
    tie_rule: str = "strict",
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
        tie_rule: how equal scores fall, one of :data:`TIE_RULES`. ``"strict"`` (the default,
            the module docstring's rule) or a public evaluation code's own sort
            (:mod:`rdbench.lineages`): ``"vsepp"`` (VSE++ / AMFMN / PE-RSITR), ``"pir"``
            (ALBEF ``itm_eval`` as PIR and HarMA run it), ``"clip_benchmark"``
            (``torch.topk`` in batches of 64). ``ties_i2t`` / ``ties_t2i`` are the strict counts
            whatever the rule. ``ranks`` then receives the lineage's own ranks (the argsort
            positions for "vsepp" and "pir"); CLIP_benchmark defines no rank, only hits, so for
            it ``ranks`` receives ``i2t@K`` / ``t2i@K`` boolean hit tensors per K instead.
    """
    if tie_rule not in TIE_RULES:
        raise ValueError(f"tie_rule must be one of {', '.join(TIE_RULES)}; got {tie_rule!r}")
    if similarity is None:
        if image_emb is None or text_emb is None:
            raise ValueError("give either image_emb and text_emb, or similarity")
        similarity = image_emb.float() @ text_emb.float().t()
    sim, owner = checked_inputs(similarity, text_to_image)
    n_images, n_texts = sim.shape

    strict = strict_ranks(sim, owner, chunk=chunk, backend=backend)
    i2t_rank, t2i_rank = strict.i2t, strict.t2i
    if tie_rule == "clip_benchmark":

        i2t_hits, t2i_hits = topk_hits(sim, owner, ks, strict=strict)
        kept = {f"{d}@{k}": hits[k] for d, hits in (("i2t", i2t_hits), ("t2i", t2i_hits)) for k in ks}
    else:
        if tie_rule != "strict":  # "vsepp" and "pir": numpy.argsort per row, as those codes do
            # a float64 matrix (VSE++ scores in float64) has ties of its own: sort every query
            exact = similarity.dtype == torch.float64
            i2t_rank, t2i_rank = argsort_ranks(similarity if exact else sim, owner, dtype=SORT_DTYPE[tie_rule],
                                               strict=None if exact else strict)
        i2t_hits = {k: i2t_rank < k for k in ks}
        t2i_hits = {k: t2i_rank < k for k in ks}
        kept = {"i2t": i2t_rank.cpu(), "t2i": t2i_rank.cpu()}
    out = recall_table(i2t_hits, t2i_hits, ks)
    out["ties_i2t"] = int(strict.i2t_tied.sum())
    out["ties_t2i"] = int(strict.t2i_tied.sum())
    out["n_images"] = n_images
    out["n_captions"] = n_texts
    if ranks is not None:
        ranks.update(kept)
    return out


def lineage_metrics(similarity: torch.Tensor | None, text_to_image: torch.Tensor | Sequence[int],
                    ks: Sequence[int] = RECALL_KS, *, image_emb: torch.Tensor | None = None,
                    text_emb: torch.Tensor | None = None) -> dict[str, dict[str, float]]:
    """Recalls and mR (percent) under each public evaluation code's tie handling:
    ``{"vsepp": {...}, "pir": {...}, "clip_benchmark": {...}}`` (:mod:`rdbench.lineages`).

    Each inner dict has ``i2t_R@K``, ``t2i_R@K`` for every K and ``mR``, exactly as
    ``retrieval_metrics(similarity=..., tie_rule=name)`` reports them (without the tie counts,
    which are the strict rule's whatever the lineage). Given the embeddings, each code's scores
    are formed as that code forms them, since float rounding decides which scores tie: VSE++
    takes a float64 dot product of the embeddings, ALBEF/PIR ``image @ text.T`` in float32,
    CLIP_benchmark ``text @ image.T`` in float32. Given only ``similarity``, all three read it.
    Only the queries that tie under the strict rule on a code's own matrix are sorted (all of
    them for VSE++'s float64 matrix).
    """
    if image_emb is not None and text_emb is not None:
        image_emb, text_emb = image_emb.detach(), text_emb.detach()
        matrices = {
            "vsepp": image_emb.double() @ text_emb.double().t(),
            "pir": image_emb.float() @ text_emb.float().t(),
            "clip_benchmark": (text_emb.float() @ image_emb.float().t()).t(),
        }
    elif similarity is not None:
        matrices = dict.fromkeys(LINEAGE_RULES, similarity)
    else:
        raise ValueError("give similarity, or image_emb and text_emb")
    out = {}
    for rule in LINEAGE_RULES:
        values = retrieval_metrics(similarity=matrices[rule], text_to_image=text_to_image, ks=ks, tie_rule=rule)
        out[rule] = {k: v for k, v in values.items() if "R@" in k or k == "mR"}
    return out


def checked_inputs(similarity: torch.Tensor, text_to_image: torch.Tensor | Sequence[int] | None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 similarity, caption -> image index on its device), after checking the mapping."""
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
    return sim, owner


def recall_table(i2t_hits: Mapping[int, torch.Tensor | np.ndarray], t2i_hits: Mapping[int, torch.Tensor | np.ndarray],
                 ks: Sequence[int]) -> dict[str, float]:
    """``i2t_R@K``, ``t2i_R@K`` (percent, from exact hit counts) and ``mR`` from per-query hits."""
    out: dict[str, float] = {}
    for d, hits in (("i2t", i2t_hits), ("t2i", t2i_hits)):
        for k in ks:
            out[f"{d}_R@{k}"] = 100.0 * int(hits[k].sum()) / len(hits[k])
    out["mR"] = sum(out[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in ks) / (2 * len(ks))
    return out


def query_ranks(sim: torch.Tensor, owner: torch.Tensor, *, chunk: int | None = None,
                backend: str = "auto") -> tuple[torch.Tensor, int, torch.Tensor, int]:
    """Per-query ranks (ties against) and tie counts: (i2t ranks, i2t ties, t2i ranks, t2i ties)."""
    r = strict_ranks(sim, owner, chunk=chunk, backend=backend)
    return r.i2t, int(r.i2t_tied.sum()), r.t2i, int(r.t2i_tied.sum())


class StrictRanks(NamedTuple):
    """Per-query strict ranks and tie flags: a query is tied when a negative scores exactly its
    best positive. Only tied queries can rank differently under another tie rule."""

    i2t: torch.Tensor  # (N,) long
    i2t_tied: torch.Tensor  # (N,) bool
    t2i: torch.Tensor  # (M,) long
    t2i_tied: torch.Tensor  # (M,) bool


def strict_ranks(sim: torch.Tensor, owner: torch.Tensor, *, chunk: int | None = None,
                 backend: str = "auto") -> StrictRanks:
    """:func:`query_ranks` with the tied queries flagged one by one instead of counted."""
    if backend == "auto":
        backend = "numpy" if sim.device.type == "cpu" else "torch"
    if backend == "numpy":
        s = sim.detach().cpu().float().contiguous().numpy()
        i2t, i2t_tied, t2i, t2i_tied = _numpy_ranks(s, owner.cpu().numpy(), chunk or 32)
        return StrictRanks(*(torch.from_numpy(a) for a in (i2t, i2t_tied, t2i, t2i_tied)))
    if backend != "torch":
        raise ValueError(f"backend must be 'auto', 'numpy' or 'torch', not {backend!r}")
    i2t, i2t_tied = _image_query_ranks(sim, owner, chunk or 1024)
    t2i, t2i_tied = _text_query_ranks(sim, owner, chunk or 1024)
    return StrictRanks(i2t, i2t_tied, t2i, t2i_tied)


def _numpy_ranks(s: np.ndarray, owner: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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
    return i2t, eq_i > at_best, t2i, eq_t > 1


def _count(mask: torch.Tensor, dim: int) -> torch.Tensor:
    """True entries along ``dim``. Summing a bool tensor widens it to int64 element by element,
    about 2-3x slower on CPU than a float sum, which is exact for counts below 2**24."""
    return mask.to(torch.float32).sum(dim=dim).long()


def _positive_scores(sim: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
    """(M,) each caption's score with its own image."""
    return sim[owner, torch.arange(sim.shape[1], device=sim.device)]


def _image_query_ranks(sim: torch.Tensor, owner: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
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
    tied = (ge - gt) - own_ge > 0  # a negative scores exactly the best positive's score
    return ranks, tied


def _text_query_ranks(sim: torch.Tensor, owner: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
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
    tied = ge - gt - 1 > 0
    return ranks, tied


def per_query_hits(sim: torch.Tensor, text_to_image: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-query hit indicators at ``k`` (image queries, caption queries), for paired tests."""
    owner = torch.as_tensor(text_to_image, dtype=torch.long, device=sim.device)
    i2t, _, t2i, _ = query_ranks(sim.float(), owner)
    return i2t < k, t2i < k
