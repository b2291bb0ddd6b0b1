"""The retrieval metric against brute-force references, ties and duplicated captions included."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rdbench.evaluation import METRIC_NAMES, query_ranks, retrieval_metrics, strict_ranks


def brute_force(sim: np.ndarray, owner: np.ndarray, ks=(1, 5, 10)) -> dict[str, float]:
    """One query at a time, written as the definition reads (docs/metric.md), ties against."""
    n_img, n_txt = sim.shape
    out = {}
    i2t_rank = []
    for i in range(n_img):
        ranks = []
        for j in np.flatnonzero(owner == i):
            ranks.append(sum(1 for t in range(n_txt) if owner[t] != i and sim[i, t] >= sim[i, j]))
        i2t_rank.append(min(ranks))
    t2i_rank = []
    for j in range(n_txt):
        own = owner[j]
        t2i_rank.append(sum(1 for i in range(n_img) if i != own and sim[i, j] >= sim[own, j]))
    for k in ks:
        out[f"i2t_R@{k}"] = 100.0 * np.mean(np.array(i2t_rank) < k)
    for k in ks:
        out[f"t2i_R@{k}"] = 100.0 * np.mean(np.array(t2i_rank) < k)
    out["mR"] = float(np.mean([out[m] for m in out]))
    return out


def vsepp_lineage(sim: np.ndarray) -> dict[str, float]:
    """The VSE++/AMFMN computation (argsort per row, five captions per image in order)."""
    n = sim.shape[0]
    ranks = np.zeros(n)
    for i in range(n):
        inds = np.argsort(sim[i])[::-1]
        ranks[i] = min(np.where(inds == j)[0][0] for j in range(5 * i, 5 * i + 5))
    t_ranks = np.zeros(5 * n)
    for j in range(5 * n):
        inds = np.argsort(sim[:, j])[::-1]
        t_ranks[j] = np.where(inds == j // 5)[0][0]
    out = {f"i2t_R@{k}": 100.0 * np.mean(ranks < k) for k in (1, 5, 10)}
    out.update({f"t2i_R@{k}": 100.0 * np.mean(t_ranks < k) for k in (1, 5, 10)})
    return out


BACKENDS = ["numpy", "torch"]  # the CPU kernel and the accelerator kernel (run here on CPU)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_with_ties_and_duplicates(seed, backend):
    rng = np.random.default_rng(seed)
    n_img = 23
    owner = np.repeat(np.arange(n_img), 5)
    # Coarse scores force many exact ties; duplicated captions give identical columns.
    sim = rng.integers(0, 6, size=(n_img, len(owner))).astype(np.float32)
    sim[:, 7] = sim[:, 3]
    sim[:, 40] = sim[:, 12]
    got = retrieval_metrics(similarity=torch.from_numpy(sim), text_to_image=torch.from_numpy(owner), backend=backend, chunk=4)
    want = brute_force(sim, owner)
    for name in METRIC_NAMES:
        assert got[name] == pytest.approx(want[name], abs=1e-9), name
    assert got["ties_i2t"] > 0 and got["ties_t2i"] > 0


def test_embeddings_and_similarity_agree_and_uneven_caption_counts():
    rng = np.random.default_rng(3)
    owner = np.array([0, 0, 1, 2, 2, 2, 3, 1, 4, 4, 4, 4, 4])  # not in groups of five, not sorted
    img = torch.from_numpy(rng.normal(size=(5, 8)).astype(np.float32))
    txt = torch.from_numpy(rng.normal(size=(len(owner), 8)).astype(np.float32))
    a = retrieval_metrics(img, txt, torch.from_numpy(owner))
    b = retrieval_metrics(similarity=img @ txt.t(), text_to_image=owner.tolist())
    want = brute_force((img @ txt.t()).numpy(), owner)
    for name in METRIC_NAMES:
        assert a[name] == pytest.approx(want[name]) and b[name] == pytest.approx(want[name])


def test_equals_vsepp_lineage_without_ties():
    rng = np.random.default_rng(4)
    sim = rng.normal(size=(40, 200)).astype(np.float64)
    got = retrieval_metrics(similarity=torch.from_numpy(sim), text_to_image=torch.arange(200) // 5)
    want = vsepp_lineage(sim)
    assert got["ties_i2t"] == 0 and got["ties_t2i"] == 0
    for name, value in want.items():
        assert got[name] == pytest.approx(value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_tie_counts_against_the_query(backend):
    # One image, two captions: caption 1 belongs to image 1 but scores the same as image 0's own.
    sim = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    got = retrieval_metrics(similarity=sim, text_to_image=torch.tensor([0, 1]), ks=(1,), backend=backend)
    assert got["i2t_R@1"] == 50.0  # image 0's positive ties with a negative: rank 1, a miss at K=1
    assert got["ties_i2t"] == 1


def test_perfect_and_chunking():
    emb = torch.eye(12)
    owner = torch.arange(12)
    full = retrieval_metrics(emb, emb, owner)
    assert full["mR"] == 100.0
    rng = np.random.default_rng(5)
    sim = torch.from_numpy(rng.normal(size=(30, 90)).astype(np.float32))
    owner = torch.arange(90) // 3
    assert retrieval_metrics(similarity=sim, text_to_image=owner, chunk=7) == retrieval_metrics(similarity=sim, text_to_image=owner)


@pytest.mark.parametrize("seed", [0, 1])
def test_cpu_and_accelerator_kernels_agree_query_by_query(seed):
    """Both kernels give the same per-query ranks and tie counts, with many ties (a coarse score
    grid, duplicated caption columns, a duplicated image row) and uneven caption counts; the
    chunk sizes cut the images unevenly so that a tie lands in some chunks and not others."""
    rng = np.random.default_rng(seed)
    owner = torch.from_numpy(rng.permutation(np.repeat(np.arange(37), rng.integers(1, 7, 37))))
    sim = torch.from_numpy(rng.normal(size=(37, len(owner))).astype(np.float32))
    sim[:, 5] = sim[:, 2]
    sim[11] = sim[3]
    sim[20:25] = (sim[20:25] * 2).round() / 2
    runs = []
    for backend, chunk in (("numpy", 4), ("numpy", 32), ("numpy", 1000), ("torch", 5), ("torch", 1024)):
        ranks: dict[str, torch.Tensor] = {}
        metrics = retrieval_metrics(similarity=sim, text_to_image=owner, backend=backend, chunk=chunk, ranks=ranks)
        runs.append((metrics, ranks))
    first, first_ranks = runs[0]
    assert first["ties_i2t"] > 0 and first["ties_t2i"] > 0
    for metrics, ranks in runs[1:]:
        assert metrics == first
        assert torch.equal(ranks["i2t"], first_ranks["i2t"]) and torch.equal(ranks["t2i"], first_ranks["t2i"])
    with pytest.raises(ValueError, match="backend"):
        retrieval_metrics(similarity=sim, text_to_image=owner, backend="cuda")


def test_bad_mapping_is_refused():
    with pytest.raises(ValueError, match="at least one caption"):
        retrieval_metrics(similarity=torch.zeros(3, 2), text_to_image=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        retrieval_metrics(similarity=torch.zeros(2, 2), text_to_image=torch.tensor([0]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_tie_flags_mark_exactly_the_tied_queries(backend):
    """strict_ranks flags a query when a negative scores exactly its best positive (the queries a
    sort-based tie rule can rank differently); query_ranks counts the same flags."""
    rng = np.random.default_rng(6)
    owner = rng.permutation(np.repeat(np.arange(25), rng.integers(1, 7, 25)))
    sim = np.round(rng.random((25, len(owner))), 2).astype(np.float32)
    sim[:, 3] = sim[:, 0]
    best = np.array([sim[i, owner == i].max() for i in range(25)])
    want_i2t = np.array([np.any(sim[i, owner != i] == best[i]) for i in range(25)])
    want_t2i = np.array([np.any(np.delete(sim[:, j], owner[j]) == sim[owner[j], j]) for j in range(len(owner))])
    s, o = torch.from_numpy(sim), torch.from_numpy(owner)
    got = strict_ranks(s, o, chunk=4, backend=backend)
    assert np.array_equal(got.i2t_tied.cpu().numpy(), want_i2t) and np.array_equal(got.t2i_tied.cpu().numpy(), want_t2i)
    i2t, i2t_ties, t2i, t2i_ties = query_ranks(s, o, chunk=4, backend=backend)
    assert (i2t_ties, t2i_ties) == (int(want_i2t.sum()), int(want_t2i.sum()))
    assert 0 < i2t_ties < 25 and 0 < t2i_ties < len(owner)
    assert torch.equal(i2t, got.i2t) and torch.equal(t2i, got.t2i)
