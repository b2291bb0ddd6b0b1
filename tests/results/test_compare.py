"""Tests for rdbench.results.compare on small hand-written record sets (no training involved)."""

from __future__ import annotations

import io
import statistics

import polars as pl
import pytest
from compare_records import make_record, write

from rdbench.errors import RdbenchError
from rdbench.results.cells import human_count
from rdbench.results.compare import compare, load_records, summarize


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


def line_of(text, run):
    return next(ln for ln in text.splitlines() if ln.startswith(run + " "))


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
    assert (full["seeds"], full["failed"], full["incomplete"]) == (2, 0, 0)
    assert (full["trainable_params"], full["backbone_params"]) == (1_050_000, 151_280_000)
    assert full["test/i2t_R@1_mean"] == pytest.approx(12.0)
    assert full["test/i2t_R@1_std"] == pytest.approx(statistics.stdev([11.0, 13.0]))
    assert full["val/mR_mean"] == pytest.approx(13.5)
    assert full["test/mR_mean"] == pytest.approx(14.5)
    assert full["train_time_s_mean"] == pytest.approx(2.0)  # 1.5 + seed
    lora = row_of(summary, "lora")
    assert lora["test/t2i_R@10_mean"] == pytest.approx(26.5)
    assert lora["test/t2i_R@10_std"] == pytest.approx(statistics.stdev([26.0, 27.0]))

    result = compare(results)
    assert result.warnings == [] and result.notes == [] and result.files == []
    text = result.text
    assert text.startswith("quick\n")
    assert "1.05M (0.69%)" in line_of(text, "full") and "12.00 ± 1.41" in line_of(text, "full")
    assert "0.01M (<0.01%)" in line_of(text, "lora") and "26.50 ± 0.71" in line_of(text, "lora")
    assert text.index("lora") < text.index("full")
    assert "Mean ± std over 2 seeds" in text


EXPECTED_TABLE = """\
quick

method      seeds    failed       trainable       I2T R@1       I2T R@5      I2T R@10       T2I R@1       T2I R@5      T2I R@10            mR
--------  -------  --------  --------------  ------------  ------------  ------------  ------------  ------------  ------------  ------------
lora            2         0  0.01M (<0.01%)  21.50 ± 0.71  22.50 ± 0.71  23.50 ± 0.71  24.50 ± 0.71  25.50 ± 0.71  26.50 ± 0.71  24.00 ± 0.71
full            2         0   1.05M (0.69%)  12.00 ± 1.41  13.00 ± 1.41  14.00 ± 1.41  15.00 ± 1.41  16.00 ± 1.41  17.00 ± 1.41  14.50 ± 1.41

Mean ± std over 2 seeds (successful seeds only); recalls in %.
Measured by rdbench on dataset/synthetic-rs (fingerprint fp-aaaa), backbone/tiny-rs.
"""

# Baseline lora: every delta is 12.00 - 21.50 = -9.50; no test_ranks.json, so no bootstrap.
EXPECTED_MARKDOWN = """\
### quick

| method   |   seeds |   failed |      trainable |      I2T R@1 |     Δ |      I2T R@5 |     Δ |     I2T R@10 |     Δ |      T2I R@1 |     Δ |      T2I R@5 |     Δ |     T2I R@10 |     Δ |           mR |     Δ |
|----------|---------|----------|----------------|--------------|-------|--------------|-------|--------------|-------|--------------|-------|--------------|-------|--------------|-------|--------------|-------|
| lora     |       2 |        0 | 0.01M (<0.01%) | 21.50 ± 0.71 |       | 22.50 ± 0.71 |       | 23.50 ± 0.71 |       | 24.50 ± 0.71 |       | 25.50 ± 0.71 |       | 26.50 ± 0.71 |       | 24.00 ± 0.71 |       |
| full     |       2 |        0 |  1.05M (0.69%) | 12.00 ± 1.41 | -9.50 | 13.00 ± 1.41 | -9.50 | 14.00 ± 1.41 | -9.50 | 15.00 ± 1.41 | -9.50 | 16.00 ± 1.41 | -9.50 | 17.00 ± 1.41 | -9.50 | 14.50 ± 1.41 | -9.50 |

- Mean ± std over 2 seeds (successful seeds only); recalls in %.
- Δ: row mean minus lora mean; \\* significant at 95%.
- Not tested, per-query ranks unavailable: full (I2T R@1, I2T R@5, I2T R@10, T2I R@1, T2I R@5, T2I R@10, mR).
- Measured by rdbench on dataset/synthetic-rs (fingerprint fp-aaaa), backbone/tiny-rs.
"""

