"""``rdbench report``: a results page generated from records, with generated sentences only."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess

import pytest
from compare_records import ranked_record, ranks_hitting, with_search, write

from rdbench.cli import main
from rdbench.results.report import code_commit, report

LRS = [{"optimizer.lr": v} for v in (1e-4, 3e-4, 1e-3, 3e-3)]


def results(root):
    """``ablation``: ``baseline`` hits half the queries, ``better`` all of them (chosen lr=1e-3
    among 4), ``near`` one caption more than the baseline (a null result); ``baselines``:
    ``zero-shot`` and ``full``, with no run named ``baseline``."""
    for seed in (0, 1):
        half = ranks_hitting(20, 100, 10, 50)
        write(root, ranked_record("ablation", "baseline", 0, seed, half), ranks=half)
        full = ranks_hitting(20, 100, 20, 100)
        record = ranked_record("ablation", "better", 1, seed, full)
        write(root, with_search(record, {"optimizer.lr": 1e-3}, LRS, [40.0, 41.0, 42.0, None]), ranks=full)
        near = ranks_hitting(20, 100, 10, 51 - seed)
        write(root, ranked_record("ablation", "near", 2, seed, near), ranks=near)
        write(root, ranked_record("baselines", "zero-shot", 0, seed, half), ranks=half)
        write(root, ranked_record("baselines", "full", 1, seed, full), ranks=full)
    return root


def test_report_from_records(tmp_path, capsys):
    root = results(tmp_path / "results")
    out = tmp_path / "docs" / "results.md"
    assert main(["report", str(root), "--out", str(out), "--baseline", "baselines=zero-shot"]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Results\n") and "## ablation" in text and "## baselines" in text
    # The comparison table, in Markdown, with its statistics notes.
    assert "| method   |   seeds |" in text and "| better   |" in text and "+50.00\\* |" in text
    assert "after Holm correction over the 14 tests of this table" in text
    assert re.search(r"^- Minimum detectable mR difference at 80 % power: \d+\.\d\d points\.$", text, re.M)
    assert "B = 5,600 resamples, scaled to the 14 tests of this table" in text
    # Chosen hyper-parameters: the column, the budget note and each candidate's score.
    assert re.search(r"^\| better .*\| lr=1e-3 +\|$", text, re.M)
    assert "chosen on val/mR among 4 candidates per method (grid) at seed 0, never on test" in text
    assert ("- `better`: lr=1e-3; chosen on val/mR among 4 candidates (grid) at seed 0, 120 s: "
            "lr=1e-4: val/mR 40.00; lr=3e-4: val/mR 41.00; lr=1e-3: val/mR 42.00 (chosen); "
            "lr=3e-3: no score (failed).") in text
    # One generated sentence per row: a significant result and a null result stated as such.
    assert re.search(r"^- `better`: mR \+50\.00 points against `baseline` \(95% CI \+\d+\.\d\d to \+\d+\.\d\d\), "
                     r"significant after Holm correction over the 14 tests of this table \(adjusted p = "
                     r"0\.\d{3}\): higher than `baseline`\.$", text, re.M)
    null = re.search(r"^- `near`: mR \+0\.25 points against `baseline` \(95% CI [-+]\d+\.\d\d to \+\d+\.\d\d\), "
                     r"not significant after Holm correction over the 14 tests of this table \(adjusted p = "
                     r"1\.000\): no detectable difference from `baseline` at this power \(MDD (\d+\.\d\d) points\)\.$",
                     text, re.M)
    assert null and float(null.group(1)) > 0
    assert ("Of 2 rows compared with `baseline`, 2 had their mR tested: 1 significantly higher, "
            "0 significantly lower after Holm correction, 1 with no detectable difference") in text
    # The baselines suite against the run named on the command line.
    assert "- Baseline: `zero-shot` (given with --baseline baselines=zero-shot)." in text
    assert "- `full`: mR +50.00 points against `zero-shot`" in text
    # Provenance: commit, dataset fingerprint, counts; figures only on request.
    assert re.search(r"^- Code: commit `([0-9a-f]{40}(-dirty)?|unknown)`", text, re.M)
    assert "- Dataset: dataset/synthetic-rs, fingerprint `fp-aaaa` (6 records)." in text
    assert "- Runs: 3; successful seeds: 6 (2 per run); failed seeds: 0; unfinished: 0." in text
    assert text.count("Figures") == 1 and "- Figures: not drawn (`rdbench report --figures DIR` draws them)." in text
    # Deterministic: the same records give the same page (the commit line aside: another
    # process may change the checkout's tracked files between the two calls).
    assert main(["report", str(root), "--out", "-", "--baseline", "baselines=zero-shot"]) == 0
    code = re.compile(r"^- Code: .*$", re.M)
    assert code.sub("", capsys.readouterr().out) == code.sub("", text)


def test_suites_baselines_and_figures(tmp_path, capsys):
    root = results(tmp_path / "results")
    out = tmp_path / "docs" / "results.md"
    if importlib.util.find_spec("matplotlib") is not None:
        result = report(root, suites=["ablation"], out=out, figures=tmp_path / "docs" / "figs")
        assert "## baselines" not in result.text
        assert "![ablation: pareto](figs/ablation-pareto.png)" in result.text
        assert (tmp_path / "docs" / "figs" / "ablation-recall.png").is_file()
    result = report(root, suites=["baselines"])
    assert ("No baseline for this suite (no run named `baseline`; `--baseline baselines=RUN` names one): "
            "the table gives means only, with no Δ and no test.") in result.text
    # A bare RUN applies to every suite that has it.
    assert "- `full`: mR +50.00 points against `zero-shot`" in report(root, baselines=["zero-shot"]).text


@pytest.mark.parametrize("command", ["report", "compare"])
def test_without_matplotlib_figures_asked_for_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys, command):
    """The attack: ``rdbench compare results/ --plot figs/`` in an install without matplotlib
    ended in a ModuleNotFoundError traceback. Now one line names the extra, exit 2, and nothing
    is written. (matplotlib is a default dependency; an install made with --no-deps lacks it.)"""
    import importlib.util as util

    root = results(tmp_path / "results")
    real = util.find_spec
    monkeypatch.setattr(util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    figs, out = tmp_path / "figs", tmp_path / "page.md"
    args = (["report", str(root), "--figures", str(figs), "--out", str(out)] if command == "report"
            else ["compare", str(root), "--plot", str(figs), "--output", str(out), "--format", "markdown"])
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    flag = "--figures" if command == "report" else "--plot"
    assert err == [f"rdbench: {flag} needs matplotlib, which is not installed here: pip install 'rdbench[plot]'"]
    assert not figs.exists() and not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--suite", "nope"], "rdbench: --suite: no records for suite 'nope' (suites found: ablation, baselines)"),
    (["--baseline", "nope=x"], "rdbench: --baseline: no suite 'nope' in this report (suites: ablation, baselines)"),
    (["--baseline", "ablation=nope"], "rdbench: --baseline: suite 'ablation' has no run 'nope' (runs: baseline, better, near)"),
    (["--baseline", "ablation="], "rdbench: --baseline: 'ablation=' is not SUITE=RUN"),
    (["--baseline", "nope"], "rdbench: --baseline: no suite has a run 'nope'"),
])
def test_bad_arguments_are_one_line(tmp_path, capsys, args, message):
    root = results(tmp_path / "results")
    assert main(["report", str(root), "--out", str(tmp_path / "r.md"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), err
    assert not (tmp_path / "r.md").exists()


def test_a_folder_without_records_exits_2_with_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty), "--out", str(tmp_path / "r.md")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"rdbench: {empty}: no usable record.json found"]
    assert main(["report", str(tmp_path / "absent"), "--out", "-"]) == 2
    assert capsys.readouterr().err.strip() == f"rdbench: {tmp_path / 'absent'}: results folder does not exist"


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_code_commit(tmp_path):
    assert code_commit(tmp_path) == "unknown"  # not a checkout
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results.md").write_text("old\n")
    subprocess.run([*git, "add", "."], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "c"], cwd=tmp_path, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert code_commit(tmp_path) == head
    (tmp_path / "results.md").write_text("new\n")  # the page being regenerated does not count
    assert code_commit(tmp_path, generated=[tmp_path / "results.md"]) == head
    assert code_commit(tmp_path) == head + "-dirty"
    (tmp_path / "code.py").write_text("x = 2\n")
    assert code_commit(tmp_path, generated=[tmp_path / "results.md"]) == head + "-dirty"


def test_documented():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    doc = " ".join((root / "docs" / "compare.md").read_text(encoding="utf-8").split())
    for text in ("rdbench report", "--baseline SUITE=RUN", "--figures DIR", "What the table shows",
                 "_p_holm", "max(1000, ⌈20 m/α⌉)", "`cost_s`"):
        assert text in doc, text
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert "rdbench report RESULTS_DIR [--suite S ...] [--baseline SUITE=RUN ...]" in readme
