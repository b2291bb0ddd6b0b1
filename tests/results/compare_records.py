"""Writers of hand-made records and ``test_ranks.json`` files for the compare tests.

The numbers are chosen so every expected mean, std and delta can be checked by hand: a run's
test recalls at seed base b are b+1 .. b+6 (I2T R@1/5/10, T2I R@1/5/10), validation ones b .. b+5.
"""

from __future__ import annotations

import json

RECALLS = ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10"]


def make_record(suite, run, run_index, seed, base=None, status="success", fingerprint="fp-aaaa",
                backbone="backbone/tiny-rs", trainable=1_050_000, dataset="dataset/synthetic-rs",
                total=151_280_000, losses=None):
    """A schema-1 record; every metric of split s is ``base + offset`` so means are predictable."""
    metrics = {}
    if base is not None:
        for split, shift in (("val", 0.0), ("test", 1.0)):
            values = [base + shift + i for i in range(6)]
            metrics.update({f"{split}/{name}": v for name, v in zip(RECALLS, values)})
            metrics[f"{split}/mR"] = sum(values) / 6
    train = {}
    if losses is not None:
        train = {"train/loss": sum(losses.values()), "epochs": 3, "steps": 30}
        train |= {f"train/loss/{k}": v for k, v in losses.items()}
        train |= {f"train/weight/{k}": 1.0 for k in losses}
    return {
        "schema_version": 1, "suite": suite, "run": run, "run_index": run_index, "seed": seed,
        "status": status, "error": None if status == "success" else "CUDA out of memory",
        "started_at": "2025-01-01T00:00:00+00:00", "finished_at": "2025-01-01T00:01:00+00:00",
        "components": {
            "adapter": {"key": f"adapter/{run}", "class_path": "x.Y", "init_args": {},
                        "source": "builtin"},
            "backbone": {"key": backbone}, "dataset": {"key": dataset},
        },
        "metrics": metrics,
        "train": train,
        "cost": {"trainable_params": trainable, "total_params": total,
                 "train_time_s": 1.5 + seed, "peak_mem_bytes": 2 ** 30 * (seed + 1)},
        "provenance": {"packages": {}, "code_version": "abc",
                       "dataset": {"key": dataset, "fingerprint": fingerprint},
                       "backbone": {"key": backbone, "checksum": "c"}},
    }


def write(root, record, name=None, ranks=None):
    """Write ``record`` (and ``ranks`` = (i2t, t2i) lists as test_ranks.json) under ``root``."""
    run_dir = root / record["suite"] / (name or record["run"])
    path = run_dir / f"seed{record['seed']}" / "record.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    if ranks is not None:
        i2t, t2i = ranks
        (path.parent / "test_ranks.json").write_text(
            json.dumps({"split": "test", "i2t": list(i2t), "t2i": list(t2i)}))
    return path


def ranks_hitting(n_images, n_captions, hit_images, hit_captions, miss_rank=50):
    """Ranks where the first ``hit_*`` queries rank first (0) and the rest rank ``miss_rank``."""
    return ([0 if i < hit_images else miss_rank for i in range(n_images)],
            [0 if i < hit_captions else miss_rank for i in range(n_captions)])


def recalls_of(ranks) -> dict[str, float]:
    """The test metrics that a set of ranks implies (what a record would say beside them)."""
    out = {}
    for name, values in zip(("i2t", "t2i"), ranks):
        for k in (1, 5, 10):
            out[f"test/{name}_R@{k}"] = 100.0 * sum(r < k for r in values) / len(values)
    out["test/mR"] = sum(out.values()) / 6
    return out


def ranked_record(suite, run, run_index, seed, ranks, **kw):
    """A successful record whose test metrics agree with ``ranks``."""
    record = make_record(suite, run, run_index, seed, base=0.0, **kw)
    record["metrics"].update(recalls_of(ranks))
    return record


def two_seed_suite(tmp_path):
    """Suite ``s`` at seeds 0 and 1 with per-query ranks: ``base`` hits half the queries,
    ``good`` all of them, ``same`` exactly what ``base`` hits."""
    for seed in (0, 1):
        base = ranks_hitting(40, 200, 20, 100)
        write(tmp_path, ranked_record("s", "base", 1, seed, base), ranks=base)
        good = ranks_hitting(40, 200, 40, 200)
        write(tmp_path, ranked_record("s", "good", 2, seed, good), ranks=good)
        write(tmp_path, ranked_record("s", "same", 3, seed, base), ranks=base)


def with_search(record, chosen, values=None, scores=None, metric="val/mR", method="grid",
                seeds=(0,), cost_s=120.0):
    """``record`` with a hyper-parameter search in its ``selection`` (as a suite's ``select:``
    slot writes it): candidates ``values`` (default: just ``chosen``) scored ``scores`` (None:
    the candidate failed; default 40, 41, ...), the chosen values and the search's cost."""
    values = values or [chosen]
    scores = scores if scores is not None else [40.0 + i for i in range(len(values))]
    record["selection"] = {
        "monitor": "val/mR", "best_score": 42.0, "checkpoint": "checkpoints/best.ckpt",
        "metric": metric, "method": method, "seeds": list(seeds), "chosen": dict(chosen),
        "candidates": [{"values": dict(v), "score": s, "status": "success" if s is not None else "failed"}
                       for v, s in zip(values, scores)],
        "cost_s": cost_s,
    }
    return record