EXPECTED_LATEX_ROWS = r"""
\begin{tabular}{lrrrrrrrrrrrrrrr}
\toprule
Method & Trainable & I2T R@1 & $\Delta$ & I2T R@5 & $\Delta$ & I2T R@10 & $\Delta$ & T2I R@1 & $\Delta$ & T2I R@5 & $\Delta$ & T2I R@10 & $\Delta$ & mR & $\Delta$ \\
\midrule
lora & 0.01M ($<$0.01\%) & \textbf{21.50}{\scriptsize $\pm$ 0.71} &  & \textbf{22.50}{\scriptsize $\pm$ 0.71} &  & \textbf{23.50}{\scriptsize $\pm$ 0.71} &  & \textbf{24.50}{\scriptsize $\pm$ 0.71} &  & \textbf{25.50}{\scriptsize $\pm$ 0.71} &  & \textbf{26.50}{\scriptsize $\pm$ 0.71} &  & \textbf{24.00}{\scriptsize $\pm$ 0.71} &  \\
full & 1.05M (0.69\%) & \underline{12.00}{\scriptsize $\pm$ 1.41} & -9.50 & \underline{13.00}{\scriptsize $\pm$ 1.41} & -9.50 & \underline{14.00}{\scriptsize $\pm$ 1.41} & -9.50 & \underline{15.00}{\scriptsize $\pm$ 1.41} & -9.50 & \underline{16.00}{\scriptsize $\pm$ 1.41} & -9.50 & \underline{17.00}{\scriptsize $\pm$ 1.41} & -9.50 & \underline{14.50}{\scriptsize $\pm$ 1.41} & -9.50 \\
\bottomrule
\end{tabular}
"""


def test_expected_terminal_table(results):
    assert compare(results).text == EXPECTED_TABLE


def test_expected_markdown_with_baseline(results):
    assert compare(results, fmt="markdown", baseline="lora").text == EXPECTED_MARKDOWN


def test_expected_latex_with_baseline(results):
    text = compare(results, fmt="latex", baseline="lora").text
    assert EXPECTED_LATEX_ROWS in text
    assert r"$\Delta$: row mean minus lora mean; $^*$ significant at 95\%.\par" in text


def test_failed_and_unfinished_seeds_counted_not_averaged(results):
    write(results, make_record("quick", "full", 2, 2, base=90.0, status="failed"))
    write(results, make_record("quick", "lora", 1, 2, status="failed"))
    write(results, make_record("quick", "lora", 1, 3, base=70.0, status="running"))
    summary = summarize(load_records(results)[0])
    full = row_of(summary, "full")
    assert (full["seeds"], full["failed"], full["incomplete"]) == (2, 1, 0)
    assert full["test/i2t_R@1_mean"] == pytest.approx(12.0)  # the failed 91.0 is ignored
    lora = row_of(summary, "lora")
    assert (lora["seeds"], lora["failed"], lora["incomplete"]) == (2, 1, 1)
    assert lora["test/i2t_R@1_mean"] == pytest.approx(21.5)  # the running 71.0 is ignored
    text = compare(results).text
    assert line_of(text, "lora").split()[:4] == ["lora", "2", "1", "1"]
    assert "Failed seeds, counted but not averaged: lora 1, full 1." in text
    assert "Unfinished seeds (status neither success nor failed): lora 1." in text


def test_single_seed_std_is_zero(tmp_path):
    write(tmp_path, make_record("s", "only", 1, 0, base=5.0))
    row = row_of(summarize(load_records(tmp_path)[0]), "only")
    assert row["test/mR_std"] == 0.0
    text = compare(tmp_path).text
    # One seed has no spread to show: the mean alone (test/mR: mean of 6..11), and the note says so.
    assert "8.50" in line_of(text, "only") and "±" not in line_of(text, "only")
    assert "Mean over 1 seed (successful seeds only; no std)" in text


def test_all_seeds_failed_still_listed(results):
    for seed in (0, 1):
        write(results, make_record("quick", "broken", 3, seed, status="failed", trainable=None))
    broken = row_of(summarize(load_records(results)[0]), "broken")
    assert (broken["seeds"], broken["failed"]) == (0, 2)
    assert broken["test/mR_mean"] is None and broken["test/mR_std"] is None
    line = line_of(compare(results, baseline="lora").text, "broken")
    assert line.split() == ["broken", "0", "2"]
    assert "±" not in line


def test_corrupt_and_foreign_records_warned_and_skipped(results):
    bad = results / "quick" / "full" / "seed9" / "record.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    partial = write(results, {"schema_version": 1, "suite": "quick", "run": "full", "seed": 3})
    future = write(results, {**make_record("quick", "full", 2, 4, base=50.0), "schema_version": 3})
    df, warnings = load_records(results)
    assert df.height == 4
    assert len(warnings) == 3
    assert any(str(bad) in w and "JSON" in w for w in warnings)
    assert any(str(partial) in w and "run_index" in w for w in warnings)
    assert any(str(future) in w and "schema_version" in w for w in warnings)
    result = compare(results)
    assert "12.00 ± 1.41" in result.text and len(result.warnings) == 3


def test_mixed_fingerprints_and_datasets_not_averaged(results):
    write(results, make_record("quick", "full", 2, 2, base=40.0, fingerprint="fp-bbbbbbbbbb"))
    write(results, make_record("quick", "lora", 1, 2, base=60.0, dataset="dataset/rsicd"))
    summary = summarize(load_records(results)[0])
    assert summary.height == 4
    assert row_of(summary, "full [dataset/synthetic-rs@fp-aaaa]")["seeds"] == 2
    other = row_of(summary, "full [dataset/synthetic-rs@fp-bbbbb]")
    assert (other["seeds"], other["test/i2t_R@1_mean"]) == (1, 41.0)
    assert row_of(summary, "lora [dataset/rsicd]")["test/i2t_R@1_mean"] == 61.0
    result = compare(results)
    assert any("quick/full" in w and "2 separate rows" in w for w in result.warnings)
    assert any("quick/lora" in w for w in result.warnings)


