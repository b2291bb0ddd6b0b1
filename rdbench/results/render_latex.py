"""LaTeX (booktabs) rendering of a suite table, ready to paste into a paper.

The output is a complete ``table`` float that compiles with only ``\\usepackage{booktabs}``:
names are escaped (run names are full of underscores), the best value of each metric column is
bold and the second best underlined, and the notes under the tabular say how many seeds each
mean covers, which significance test produced each asterisk and where published rows come from.
Ranking covers rdbench's own rows only: published rows were measured elsewhere, under other
seeds and code, and a bold number must mean "best under identical conditions".
"""

from __future__ import annotations

import re

from rdbench.results.cells import delta_text

_TEX = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    # Math-mode forms: the text commands need fonts that a minimal pdflatex install lacks.
    "<": r"$<$", ">": r"$>$", "|": r"$|$",
    "±": r"$\pm$", "Δ": r"$\Delta$", "α": r"$\alpha$", "≥": r"$\geq$", "—": "---", "–": "--",
    "†": r"\textsuperscript{\dag}", "‡": r"\textsuperscript{\ddag}", "§": r"\textsuperscript{\S}",
    "¶": r"\textsuperscript{\P}", "‖": r"\textsuperscript{$\|$}", "⋄": r"\textsuperscript{$\diamond$}",
}


def tex(text: str) -> str:
    """Escape plain text for LaTeX, turning rdbench's symbols (±, Δ, †) into commands."""
    return "".join(_TEX.get(ch, ch) for ch in str(text))


def _ranks(table) -> dict[tuple[int, str], str]:
    """(row index, column key) -> "best" or "second" among measured rows, by displayed value.

    Ranking the displayed (rounded) text means two cells that print the same are tied, as a
    reader would judge them.
    """
    out = {}
    for c in table.value_columns:
        if c.better is None:
            continue
        shown = {i: float(c.text(r.values[c.key][0])) for i, r in enumerate(table.rows)
                 if r.values[c.key][0] is not None}
        order = sorted(set(shown.values()), reverse=c.better == "high")
        for i, value in shown.items():
            if value == order[0]:
                out[(i, c.key)] = "best"
            elif len(order) > 1 and value == order[1]:
                out[(i, c.key)] = "second"
    return out


def _cell(column, mean, std, rank: str | None) -> str:
    if mean is None:
        return ""
    value = column.text(mean)
    value = {"best": rf"\textbf{{{value}}}", "second": rf"\underline{{{value}}}"}.get(rank, value)
    if std is None or column.count:
        return value
    return rf"{value}{{\scriptsize $\pm$ {column.text(std)}}}"


def _note(text: str) -> str:
    # The significance star is a superscript in print, as in most papers.
    return tex(text).replace("*", "$^*$")


def render_latex(table) -> str:
    """One booktabs ``table`` environment for a :class:`~rdbench.results.tables.SuiteTable`."""
    deltas = table.baseline is not None
    headers = ["Method"]
    for c in table.columns:
        headers.append("Trainable" if c.key == "trainable" else tex(c.header))
        if deltas and c.key != "trainable":
            headers.append(r"$\Delta$")
    ranks = _ranks(table)
    body: list[list[str]] = []
    for i, row in enumerate(table.rows + table.published):
        measured = i < len(table.rows)
        line = [tex(row.shown_label)]
        for c in table.columns:
            if c.key == "trainable":
                line.append(tex(row.trainable))
                continue
            mean, std = row.values[c.key]
            line.append(_cell(c, mean, std, ranks.get((i, c.key)) if measured else None))
            if deltas:
                line.append(delta_text(c, row.deltas.get(c.key), "$^*$"))
        if table.show_chosen:
            line.append(tex(row.chosen))
        body.append(line)
    if table.show_chosen:
        headers.append("Chosen")
    n = len(headers)
    lines = [
        f"% rdbench compare, suite {table.suite}; needs \\usepackage{{booktabs}}",
        r"\begin{table}[ht]",
        r"\centering",
        r"\caption{Retrieval on the test split, suite \texttt{" + tex(table.suite) + "}: "
        + r"recall in \%, mean $\pm$ std over seeds. Best value in bold, second best underlined "
        + r"(rdbench rows only)."
        + (r" $\Delta$: difference to \texttt{" + tex(table.baseline) + r"}; $^*$ significant at "
           r"95\% (test named in the notes)." if deltas else "")
        + (" Published rows are marked and not rerun." if table.published else "") + "}",
        r"\label{tab:rdbench-" + re.sub(r"[^A-Za-z0-9-]+", "-", table.suite) + "}",
        r"\small",
        r"\setlength{\tabcolsep}{4pt}",
        r"\begin{tabular}{l" + "r" * (n - 1 - table.show_chosen) + "l" * table.show_chosen + "}",
        r"\toprule",
        " & ".join(headers) + r" \\",
        r"\midrule",
    ]
    for i, line in enumerate(body):
        if i == len(table.rows) and table.published:
            lines.append(r"\midrule")
        lines.append(" & ".join(line) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\par\smallskip",
              r"\begin{minipage}{\linewidth}\footnotesize",
              "\\par\n".join(_note(t) for t in table.footnotes),
              r"\end{minipage}", r"\end{table}", ""]
    return "\n".join(lines)
