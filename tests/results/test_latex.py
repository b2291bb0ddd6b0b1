"""LaTeX output: structure, escaping, best/second-best marks, and a real pdflatex run if installed."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from compare_records import make_record, ranked_record, ranks_hitting, write

from rdbench.results.compare import compare
from rdbench.results.render_latex import tex

PDFLATEX = shutil.which("pdflatex")


@pytest.fixture
def suite(tmp_path):
    """rsitmd suite: a_x (mR 13.5), b&c (23.5), d%e (18.5), tie (23.5), one failed seed; 2 seeds each."""
    for seed in (0, 1):
        for index, (run, base) in enumerate([("a_x", 10.0), ("b&c", 20.0), ("d%e", 15.0), ("tie", 20.0)]):
            ranks = ranks_hitting(20, 100, int(base), int(base) * 5)
            record = ranked_record("paper_1", run, index, seed, ranks, dataset="dataset/rsitmd",
                                   trainable=160_000 * (index + 1))
            for k, v in make_record("x", "y", 0, 0, base=base)["metrics"].items():
                record["metrics"][k] = v
            write(tmp_path, record, name=f"run{index}", ranks=ranks)
    write(tmp_path, make_record("paper_1", "a_x", 0, 5, status="failed", dataset="dataset/rsitmd"),
          name="run0")
    return tmp_path


def tabular_of(text):
    body = text.split(r"\begin{tabular}{", 1)[1].split(r"\end{tabular}", 1)[0]
    spec, rows = body.split("}\n", 1)
    return spec, rows


def check_structure(text):
    """What must hold for the table to compile: balanced braces and environments, rules, columns."""
    depth = 0
    for ch in re.sub(r"\\[{}]", "", text):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0
    for env in ("table", "tabular", "minipage"):
        assert text.count(rf"\begin{{{env}}}") == text.count(rf"\end{{{env}}}") == 1
    assert len(re.findall(r"(?<!\\)\$", text)) % 2 == 0  # math mode opened and closed
    spec, rows = tabular_of(text)
    rule_lines = [ln for ln in rows.splitlines() if ln.startswith("\\") and "rule" in ln]
    assert rule_lines[0] == r"\toprule" and rule_lines[-1] == r"\bottomrule" and r"\midrule" in rule_lines
    data = [ln for ln in rows.splitlines() if ln and ln not in rule_lines]
    cells = []
    for line in data:
        assert line.endswith(r" \\")
        cells.append([c.strip() for c in re.split(r"(?<!\\)&", line.removesuffix(r" \\"))])
        assert len(cells[-1]) == len(spec), line
    return spec, cells[1:]  # the header row is checked like the others, then dropped


def test_latex_structure_escaping_and_ranks(suite):
    result = compare(suite, fmt="latex", baseline="a_x", references=["pe-rsitr"])
    text = result.text
    spec, data = check_structure(text)
    assert spec == "l" + "r" * 15  # method, trainable, 7 metrics with 7 deltas
    rows = {cells[0]: cells for cells in data}
    assert {r"a\_x", r"b\&c", r"d\%e", "tie"} <= set(rows)
    assert r"\label{tab:rdbench-paper-1}" in text and r"suite \texttt{paper\_1}" in text
    # mR column (index 14): b&c and tie tie for best, d%e second, a_x plain.
    assert rows[r"b\&c"][14].startswith(r"\textbf{23.50}") and rows["tie"][14].startswith(r"\textbf{23.50}")
    assert rows[r"d\%e"][14].startswith(r"\underline{18.50}")
    assert rows[r"a\_x"][14].startswith("13.50{")
    assert rows[r"b\&c"][1] == r"0.32M (0.21\%)"
    # Published rows: marked, never bold, no delta; the best published mR (44.47) is not bold.
    hmmc = rows[r"MRS-Adapter + HMMC\textsuperscript{\dag}"]
    assert hmmc[14] == "44.47" and hmmc[15] == "" and not any(r"\textbf" in c for c in hmmc)
    assert hmmc[2:4] == ["23.67", ""] and hmmc[1] == "0.16M"
    # Deltas use the two-level bootstrap (per-query ranks exist) and the notes say so.
    assert rows[r"b\&c"][15] == "+10.00$^*$"
    assert r"Test for b\&c, d\%e, tie: two-level bootstrap over seeds and test queries" in text
    assert r"Failed seeds, counted but not averaged: a\_x 1." in text
    assert r"\textsuperscript{\dag} Published, not rerun: Yuan, Zhan and Xiong" in text
    body = "\n".join(ln for ln in text.splitlines() if not ln.startswith("%"))  # comments may say paper_1
    assert "_" not in body.replace(r"\_", "")


def test_lower_is_better_for_costs(tmp_path):
    for run, seconds in (("fast", 1.0), ("mid", 2.0), ("slow", 3.0)):
        record = make_record("s", run, 0, 0, base=10.0)
        record["cost"]["train_time_s"] = seconds
        write(tmp_path, record)
    text = compare(tmp_path, fmt="latex", columns=["train_time_s"]).text
    _, data = check_structure(text)
    assert [cells[1].split("{\\scriptsize")[0] for cells in data] == [
        r"\textbf{1.0}", r"\underline{2.0}", "3.0"]


def test_tex_escape():
    assert tex("a_b & 5% #1 {x} ~^ \\") == (
        r"a\_b \& 5\% \#1 \{x\} \textasciitilde{}\textasciicircum{} \textbackslash{}")
    assert tex("± Δ †") == r"$\pm$ $\Delta$ \textsuperscript{\dag}"


@pytest.mark.slow  # a pdflatex subprocess
@pytest.mark.skipif(PDFLATEX is None, reason="pdflatex is not installed")
def test_latex_compiles_in_a_minimal_document(suite, tmp_path):
    text = compare(suite, fmt="latex", baseline="a_x", references=True).text
    doc = tmp_path / "doc.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
                   + text + "\n\\end{document}\n")
    run = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", doc.name],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout[-2000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000
    log = (tmp_path / "doc.log").read_text(errors="replace")
    assert "Undefined control sequence" not in log and "Missing" not in log
