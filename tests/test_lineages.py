"""The public evaluation codes' tie handling (rdbench.lineages) against their literal loop forms.

Each reference below is the per-query loop of that code, written out as it runs there (VSE++
``evaluation.i2t`` / ``t2i``, AMFMN ``utils.acc_i2t2`` / ``acc_t2i2``, ALBEF / PIR / HarMA
``Retrieval.itm_eval``, CLIP_benchmark ``zeroshot_retrieval.recall_at_k`` through ``batchify``),
so "equal" means: the same sort, the same order among equal scores, the same hits.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rdbench.evaluation import METRIC_NAMES, RECALL_KS, TIE_RULES, retrieval_metrics, strict_ranks
from rdbench.evaluation import lineage_metrics as evaluation_lineage_metrics
from rdbench.evaluation import lineage_metrics
from rdbench.lineages import LINEAGES, argsort_ranks, topk_hits

# -- the literal forms ------------------------------------------------------------------------


def vsepp_loop(sim: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """VSE++ i2t / t2i on a similarity matrix: captions 5i..5i+4 are image i's."""
    npts = sim.shape[0]
    ranks = np.zeros(npts)
    for index in range(npts):
        d = sim[index]
        inds = np.argsort(d)[::-1]
        rank = 1e20
        for i in range(5 * index, 5 * index + 5, 1):
            tmp = np.where(inds == i)[0][0]
            if tmp < rank:
                rank = tmp
        ranks[index] = rank
    t_ranks = np.zeros(5 * npts)
    for index in range(npts):
        d = sim.T[5 * index : 5 * index + 5]  # numpy.dot(queries, ims.T)
        inds = np.zeros(d.shape)
        for i in range(len(inds)):
            inds[i] = np.argsort(d[i])[::-1]
            t_ranks[5 * index + i] = np.where(inds[i] == index)[0][0]
    return ranks, t_ranks


