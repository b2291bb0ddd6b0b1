"""``rdbench compare`` on the command line: flags, stdout/stderr split, one-line errors."""

from __future__ import annotations

import polars as pl
from compare_records import make_record, ranked_record, ranks_hitting, write

from rdbench.cli import main


def make_results(root):
    for seed in (0, 1):
        base_ranks = ranks_hitting(10, 50, 5, 25)
        write(root, ranked_record("ablation", "baseline", 1, seed, base_ranks, trainable=0), ranks=base_ranks)
        ours = ranks_hitting(10, 50, 10, 50)
        write(root, ranked_record("ablation", "ours", 2, seed, ours, trainable=160_000), ranks=ours)
    write(root, make_record("ablation", "ours", 2, 2, status="failed"))
    (root / "ablation" / "ours" / "seed3").mkdir(parents=True)
    (root / "ablation" / "ours" / "seed3" / "record.json").write_text("{truncated")
    return root


def test_documented_example_command(tmp_path, capsys):
    results = make_results(tmp_path / "results")
    figs = tmp_path / "figs"
    code = main(["compare", str(results), "--suite", "ablation", "--baseline", "baseline",
                 "--format", "latex", "--plot", str(figs)])
    out, err = capsys.readouterr()
    assert code == 0
    assert out.startswith("% rdbench compare, suite ablation") and out.rstrip().endswith(r"\end{table}")
    assert r"+50.00$^*$" in out and "two-level bootstrap" in out
    assert "seed3/record.json: not readable as JSON" in err
    assert sorted(p.name for p in figs.iterdir()) == ["ablation-ablation.png", "ablation-pareto.png",
                                                      "ablation-recall.png"]
    assert f"wrote {figs / 'ablation-pareto.png'}" in err and "wrote" not in out


def test_columns_references_and_outputs(tmp_path, capsys):
    results = make_results(tmp_path / "results")
    assert main(["compare", str(results), "--columns", "mR,train_time_s", "--references"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[2].split() == ["method", "seeds", "failed", "mR", "train", "time", "(s)"]
    assert "ours" in out and "1" == [ln for ln in out.splitlines() if ln.startswith("ours ")][0].split()[2]
    assert "note: suite 'ablation' uses dataset/synthetic-rs; published rows exist only" in err
    parquet = tmp_path / "t.parquet"
    assert main(["compare", str(results), "--format", "parquet", "--output", str(parquet),
                 "--baseline", "baseline"]) == 0
    assert capsys.readouterr().out == f"wrote {parquet}\n"
    assert pl.read_parquet(parquet)["run"].to_list() == ["baseline", "ours"]
    assert main(["compare", str(results), "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("suite,run,base_run,published")


def test_user_errors_are_one_line(tmp_path, capsys):
    results = make_results(tmp_path / "results")
    for args, message in (
        (["--format", "parquet"], "rdbench: --format parquet: needs --output FILE (parquet is binary)"),
        (["--baseline", "nope"], "rdbench: --baseline: no run 'nope' in the records (runs: baseline, ours)"),
        (["--columns", "bogus"], "rdbench: --columns: unknown column 'bogus'"),
        (["--format", "docx"], "rdbench: --format: unknown format 'docx'"),
        (["--bootstrap", "0", "--baseline", "baseline"], "rdbench: --bootstrap: needs a positive number"),
    ):
        assert main(["compare", str(results), *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith(message), (args, err)
    assert main(["compare", str(tmp_path / "absent")]) == 2
    assert capsys.readouterr().err.strip() == f"rdbench: {tmp_path / 'absent'}: results folder does not exist"


def test_bootstrap_flags_change_the_resamples(tmp_path, capsys):
    results = make_results(tmp_path / "results")
    runs = []
    for seed in ("1", "1", "2"):
        main(["compare", str(results), "--format", "csv", "--baseline", "baseline",
              "--bootstrap", "200", "--bootstrap-seed", seed, "--columns", "mR"])
        runs.append(capsys.readouterr().out)
    assert runs[0] == runs[1] and runs[0] != runs[2]
    assert "test/mR_ci_low" in runs[0].splitlines()[0]
