"""Tests for rdbench.results.compare on small hand-written record sets (no training involved)."""

from __future__ import annotations

import io
import json
import statistics

import polars as pl
import pytest

from rdbench.errors import RdbenchError
from rdbench.results.compare import (
    compare, human_count, load_records, render, summarize,
)

RECALLS = ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10"]


def make_record(suite, run, run_index, seed, base=None, status="success", fingerprint="fp-aaaa",
                backbone="backbone/tiny-rs", trainable=1_050_000):
    """A schema-1 record; every metric of split s is ``base + offset`` so means are predictable."""
    metrics = {}
    if base is not None:
        for split, shift in (("val", 0.0), ("test", 1.0)):
            values = [base + shift + i for i in range(6)]
            metrics.update({f"{split}/{name}": v for name, v in zip(RECALLS, values)})
            metrics[f"{split}/mR"] = sum(values) / 6
    return {
        "schema_version": 1, "suite": suite, "run": run, "run_index": run_index, "seed": seed,
        "status": status, "error": None if status == "success" else "CUDA out of memory",
        "started_at": "2025-01-01T00:00:00+00:00", "finished_at": "2025-01-01T00:01:00+00:00",
        "components": {
            "adapter": {"key": f"adapter/{run}", "class_path": "x.Y", "init_args": {},
                        "source": "builtin"},
            "backbone": {"key": backbone}, "dataset": {"key": "dataset/synthetic-rs"},
        },
        "metrics": metrics,
        "cost": {"trainable_params": trainable, "total_params": 151_280_000,
                 "train_time_s": 1.5, "peak_mem_bytes": 789},
        "provenance": {"packages": {}, "code_version": "abc",
                       "dataset": {"key": "dataset/synthetic-rs", "fingerprint": fingerprint},
                       "backbone": {"key": backbone, "checksum": "c"}},
    }


def write(root, record, name=None):
    run_dir = root / record["suite"] / (name or record["run"])
    path = run_dir / f"seed{record['seed']}" / "record.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


@pytest.fixture
def results(tmp_path):
    """Two runs x two seeds: ``full`` (bases 10, 12) listed second, ``lora`` (20, 21) first."""
    write(tmp_path, make_record("quick", "full", 2, 0, base=10.0))
    write(tmp_path, make_record("quick", "full", 2, 1, base=12.0))
    write(tmp_path, make_record("quick", "lora", 1, 0, base=20.0, trainable=12_300))
    write(tmp_path, make_record("quick", "lora", 1, 1, base=21.0, trainable=12_300))
    return tmp_path


def row_of(summary, run):
    rows = summary.filter(pl.col("run") == run).to_dicts()
    assert len(rows) == 1, rows
    return rows[0]


def test_load_records_flattens(results):
    df, warnings = load_records(results)
    assert warnings == []
    assert df.height == 4
    assert df["run"].to_list() == ["lora", "lora", "full", "full"]  # suite-file order
    first = df.row(0, named=True)
    assert first["adapter"] == "adapter/lora"
    assert first["dataset"] == "dataset/synthetic-rs" and first["dataset_fingerprint"] == "fp-aaaa"
    assert first["backbone"] == "backbone/tiny-rs" and first["trainable_params"] == 12_300
    assert first["test/i2t_R@1"] == 21.0 and first["val/t2i_R@10"] == 25.0


def test_two_runs_exact_means_and_stds(results):
    summary = summarize(load_records(results)[0])
    assert summary["run"].to_list() == ["lora", "full"]
    full = row_of(summary, "full")
    assert (full["seeds"], full["failed"], full["trainable_params"]) == (2, 0, 1_050_000)
    assert full["test/i2t_R@1_mean"] == pytest.approx(12.0)
    assert full["test/i2t_R@1_std"] == pytest.approx(statistics.stdev([11.0, 13.0]))
    assert full["val/mR_mean"] == pytest.approx(13.5)
    assert full["test/mR_mean"] == pytest.approx(14.5)
    lora = row_of(summary, "lora")
    assert lora["test/t2i_R@10_mean"] == pytest.approx(26.5)
    assert lora["test/t2i_R@10_std"] == pytest.approx(statistics.stdev([26.0, 27.0]))

    text, warnings = compare(results)
    assert warnings == []
    assert text.startswith("quick\n")
    line = next(ln for ln in text.splitlines() if ln.startswith("full"))
    assert "1.05M" in line and "12.00 ± 1.41" in line and "13.50 ± 1.41" in line
    line = next(ln for ln in text.splitlines() if ln.startswith("lora"))
    assert "12.3K" in line and "26.50 ± 0.71" in line
    assert text.index("lora") < text.index("full")


def test_failed_seed_counted_not_averaged(results):
    write(results, make_record("quick", "full", 2, 2, base=90.0, status="failed"))
    write(results, make_record("quick", "lora", 1, 2, status="failed"))
    summary = summarize(load_records(results)[0])
    full = row_of(summary, "full")
    assert (full["seeds"], full["failed"]) == (2, 1)
    assert full["test/i2t_R@1_mean"] == pytest.approx(12.0)  # the failed 91.0 is ignored
    assert (row_of(summary, "lora")["seeds"], row_of(summary, "lora")["failed"]) == (2, 1)