def amfmn_loop(sim: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AMFMN acc_i2t2 / acc_t2i2 (the same rule, the caption-major transpose taken up front)."""
    image_size = sim.shape[0]
    ranks = np.zeros(image_size)
    for index in range(image_size):
        inds = np.argsort(sim[index])[::-1]
        rank = 1e20
        for i in range(5 * index, 5 * index + 5, 1):
            tmp = np.where(inds == i)[0][0]
            if tmp < rank:
                rank = tmp
        ranks[index] = rank
    t_ranks = np.zeros(5 * image_size)
    transposed = sim.T
    for index in range(image_size):
        for i in range(5):
            inds = np.argsort(transposed[5 * index + i])[::-1]
            t_ranks[5 * index + i] = np.where(inds == index)[0][0]
    return ranks, t_ranks


def itm_eval_loop(scores_i2t: np.ndarray, scores_t2i: np.ndarray, txt2img: dict, img2txt: dict) -> tuple[np.ndarray, np.ndarray]:
    """ALBEF / PIR / HarMA itm_eval's two rank loops."""
    ranks = np.zeros(scores_i2t.shape[0])
    for index, score in enumerate(scores_i2t):
        inds = np.argsort(score)[::-1]
        rank = 1e20
        for i in img2txt[index]:
            tmp = np.where(inds == i)[0][0]
            if tmp < rank:
                rank = tmp
        ranks[index] = rank
    t_ranks = np.zeros(scores_t2i.shape[0])
    for index, score in enumerate(scores_t2i):
        inds = np.argsort(score)[::-1]
        t_ranks[index] = np.where(inds == txt2img[index])[0][0]
    return ranks, t_ranks


def recall_at_k_literal(scores, positive_pairs, k):
    """CLIP_benchmark recall_at_k: one-hot top-k indices against the positive-pair matrix."""
    nb_texts, nb_images = scores.shape
    topk_indices = torch.topk(scores, k, dim=1)[1]
    nb_positive = positive_pairs.sum(dim=1)
    topk_indices_onehot = torch.nn.functional.one_hot(topk_indices, num_classes=nb_images)
    positive_pairs_reshaped = positive_pairs.view(nb_texts, 1, nb_images)
    nb_true_positive = (topk_indices_onehot * positive_pairs_reshaped).sum(dim=(1, 2))
    return nb_true_positive / nb_positive


def batchify_literal(func, X, Y, batch_size, device, *args, **kwargs):
    results = []
    for start in range(0, len(X), batch_size):
        end = start + batch_size
        x = X[start:end].to(device)
        y = Y[start:end].to(device)
        results.append(func(x, y, *args, **kwargs).cpu())
    return torch.cat(results)


def clip_benchmark_loop(sim: np.ndarray, owner: np.ndarray, ks=RECALL_KS, device="cpu", batch_size=64):
    """CLIP_benchmark evaluate's metric block: hits per k for (image queries, caption queries)."""
    scores = torch.from_numpy(np.ascontiguousarray(sim.T))  # texts_emb @ images_emb.t()
    positive_pairs = torch.zeros_like(scores, dtype=bool)
    positive_pairs[torch.arange(len(scores)), torch.from_numpy(owner)] = True
    image_retrieval, text_retrieval = {}, {}
    for k in ks:
        image_retrieval[k] = batchify_literal(recall_at_k_literal, scores, positive_pairs, batch_size, device, k=k) > 0
        text_retrieval[k] = batchify_literal(recall_at_k_literal, scores.T, positive_pairs.T, batch_size, device, k=k) > 0
    return text_retrieval, image_retrieval


def recalls_from_ranks(i2t: np.ndarray, t2i: np.ndarray, ks=RECALL_KS) -> dict[str, float]:
    out = {f"i2t_R@{k}": 100.0 * np.mean(i2t < k) for k in ks}
    out.update({f"t2i_R@{k}": 100.0 * np.mean(t2i < k) for k in ks})
    out["mR"] = float(np.mean(list(out.values())))
    return out


def recalls_from_hits(i2t: dict, t2i: dict, ks=RECALL_KS) -> dict[str, float]:
    """Percent from the hit counts (CLIP_benchmark's float32 ``.mean()`` differs below 1e-5)."""
    out = {f"i2t_R@{k}": 100.0 * i2t[k].double().mean().item() for k in ks}
    out.update({f"t2i_R@{k}": 100.0 * t2i[k].double().mean().item() for k in ks})
    out["mR"] = float(np.mean(list(out.values())))
    return out


# -- matrices ---------------------------------------------------------------------------------


def tied(rng: np.random.Generator, n_images: int, owner: np.ndarray, decimals: int) -> np.ndarray:
    """Scores on a coarse grid with duplicated caption columns and a duplicated image row."""
    sim = np.round(rng.random((n_images, len(owner))), decimals).astype(np.float32)
    for _ in range(max(1, len(owner) // 10)):  # a caption string repeated under another image
        a, b = rng.integers(0, len(owner), 2)
        sim[:, b] = sim[:, a]
    sim[1] = sim[0]
    return sim


def five_each(n_images: int) -> np.ndarray:
    return np.repeat(np.arange(n_images), 5)


def uneven(rng: np.random.Generator, n_images: int) -> np.ndarray:
    """1 to 7 captions per image, in a shuffled caption order."""
    return rng.permutation(np.repeat(np.arange(n_images), rng.integers(1, 8, n_images)))


def maps(owner: np.ndarray) -> tuple[dict, dict]:
    txt2img = {j: int(i) for j, i in enumerate(owner)}
    img2txt: dict[int, list[int]] = {}
    for j, i in enumerate(owner):
        img2txt.setdefault(int(i), []).append(j)
    return txt2img, img2txt


def metrics(sim: np.ndarray, owner: np.ndarray, rule: str, ranks: dict | None = None, **kw) -> dict[str, float]:
    return retrieval_metrics(similarity=torch.from_numpy(sim), text_to_image=torch.from_numpy(owner), tie_rule=rule,
                             ranks=ranks, **kw)


def assert_recalls(got: dict, want: dict) -> None:
    for name in METRIC_NAMES:
        assert got[name] == pytest.approx(want[name], abs=1e-9), name


# 1-2 decimals: nearly every query tied; 3 decimals: a mix of tied and untied queries.
CASES = [(seed, decimals) for seed in (0, 1, 2) for decimals in (1, 2, 3)]

# -- each lineage against its loop --------------------------------------------------------------


@pytest.mark.parametrize("seed,decimals", CASES)
def test_vsepp_equals_its_loop_with_heavy_ties(seed, decimals):
    rng = np.random.default_rng(seed)
    n = 70
    owner = five_each(n)
    sim = tied(rng, n, owner, decimals)
    ranks: dict[str, torch.Tensor] = {}
    got = metrics(sim, owner, "vsepp", ranks)
    wide = sim.astype(np.float64)  # these codes keep their scores in float64 arrays
    want_i2t, want_t2i = vsepp_loop(wide)
    assert np.array_equal(ranks["i2t"].numpy(), want_i2t) and np.array_equal(ranks["t2i"].numpy(), want_t2i)
    assert np.array_equal(want_i2t, amfmn_loop(wide)[0]) and np.array_equal(want_t2i, amfmn_loop(wide)[1])
    assert_recalls(got, recalls_from_ranks(want_i2t, want_t2i))
    assert got["ties_i2t"] > 0 and got["ties_t2i"] > 0  # the strict counts, reported under any rule
    assert got["ties_i2t"] == metrics(sim, owner, "strict")["ties_i2t"]


@pytest.mark.parametrize("seed,decimals", CASES)
def test_pir_equals_itm_eval_with_heavy_ties_and_uneven_captions(seed, decimals):
    rng = np.random.default_rng(10 + seed)
    n = 60
    owner = uneven(rng, n)
    sim = tied(rng, n, owner, decimals)
    txt2img, img2txt = maps(owner)
    want_i2t, want_t2i = itm_eval_loop(sim, sim.T, txt2img, img2txt)  # scores_t2i: the transposed view
    ranks: dict[str, torch.Tensor] = {}
    got = metrics(sim, owner, "pir", ranks)
    assert np.array_equal(ranks["i2t"].numpy(), want_i2t) and np.array_equal(ranks["t2i"].numpy(), want_t2i)
    assert_recalls(got, recalls_from_ranks(want_i2t, want_t2i))
    # a contiguous copy of the transpose (HarMA's .contiguous() under DDP) sorts the same
    assert np.array_equal(itm_eval_loop(sim, np.ascontiguousarray(sim.T), txt2img, img2txt)[1], want_t2i)


@pytest.mark.parametrize("seed,decimals", CASES)
def test_clip_benchmark_equals_batched_recall_at_k_with_heavy_ties(seed, decimals):
    rng = np.random.default_rng(20 + seed)
    n = 150  # several batches of 64 in both directions, the last one short
    owner = uneven(rng, n)
    sim = tied(rng, n, owner, decimals)
    want_i2t, want_t2i = clip_benchmark_loop(sim, owner)
    ranks: dict[str, torch.Tensor] = {}
    got = metrics(sim, owner, "clip_benchmark", ranks)
    for k in RECALL_KS:
        assert torch.equal(ranks[f"i2t@{k}"], want_i2t[k]) and torch.equal(ranks[f"t2i@{k}"], want_t2i[k]), k
    assert "i2t" not in ranks  # CLIP_benchmark has hits, no ranks
    assert_recalls(got, recalls_from_hits(want_i2t, want_t2i))


def test_vsepp_on_uneven_captions_is_the_itm_eval_rule():
    """rdbench applies VSE++'s rule through the caption -> image map: with other than five
    captions per image it is itm_eval's loop."""
    rng = np.random.default_rng(30)
    owner = uneven(rng, 40)
    sim = tied(rng, 40, owner, 1)
    wide = sim.astype(np.float64)
    want = recalls_from_ranks(*itm_eval_loop(wide, wide.T, *maps(owner)))
    assert_recalls(metrics(sim, owner, "vsepp"), want)


@pytest.mark.parametrize("decimals", [1, 3])
@pytest.mark.parametrize("block", [1, 7, 256])
def test_argsort_blocks_and_the_strict_shortcut_do_not_change_ranks(block, decimals):
    """Sorting every query, or only those strict flags as tied, gives the loop's ranks."""
    rng = np.random.default_rng(31)
    owner = uneven(rng, 33)
    sim = tied(rng, 33, owner, decimals)
    want_i2t, want_t2i = itm_eval_loop(sim, sim.T, *maps(owner))
    s, o = torch.from_numpy(sim), torch.from_numpy(owner)
    for strict in (None, strict_ranks(s, o)):
        i2t, t2i = argsort_ranks(s, o, strict=strict, block=block)
        assert np.array_equal(i2t.numpy(), want_i2t) and np.array_equal(t2i.numpy(), want_t2i)
        wide = sim.astype(np.float64)
        i2t, t2i = argsort_ranks(s, o, dtype=np.float64, strict=strict, block=block)
        assert [np.array_equal(a.numpy(), b) for a, b in zip((i2t, t2i), itm_eval_loop(wide, wide.T, *maps(owner)))] == [True, True]


@pytest.mark.parametrize("decimals", [1, 3])
@pytest.mark.parametrize("batch_size", [1, 5, 64, 1000])
def test_topk_batches_follow_batchify(batch_size, decimals):
    rng = np.random.default_rng(32)
    owner = uneven(rng, 50)
    sim = tied(rng, 50, owner, decimals)
    want_i2t, want_t2i = clip_benchmark_loop(sim, owner, batch_size=batch_size)
    s, o = torch.from_numpy(sim), torch.from_numpy(owner)
    for strict in (None, strict_ranks(s, o)):
        i2t, t2i = topk_hits(s, o, RECALL_KS, strict=strict, batch_size=batch_size)
        for k in RECALL_KS:
            assert torch.equal(i2t[k], want_i2t[k]) and torch.equal(t2i[k], want_t2i[k])


def test_nan_scores_are_sorted_as_the_public_codes_sort_them():
    """argsort and topk put NaN above every score (the top of the reversed order); strict ignores
    it, so the shortcut through strict's tie flags is not taken."""
    rng = np.random.default_rng(34)
    owner = uneven(rng, 30)
    sim = rng.normal(size=(30, len(owner))).astype(np.float32)
    sim[owner, np.arange(len(owner))] += 10.0  # every positive on top: NaN alone moves a rank
    negative = np.flatnonzero(owner != 3)[0]
    sim[3, negative] = np.nan  # image 3's row and that caption's column
    sim[12, :5] = np.nan
    want_i2t, want_t2i = itm_eval_loop(sim, sim.T, *maps(owner))
    ranks: dict[str, torch.Tensor] = {}
    assert_recalls(metrics(sim, owner, "pir", ranks), recalls_from_ranks(want_i2t, want_t2i))
    assert np.array_equal(ranks["i2t"].numpy(), want_i2t) and np.array_equal(ranks["t2i"].numpy(), want_t2i)
    assert want_i2t[3] == 1
    want_hits = clip_benchmark_loop(sim, owner)
    assert_recalls(metrics(sim, owner, "clip_benchmark"), recalls_from_hits(*want_hits))
    assert not want_hits[0][1][3]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an accelerator")
def test_clip_benchmark_on_an_accelerator_follows_its_device_topk():
    rng = np.random.default_rng(33)
    owner = uneven(rng, 150)
    sim = tied(rng, 150, owner, 1)
    want_i2t, want_t2i = clip_benchmark_loop(sim, owner, device="cuda")
    ranks: dict[str, torch.Tensor] = {}
    got = retrieval_metrics(similarity=torch.from_numpy(sim).cuda(), text_to_image=torch.from_numpy(owner).cuda(),
                            tie_rule="clip_benchmark", ranks=ranks)
    for k in RECALL_KS:
        assert torch.equal(ranks[f"i2t@{k}"], want_i2t[k]) and torch.equal(ranks[f"t2i@{k}"], want_t2i[k]), k
    assert_recalls(got, recalls_from_hits(want_i2t, want_t2i))


# -- the rules side by side ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_without_ties_all_four_rules_agree(seed):
    rng = np.random.default_rng(40 + seed)
    for owner in (five_each(80), uneven(rng, 80)):
        sim = rng.normal(size=(80, len(owner))).astype(np.float32)
        strict = metrics(sim, owner, "strict")
        assert strict["ties_i2t"] == 0 and strict["ties_t2i"] == 0
        for rule in LINEAGES:
            assert metrics(sim, owner, rule) == strict, rule
        assert_recalls(strict, recalls_from_ranks(*itm_eval_loop(sim, sim.T, *maps(owner))))
        assert_recalls(strict, recalls_from_hits(*clip_benchmark_loop(sim, owner)))


@pytest.mark.parametrize("seed", [0, 1])
def test_strict_never_counts_more_hits_than_a_lineage(seed):
    """A tie counts against the query under strict, so a strict hit is a hit under every lineage."""
    rng = np.random.default_rng(50 + seed)
    owner = uneven(rng, 90)
    sim = tied(rng, 90, owner, 1)
    strict: dict[str, torch.Tensor] = {}
    metrics(sim, owner, "strict", strict)
    by_sort: dict[str, torch.Tensor] = {}
    metrics(sim, owner, "pir", by_sort)
    assert bool((by_sort["i2t"] <= strict["i2t"]).all()) and bool((by_sort["t2i"] <= strict["t2i"]).all())
    hits: dict[str, torch.Tensor] = {}
    metrics(sim, owner, "clip_benchmark", hits)
    for k in RECALL_KS:
        assert bool(hits[f"i2t@{k}"][strict["i2t"] < k].all()) and bool(hits[f"t2i@{k}"][strict["t2i"] < k].all())
    assert metrics(sim, owner, "pir")["mR"] > metrics(sim, owner, "strict")["mR"]


def test_strict_is_the_default_and_unchanged():
    rng = np.random.default_rng(60)
    owner = uneven(rng, 30)
    sim = torch.from_numpy(tied(rng, 30, owner, 1))
    default: dict[str, torch.Tensor] = {}
    strict: dict[str, torch.Tensor] = {}
    a = retrieval_metrics(similarity=sim, text_to_image=owner.tolist(), ranks=default)
    b = retrieval_metrics(similarity=sim, text_to_image=owner.tolist(), ranks=strict, tie_rule="strict")
    assert a == b and set(default) == {"i2t", "t2i"}
    assert torch.equal(default["i2t"], strict["i2t"]) and torch.equal(default["t2i"], strict["t2i"])
    assert TIE_RULES[0] == "strict" and set(TIE_RULES[1:]) == set(LINEAGES)


def test_unknown_tie_rule_names_the_choices():
    with pytest.raises(ValueError, match="strict, vsepp, pir, clip_benchmark"):
        retrieval_metrics(similarity=torch.zeros(2, 2), text_to_image=[0, 1], tie_rule="albef")


def test_lineage_metrics_gives_each_rule_from_one_matrix():
    rng = np.random.default_rng(70)
    owner = uneven(rng, 70)
    sim = tied(rng, 70, owner, 1)
    table = lineage_metrics(torch.from_numpy(sim), torch.from_numpy(owner))
    assert set(table) == set(LINEAGES) and evaluation_lineage_metrics is lineage_metrics
    for rule, values in table.items():
        assert set(values) == set(METRIC_NAMES)
        full = metrics(sim, owner, rule)
        assert values == {name: full[name] for name in METRIC_NAMES}, rule
    with pytest.raises(ValueError, match="at least one caption"):
        lineage_metrics(torch.zeros(3, 2), [0, 1])


def test_a_cutoff_above_the_candidates_takes_them_all():
    """torch.topk would refuse k > candidates; every rule then counts every query as a hit."""
    rng = np.random.default_rng(80)
    owner = five_each(4)
    sim = tied(rng, 4, owner, 1)
    for rule in TIE_RULES:
        got = metrics(sim, owner, rule)
        assert got["t2i_R@5"] == got["t2i_R@10"] == 100.0, rule


@pytest.mark.parametrize("rule", LINEAGES)
def test_the_accelerator_kernel_of_strict_gives_the_same_lineage(rule):
    """The lineages start from strict's tie flags, which either strict kernel gives."""
    rng = np.random.default_rng(90)
    owner = uneven(rng, 70)
    sim = tied(rng, 70, owner, 2)
    a: dict[str, torch.Tensor] = {}
    b: dict[str, torch.Tensor] = {}
    assert metrics(sim, owner, rule, a, backend="numpy", chunk=5) == metrics(sim, owner, rule, b, backend="torch", chunk=9)
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_each_code_scores_the_embeddings_its_own_way():
    """From embeddings, each lineage reads the matrix its code forms (VSE++: float64 image . text;
    ALBEF/PIR: float32 image @ text.T; CLIP_benchmark: float32 text @ image.T, transposed)."""
    g = torch.Generator().manual_seed(3)
    images = torch.nn.functional.normalize(torch.randn(12, 16, generator=g), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(60, 16, generator=g), dim=-1)
    texts[1::5] = texts[0::5]  # duplicated captions: exact ties under every code
    owner = torch.arange(60) // 5
    got = lineage_metrics(None, owner, image_emb=images, text_emb=texts)
    own = {"vsepp": images.double() @ texts.double().t(), "pir": images @ texts.t(), "clip_benchmark": (texts @ images.t()).t()}
    for rule, matrix in own.items():
        expected = retrieval_metrics(similarity=matrix.double() if rule == "vsepp" else matrix, text_to_image=owner, tie_rule=rule)
        assert got[rule] == {k: expected[k] for k in got[rule]}, rule
