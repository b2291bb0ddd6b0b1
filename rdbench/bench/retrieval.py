"""Evaluation: the vectorised metric against the classic per-query ``argsort`` loop.

The classic computation (VSE++'s ``i2t``/``t2i``, reused by AMFMN, GaLR and most RSITR code)
sorts the whole gallery once per query in Python and looks up where the positives landed:
1,093 sorts of 5,465 scores and 5,465 sorts of 1,093 on the RSICD test split.
:func:`rdbench.evaluation.retrieval_metrics` counts, per query, the negatives scoring at least
the best positive (comparison passes over cache-sized row chunks, no sort, no Python loop per
query). Its CPU kernel (NumPy) is what rdbench uses here; its accelerator kernel (torch) is
timed beside it on CPU for reference.
With no tied scores the two give the same ranks, hence the same recalls; the bench asserts it
on embeddings without ties (random Gaussian, 512-d) before it reports a time.
"""

from __future__ import annotations

import numpy as np
import torch

from rdbench.bench.common import Figure, Settings, interleave, median, timed
from rdbench.evaluation import RECALL_KS, retrieval_metrics

RSICD_TEST = {"images": 1093, "captions_per_image": 5, "dim": 512}


def argsort_recalls(sims: np.ndarray, text_to_image: np.ndarray, ks=RECALL_KS) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """The classic VSE++/AMFMN loop, generalised to any caption -> image map.

    For each image, sort all captions by score and take the best position of its own captions;
    for each caption, sort all images and take the position of its image. Returns the recalls
    (percent) and the ranks of both directions (0 is the top).
    """
    n_images, n_texts = sims.shape
    captions_of: list[list[int]] = [[] for _ in range(n_images)]
    for j, i in enumerate(text_to_image):
        captions_of[int(i)].append(j)
    ranks_i2t = np.zeros(n_images, dtype=np.int64)
    for i in range(n_images):
        inds = np.argsort(sims[i])[::-1]
        rank = 1e20
        for j in captions_of[i]:
            rank = min(rank, np.where(inds == j)[0][0])
        ranks_i2t[i] = rank
    sims_t = np.ascontiguousarray(sims.T)  # rows per caption: the fastest layout for the loop
    ranks_t2i = np.zeros(n_texts, dtype=np.int64)
    for j in range(n_texts):
        inds = np.argsort(sims_t[j])[::-1]
        ranks_t2i[j] = np.where(inds == text_to_image[j])[0][0]
    out = {f"i2t_R@{k}": 100.0 * int((ranks_i2t < k).sum()) / n_images for k in ks}
    out.update({f"t2i_R@{k}": 100.0 * int((ranks_t2i < k).sum()) / n_texts for k in ks})
    out["mR"] = sum(out[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in ks) / (2 * len(ks))
    return out, ranks_i2t, ranks_t2i


def rsicd_like(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random unit embeddings with RSICD's test geometry (five captions per image, in order)."""
    g = torch.Generator().manual_seed(seed)
    n, per, dim = RSICD_TEST["images"], RSICD_TEST["captions_per_image"], RSICD_TEST["dim"]
    images = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=-1)
    # captions near their image, so that the recalls are neither 0 nor 100 (and differ by query)
    texts = torch.nn.functional.normalize(images.repeat_interleave(per, 0) + 1.5 * torch.randn(n * per, dim, generator=g), dim=-1)
    return images, texts, torch.arange(n).repeat_interleave(per)


def figures(settings: Settings) -> list[Figure]:
    images, texts, owner = rsicd_like()
    sim = images @ texts.t()  # common to every variant: each metric is timed from the scores
    sim_np, owner_np = sim.numpy(), owner.numpy()
    results = {}
    variants = {
        "vectorised": lambda: retrieval_metrics(similarity=sim, text_to_image=owner),
        "loop": lambda: argsort_recalls(sim_np, owner_np)[0],
        "torch_kernel": lambda: retrieval_metrics(similarity=sim, text_to_image=owner, backend="torch"),
    }

    def measure(name: str):
        return lambda: [timed(lambda: results.__setitem__(name, variants[name]()))]

    for name in variants:  # warm-up of each (allocations, threads), untimed
        measure(name)()
    rounds = 3
    samples = interleave({name: measure(name) for name in variants}, rounds)
    t = {name: median(v) for name, v in samples.items()}
    matmul = median([timed(lambda: images @ texts.t()) for _ in range(rounds)])
    ours, classic, torch_kernel = results["vectorised"], results["loop"], results["torch_kernel"]
    assert ours["ties_i2t"] == 0 and ours["ties_t2i"] == 0, "the bench embeddings must have no ties"
    names = list(classic)
    for label, other in (("vectorised", ours), ("torch kernel", torch_kernel)):
        mismatched = [k for k in names if other[k] != classic[k]]
        if mismatched:
            raise AssertionError(f"{label} and argsort-loop metrics differ on {mismatched}")
    speedup = t["loop"] / t["vectorised"]
    geometry = (f"{RSICD_TEST['images']:,} images x {RSICD_TEST['images'] * RSICD_TEST['captions_per_image']:,} captions, "
                f"{RSICD_TEST['dim']}-d random embeddings without ties, fp32; every variant timed from the same "
                f"similarity matrix (its product, {matmul * 1e3:.0f} ms, is common to all and not counted)")
    return [
        Figure(
            "Evaluation metric, RSICD test geometry (argsort loop time / rdbench.evaluation.retrieval_metrics time)",
            speedup, "x faster", ">= 20", speedup >= 20,
            [geometry,
             f"median of {rounds} interleaved runs after one warm-up each: retrieval_metrics {t['vectorised'] * 1e3:.0f} ms, "
             f"argsort loop {t['loop'] * 1e3:.0f} ms",
             f"the accelerator kernel (backend='torch'), timed here on CPU in the same rounds: {t['torch_kernel'] * 1e3:.0f} ms "
             f"({t['loop'] / t['torch_kernel']:.1f} x faster than the loop; torch's boolean reductions are slow on CPU, "
             "which is why CPU tensors take the NumPy kernel)",
             f"identical results, asserted: {', '.join(f'{k} {ours[k]:.2f}' for k in names)}",
             "the whole evaluation encodes each image and each caption exactly once (one loader yields image batches, "
             "then caption batches); tests/test_bench.py::test_evaluation_encodes_each_item_once counts the tower "
             "calls of a real trainer.validate"],
            settings.command, {"vectorised_s": t["vectorised"], "loop_s": t["loop"], "torch_kernel_s": t["torch_kernel"],
                              "matmul_s": matmul}),
    ]