def test_single_seed_std_is_zero(tmp_path):
    write(tmp_path, make_record("s", "only", 1, 0, base=5.0))
    row = row_of(summarize(load_records(tmp_path)[0]), "only")
    assert row["test/mR_std"] == 0.0
    assert "8.50 ± 0.00" in compare(tmp_path)[0]  # test/mR: mean of 6..11


def test_all_seeds_failed_still_listed(results):
    for seed in (0, 1):
        write(results, make_record("quick", "broken", 3, seed, status="failed", trainable=None))
    summary = summarize(load_records(results)[0])
    broken = row_of(summary, "broken")
    assert (broken["seeds"], broken["failed"]) == (0, 2)
    assert broken["test/mR_mean"] is None and broken["test/mR_std"] is None
    line = next(ln for ln in compare(results)[0].splitlines() if ln.startswith("broken"))
    assert line.split() == ["broken", "0", "2"]
    assert "±" not in line


def test_corrupt_and_foreign_records_warned_and_skipped(results):
    bad = results / "quick" / "full" / "seed9" / "record.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    partial = write(results, {"schema_version": 1, "suite": "quick", "run": "full", "seed": 3})
    future = write(results, {**make_record("quick", "full", 2, 4, base=50.0), "schema_version": 2})
    df, warnings = load_records(results)
    assert df.height == 4
    assert len(warnings) == 3
    assert any(str(bad) in w and "JSON" in w for w in warnings)
    assert any(str(partial) in w and "run_index" in w for w in warnings)
    assert any(str(future) in w and "schema_version" in w for w in warnings)
    text, warnings = compare(results)
    assert "12.00 ± 1.41" in text and len(warnings) == 3


def test_mixed_fingerprints_not_averaged(results):
    write(results, make_record("quick", "full", 2, 2, base=40.0, fingerprint="fp-bbbbbbbbbb"))
    summary = summarize(load_records(results)[0])
    assert summary.height == 3
    assert row_of(summary, "full [dataset/synthetic-rs@fp-aaaa]")["seeds"] == 2
    other = row_of(summary, "full [dataset/synthetic-rs@fp-bbbbb]")
    assert (other["seeds"], other["test/i2t_R@1_mean"]) == (1, 41.0)
    text, warnings = compare(results)
    assert "quick/full" in warnings[0] and "2 separate rows" in warnings[0]


def test_failed_seed_without_provenance_joins_its_run(results):
    record = make_record("quick", "full", 2, 2, status="failed")
    del record["provenance"]
    write(results, record)
    summary = summarize(load_records(results)[0])
    assert summary.height == 2
    assert (row_of(summary, "full")["seeds"], row_of(summary, "full")["failed"]) == (2, 1)


def test_formats(results):
    summary = summarize(load_records(results)[0])
    markdown = render(summary, "markdown")
    assert "### quick" in markdown
    header, rule = markdown.splitlines()[2:4]
    assert header.startswith("| run ") and "I2T R@1 |" in header and rule.startswith("|---")
    latex = render(summary, "latex")
    assert r"\toprule" in latex and r"$\pm$" in latex and "±" not in latex
    assert r"12.00 $\pm$ 1.41" in latex
    table = render(summary, "table")
    assert "I2T R@10" in table and "T2I R@1" in table and "test mR" in table

    back = pl.read_csv(io.StringIO(render(summary, "csv")))
    assert back["run"].to_list() == ["lora", "full"]
    for col in ["seeds", "failed", "trainable_params", "test/i2t_R@1_mean", "test/i2t_R@1_std",
                "val/mR_mean", "test/mR_std"]:
        assert back[col].to_list() == pytest.approx(summary[col].to_list())
    assert not any("±" in c for c in back.columns)

    with pytest.raises(RdbenchError, match="table, markdown, latex, csv"):
        render(summary, "html")
    with pytest.raises(RdbenchError, match="csv"):
        compare(results, fmt="xlsx")


def test_suite_filter(results):
    write(results, make_record("other", "zero", 1, 0, base=1.0))
    text, _ = compare(results)
    assert "other" in text and "quick" in text
    text, _ = compare(results, suite="other")
    assert text.startswith("other\n") and "quick" not in text and "lora" not in text
    df, _ = load_records(results, suite="quick")
    assert set(df["suite"]) == {"quick"}
    with pytest.raises(RdbenchError, match=r"'nope'.*other, quick"):
        compare(results, suite="nope")


def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(RdbenchError, match="does not exist"):
        compare(tmp_path / "absent")
    with pytest.raises(RdbenchError, match=str(tmp_path)):
        compare(tmp_path)
    (tmp_path / "s" / "r" / "seed0").mkdir(parents=True)
    (tmp_path / "s" / "r" / "seed0" / "record.json").write_text("")
    with pytest.raises(RdbenchError, match="no usable record"):
        load_records(tmp_path)


def test_duplicate_seed_kept_once(results):
    copy = make_record("quick", "full", 2, 0, base=10.0)
    copy["finished_at"] = "2024-01-01T00:00:00+00:00"
    write(results / "machine-b", copy)
    df, warnings = load_records(results)
    assert df.height == 4 and "duplicate" in warnings[0] and "machine-b" in warnings[0]


@pytest.mark.parametrize("n, text", [(0, "0"), (950, "950"), (12_300, "12.3K"),
                                     (1_050_000, "1.05M"), (151_280_000, "151.28M"),
                                     (999_960, "1.00M"), (None, "")])
def test_human_count(n, text):
    assert human_count(n) == text