def test_failed_seed_without_provenance_joins_its_run(results):
    record = make_record("quick", "full", 2, 2, status="failed")
    del record["provenance"]
    write(results, record)
    summary = summarize(load_records(results)[0])
    assert summary.height == 2
    assert (row_of(summary, "full")["seeds"], row_of(summary, "full")["failed"]) == (2, 1)


def test_csv_keeps_numbers_apart(results, tmp_path):
    text = compare(results, fmt="csv").text
    back = pl.read_csv(io.StringIO(text))
    assert back["run"].to_list() == ["lora", "full"]
    assert back["published"].to_list() == [False, False]
    full = back.row(1, named=True)
    assert (full["seeds"], full["failed"], full["trainable_params"]) == (2, 0, 1_050_000)
    assert full["test/i2t_R@1_mean"] == pytest.approx(12.0)
    assert full["test/i2t_R@1_std"] == pytest.approx(statistics.stdev([11.0, 13.0]))
    assert full["val/mR_mean"] == pytest.approx(13.5)  # every averaged value, not only shown ones
    assert not any("±" in c for c in back.columns)
    out = tmp_path / "out" / "table.csv"
    result = compare(results, fmt="csv", output=out)
    assert result.files == [out] and pl.read_csv(out).equals(back)


def test_parquet_needs_output_and_round_trips(results, tmp_path):
    with pytest.raises(RdbenchError, match="parquet: needs --output"):
        compare(results, fmt="parquet")
    out = tmp_path / "t.parquet"
    result = compare(results, fmt="parquet", output=out, baseline="full")
    assert result.text == f"wrote {out}\n"
    back = pl.read_parquet(out)
    assert back["run"].to_list() == ["lora", "full"]
    assert back["test/mR_delta"].to_list()[0] == pytest.approx(9.5)
    assert back["test/mR_mean"].to_list() == pytest.approx([24.0, 14.5])


def test_unknown_format_and_column(results):
    with pytest.raises(RdbenchError, match="table, markdown, latex, html, csv, parquet"):
        compare(results, fmt="xlsx")
    with pytest.raises(RdbenchError, match=r"--columns: unknown column 'nope' \(available: .*val/mR"):
        compare(results, columns=["nope"])
    with pytest.raises(RdbenchError, match="--baseline: no run 'nope'"):
        compare(results, baseline="nope")


def test_columns_pick_costs_validation_and_losses(tmp_path):
    for seed in (0, 1):
        write(tmp_path, make_record("s", "a", 1, seed, base=10.0, losses={"infonce": 0.5 + seed, "dtcl": 0.25}))
    text = compare(tmp_path, columns=["mR", "val/mR", "train_time_s", "peak_mem_bytes",
                                      "total_params", "train/loss/infonce"]).text
    header = text.splitlines()[2]
    for name in ("mR", "val mR", "train time (s)", "peak mem (GiB)", "total params", "loss/infonce"):
        assert name in header
    assert "I2T R@1" not in header and "trainable" not in header
    line = line_of(text, "a")
    # test mR 13.5 (11..16), val mR 12.5 (10..15), time 1.5/2.5 s, memory 1/2 GiB, loss 0.5/1.5
    cells = ["13.50 ± 0.00", "12.50 ± 0.00", "2.0 ± 0.7", "1.50 ± 0.71", "151.28M", "1.0000 ± 0.7071"]
    assert [c.strip() for c in line.split("  ") if c.strip()][3:] == cells


def test_suite_filter(results):
    write(results, make_record("other", "zero", 1, 0, base=1.0))
    text = compare(results).text
    assert "other" in text and "quick" in text
    text = compare(results, suite="other").text
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


def test_share_of_the_backbone_uses_the_recorded_backbone_size(tmp_path):
    """A suite where every run adds parameters (an ablation): the share is of the recorded
    backbone size, not of the smallest total; records without the field keep the fallback."""
    for run, index, trainable in (("baseline", 0, 70_000), ("cmaa", 1, 110_000)):
        record = make_record("abl", run, index, 0, base=10.0, trainable=trainable, total=8_000_000 + trainable)
        record["cost"]["backbone_params"] = 8_000_000
        write(tmp_path, record)
    summary = summarize(load_records(tmp_path)[0])
    assert row_of(summary, "baseline")["backbone_params"] == 8_000_000
    text = compare(tmp_path).text
    assert "0.11M (1.38%)" in line_of(text, "cmaa")  # 110,000 / 8,000,000; the fallback gives 1.36%
    old = tmp_path / "old"
    write(old, make_record("abl", "cmaa", 1, 0, base=10.0, trainable=110_000, total=8_070_000))
    assert "0.11M (1.36%)" in line_of(compare(old).text, "cmaa")
