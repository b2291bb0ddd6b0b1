"""Recall as the public RSITR evaluation codes compute it, equal scores ordered by their own sorts.

rdbench's own tie rule ("strict", :mod:`rdbench.evaluation`) counts a tie against the query. The
published numbers rdbench sets beside its rows were computed by other code, which lets a sort
decide where a positive lands among equal scores. This module reproduces those computations on
one similarity matrix so that both can be reported (docs/metric.md, "Tie handling of the public
evaluation codes"):

* ``"vsepp"``: VSE++ ``evaluation.py`` (``i2t``, ``t2i``) and its remote-sensing descendants
  (AMFMN ``utils.acc_i2t2`` / ``acc_t2i2``; PE-RSITR ``utils.i2t`` / ``t2i``). Per query row,
  ``numpy.argsort(d)[::-1]``; an image's rank is the first position of any of its captions, a
  caption's rank the position of its image in the sort of its row of the transposed matrix.
  These codes hold embeddings and similarity in float64 numpy arrays, so the sort is numpy's
  float64 one. The original takes captions ``5i .. 5i+4`` as image ``i``'s; rdbench applies the
  same rule through its caption -> image map (its caption order is image-major, so the two
  coincide when every image has five captions).
* ``"pir"``: ALBEF ``Retrieval.itm_eval`` as PIR and HarMA run it with a dual encoder
  (``scores_i2t`` = the similarity, ``scores_t2i`` = its transpose, explicit ``img2txt`` /
  ``txt2img`` maps), again ``numpy.argsort(score)[::-1]`` per row, on the float32 array that
  ``.cpu().numpy()`` gives. Apart from that dtype it is the "vsepp" computation; where numpy's
  float32 and float64 sorts order equal values alike (they do on the CPUs rdbench was checked
  on), the two give the same numbers.
* ``"clip_benchmark"``: CLIP_benchmark ``metrics/zeroshot_retrieval.evaluate``: ``scores`` =
  captions x images, ``torch.topk(scores, k, dim=1)`` over batches of 64 rows (``batchify``),
  a query hits when one of its positives is among the k returned indices. Caption queries
  ("image_retrieval_recall") are rdbench's t2i, image queries on ``scores.T``
  ("text_retrieval_recall") its i2t. topk is called once per k and per batch, as there: the k
  indices it returns among equal scores need not be a prefix of those for a larger k, so this
  lineage has hits per k, not ranks.

**Sort order among equal scores.** ``numpy.argsort``'s default kind is not stable: which of
several equal scores comes first depends on the algorithm numpy dispatches to, which varies with
the numpy version and the CPU (SIMD sorts such as x86-simd-sort on AVX-512 / AVX2). The same
holds for ``torch.topk``, whose CPU and CUDA kernels differ. rdbench reproduces a lineage by
calling the same sort on the same scores, so it matches that code run in the same environment,
not necessarily a number printed years ago on other hardware.

**Vectorised.** Only the queries strict flags as tied are sorted (for the others every sort
puts the best positive at its strict rank), whole blocks of rows at once
(``numpy.argsort(block, axis=1)`` runs the same per-row sort), and the permutation is inverted
to read positions; tests check this against the literal per-row loops on matrices full of ties.

:func:`rdbench.evaluation.lineage_metrics` gives the
three lineages' recalls from one similarity matrix.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch


__all__ = ["LINEAGES", "SORT_DTYPE", "CLIP_BENCHMARK_BATCH", "argsort_ranks", "topk_hits"]

#: The public evaluation codes reproduced here (rdbench.evaluation.TIE_RULES adds "strict").
LINEAGES = ("vsepp", "pir", "clip_benchmark")
#: CLIP_benchmark's batch for ``batchify``: its image loader's batch size, 64 by default.
CLIP_BENCHMARK_BATCH = 64
#: The dtype each argsort lineage sorts: the VSE++ family keeps its embeddings and similarity in
#: float64 numpy arrays (``np.zeros`` buffers, ``1 - cdist``); ALBEF / PIR / HarMA sort the
#: float32 array that ``.cpu().numpy()`` gives.
SORT_DTYPE = {"vsepp": np.float64, "pir": np.float32}


def argsort_ranks(sim: torch.Tensor, owner: torch.Tensor, *, dtype: type = np.float32,
                  strict: Any | None = None, block: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """0-based ranks where ``numpy.argsort(row)[::-1]`` puts each query's best positive.

    Returns (image-query ranks (N,), caption-query ranks (M,)): for image ``i`` the lowest
    position of any of its captions in the reversed argsort of row ``i``; for caption ``j`` the
    position of its image in the reversed argsort of column ``j``. The scores are sorted as
    ``dtype`` (:data:`SORT_DTYPE`; widening float32 to float64 keeps every value and every tie,
    but runs numpy's float64 sort). Queries are sorted ``block`` at a time (memory:
    block x max(N, M) int64, twice).

    With ``strict`` (the same matrix's :func:`rdbench.evaluation.strict_ranks`), only the tied
    queries are sorted: when no negative scores exactly a query's best positive, every sort
    places that positive after the higher scores and first among the equal ones (which are its
    own captions), so its position is the strict rank. NaN scores (which argsort moves to the
    end, the top of the reversed order, while strict ignores them) turn this off.
    """
    wide = torch.float64 if np.dtype(dtype) == np.float64 else torch.float32  # a float64 matrix stays exact
    s = sim.detach().cpu().to(wide).contiguous().numpy().astype(dtype, copy=False)
    own = owner.cpu().numpy()
    n, m = s.shape
    if strict is not None and not np.isnan(s).any():
        i2t, t2i = strict.i2t.cpu().numpy().copy(), strict.t2i.cpu().numpy().copy()
        images, captions = np.flatnonzero(strict.i2t_tied.cpu().numpy()), np.flatnonzero(strict.t2i_tied.cpu().numpy())
    else:
        i2t, t2i = np.empty(n, np.int64), np.empty(m, np.int64)
        images, captions = np.arange(n), np.arange(m)
    # Image queries. Position p in the argsort is m-1-p in the reversed order, so an image's best
    # (lowest reversed) position is m-1 minus the highest argsort position of its captions.
    slot = np.full(n, -1, dtype=np.int64)  # row of each image within the block being sorted
    for a in range(0, len(images), block):
        rows = images[a : a + block]
        where = _positions(np.argsort(s[rows], axis=1))
        slot[rows] = np.arange(len(rows))
        mine = np.flatnonzero(slot[own] >= 0)  # the captions of these images
        highest = np.full(len(rows), -1, dtype=np.int64)
        np.maximum.at(highest, slot[own[mine]], where[slot[own[mine]], mine])
        i2t[rows] = (m - 1) - highest
        slot[rows] = -1
    # Caption queries: each column sorted over the images (VSE++'s dot(queries, ims.T) rows).
    for b in range(0, len(captions), block):
        cols = captions[b : b + block]
        where = _positions(np.argsort(np.ascontiguousarray(s[:, cols].T), axis=1))
        t2i[cols] = (n - 1) - where[np.arange(len(cols)), own[cols]]
    return torch.from_numpy(i2t), torch.from_numpy(t2i)


def _positions(order: np.ndarray) -> np.ndarray:
    """Invert each row's permutation: ``where[r, order[r, p]] = p``."""
    where = np.empty_like(order)
    np.put_along_axis(where, order, np.arange(order.shape[1])[None, :], axis=1)
    return where


def topk_hits(sim: torch.Tensor, owner: torch.Tensor, ks: Sequence[int], *, strict: Any | None = None,
              batch_size: int = CLIP_BENCHMARK_BATCH) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """CLIP_benchmark's per-query hits at each k: ({k: image queries (N,)}, {k: caption queries (M,)}).

    ``scores`` is laid out as CLIP_benchmark's ``texts_emb @ images_emb.t()`` (captions x images,
    contiguous) and image queries read its transpose view; each batch of ``batch_size`` rows
    gets its own ``torch.topk(x, k, dim=1)``, on the similarity's device. A k above the number of
    candidates (where topk would raise) takes them all, so every query hits.

    With ``strict`` (:func:`rdbench.evaluation.strict_ranks`), a batch holding no tied query is
    not sorted: topk returns the k highest scores, so without a negative equal to the best
    positive the query hits exactly when its strict rank is below k. A batch with a tied query
    is run whole, as batchify runs it (an accelerator's topk may pick its algorithm from the
    batch shape). NaN scores (largest for topk) turn this off.
    """
    scores = sim.float().t().contiguous()
    n_texts, n_images = scores.shape
    owner = owner.to(scores.device)
    image_ids = torch.arange(n_images, device=scores.device)
    if strict is not None and not bool(torch.isnan(scores).any()):
        i2t_tied, t2i_tied = strict.i2t_tied.cpu(), strict.t2i_tied.cpu()
        i2t_rank, t2i_rank = strict.i2t.cpu(), strict.t2i.cpu()
    else:
        i2t_tied, t2i_tied = torch.ones(n_images, dtype=torch.bool), torch.ones(n_texts, dtype=torch.bool)
        i2t_rank, t2i_rank = torch.zeros(n_images, dtype=torch.long), torch.zeros(n_texts, dtype=torch.long)
    i2t: dict[int, torch.Tensor] = {}
    t2i: dict[int, torch.Tensor] = {}
    for k in ks:
        t2i[k] = t2i_rank < k
        for a in range(0, n_texts, batch_size):
            if t2i_tied[a : a + batch_size].any():
                top = torch.topk(_batch(scores, a, batch_size), min(k, n_images), dim=1).indices
                t2i[k][a : a + batch_size] = (top == owner[a : a + batch_size, None]).any(1).cpu()
        i2t[k] = i2t_rank < k
        for a in range(0, n_images, batch_size):
            if i2t_tied[a : a + batch_size].any():
                top = torch.topk(_batch(scores.t(), a, batch_size), min(k, n_texts), dim=1).indices
                i2t[k][a : a + batch_size] = (owner[top] == image_ids[a : a + batch_size, None]).any(1).cpu()
    return i2t, t2i


def _batch(x: torch.Tensor, start: int, size: int) -> torch.Tensor:
    """``X[start:end].to(device)`` as batchify takes it: CLIP_benchmark keeps ``scores`` on the
    CPU, where ``.to("cpu")`` returns the strided view itself, and an accelerator receives a copy
    (contiguous for a transposed slice)."""
    rows = x[start : start + size]
    return rows if rows.device.type == "cpu" else rows.contiguous()
