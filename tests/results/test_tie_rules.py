"""compare under the public evaluation codes' tie handling: ``--tie-rule`` and ``--references``
set beside rdbench's rows recomputed under each published table's code."""

from __future__ import annotations

from compare_records import make_record, write

from rdbench.cli import main

LINEAGE_SHIFT = {"vsepp": 2.0, "pir": 3.0, "clip_benchmark": 4.0}
RECALLS = ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10"]


def with_lineages(record: dict) -> dict:
    """Add test@<lineage>/... metrics: the strict test values shifted by a known amount."""
    for rule, shift in LINEAGE_SHIFT.items():
        for name in [*RECALLS, "mR"]:
            record["metrics"][f"test@{rule}/{name}"] = record["metrics"][f"test/{name}"] + shift
    return record


def rsitmd_results(tmp_path, lineages=True):
    for seed in (0, 1):
        for run, index, base in (("zero-shot", 0, 10.0), ("rdb", 1, 20.0)):
            record = make_record("paper-rsitmd", run, index, seed, base=base + seed, dataset="dataset/rsitmd")
            write(tmp_path, with_lineages(record) if lineages else record)
    return tmp_path


def table_lines(out: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in out.splitlines() if line and not line.startswith(("-", "method"))}


def test_tie_rule_switches_the_test_columns(tmp_path, capsys):
    results = rsitmd_results(tmp_path)
    assert main(["compare", str(results), "--columns", "test/mR"]) == 0
    strict = table_lines(capsys.readouterr().out)
    assert main(["compare", str(results), "--columns", "test/mR", "--tie-rule", "pir"]) == 0
    out = capsys.readouterr().out
    pir = table_lines(out)
    # rdb's strict test mR is the mean over seeds of base + 1 + 2.5 = 24.0; pir adds 3
    assert strict["rdb"][3] == "24.00" and pir["rdb"][3] == "27.00"
    assert "under the pir evaluation code's tie handling" in out


def test_an_unknown_tie_rule_is_one_line(tmp_path, capsys):
    assert main(["compare", str(rsitmd_results(tmp_path)), "--tie-rule", "albef"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["rdbench: --tie-rule: unknown rule 'albef'; choose from strict, vsepp, pir, clip_benchmark"]


def test_records_without_lineage_metrics_leave_cells_empty_and_say_so(tmp_path, capsys):
    assert main(["compare", str(rsitmd_results(tmp_path, lineages=False)), "--tie-rule", "vsepp"]) == 0
    captured = capsys.readouterr()
    assert "4 successful record(s) hold no test recalls under the vsepp rule" in captured.err


def test_references_stand_beside_rows_under_their_own_evaluation_code(tmp_path, capsys):
    assert main(["compare", str(rsitmd_results(tmp_path)), "--references", "--columns", "test/mR"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    # PE-RSITR's rows come from the VSE++ code, GeoRSCLIP's and RemoteCLIP's from CLIP_benchmark's
    def at(prefix: str) -> int:
        return next(i for i, line in enumerate(lines) if line.startswith(prefix))

    under_vsepp, under_clip = at("rdb [vsepp eval]"), at("rdb [clip_benchmark eval]")
    # each group: rdbench's recomputed rows, then the published rows of that code, adjacent
    assert at("Zero-shot CLIP‡") == under_vsepp + 1 and at("CLIP ViT-B/32 zero-shot†") == under_clip + 1
    # the recomputed row carries the lineage's numbers: strict 24.0 + 2 (vsepp) and + 4 (clip_benchmark)
    assert "26.00" in lines[under_vsepp] and "28.00" in lines[under_clip]
    assert not any(line.startswith("rdb [pir eval]") for line in lines)  # no published table used it
    assert "([clip_benchmark eval], [vsepp eval];" in out and "keep rdbench's strict tie rule" in out
    assert "evaluated with the vsepp code" in out and "evaluated with the clip_benchmark code" in out


def test_recomputed_rows_are_not_marked_published_in_frames(tmp_path, capsys):
    out = tmp_path / "t.csv"
    assert main(["compare", str(rsitmd_results(tmp_path / "r")), "--references", "--format", "csv", "--output", str(out)]) == 0
    import polars as pl

    frame = pl.read_csv(out)
    mine = frame.filter(pl.col("run") == "rdb [vsepp eval]")
    assert mine.height == 1 and mine["published"][0] is False and mine["lineage"][0] == "vsepp"
    assert frame.filter(pl.col("published"))["lineage"].null_count() == frame.filter(pl.col("published")).height
