"""Cell formatting shared by the table model and every renderer: counts, ``mean ± std``, Δ, and
the grid of header and cell texts the terminal, Markdown and HTML tables show.

The table model (:mod:`rdbench.results.tables`) and the renderers
(:mod:`rdbench.results.render_text`, :mod:`rdbench.results.render_latex`,
:mod:`rdbench.results.render_html`) all import from
here and never from each other, so one number is spelled the same way in every format. A
``column`` is a :class:`rdbench.results.tables.Column` (its ``text``, ``scale``, ``digits`` and
``count``); a ``delta`` is a :class:`rdbench.results.stats.Delta`.
"""

from __future__ import annotations


def human_count(n) -> str:
    """Parameter counts as people quote them: ``0``, ``950``, ``12.3K``, ``1.05M``, ``151.28M``."""
    if n is None:
        return ""
    n = int(n)
    if abs(n) < 1000:
        return str(n)
    for scale, suffix, digits in ((1e3, "K", 1), (1e6, "M", 2), (1e9, "B", 2)):
        text = f"{n / scale:.{digits}f}"
        # Checked after rounding, so 999_960 reads 1.00M rather than 1000.0K.
        if abs(float(text)) < 1000 or suffix == "B":
            return text + suffix
    raise AssertionError("unreachable")


def mean_std(column, mean, std, pm: str = "±") -> str:
    """``12.00 ± 1.41``; a published row (std None) shows its number alone."""
    if mean is None:
        return ""
    # A parameter count is fixed by the configuration, so a spread would only be noise.
    if std is None or column.count:
        return column.text(mean)
    return f"{column.text(mean)} {pm} {column.text(std)}"


def delta_text(column, delta, star: str = "*") -> str:
    """``+1.25*``: the difference to the baseline in the column's unit, starred if significant."""
    if delta is None or delta.delta is None:
        return ""
    return f"{delta.delta * column.scale:+.{column.digits}f}" + (star if delta.significant else "")


def grid(table, star: str = "*") -> tuple[list[str], list[list[str]]]:
    """Headers and cells shared by the terminal, Markdown and HTML tables."""
    show_incomplete = any(r.incomplete for r in table.rows)
    headers = ["method", "seeds", "failed"] + (["unfinished"] if show_incomplete else [])
    for c in table.columns:
        headers.append(c.header)
        if table.baseline is not None and c.key != "trainable":
            headers.append("Δ")
    cells = []
    for row in table.rows + table.published:
        counts = ["", ""] if row.published else [str(row.seeds), str(row.failed)]
        line = [row.shown_label, *counts] + ([str(row.incomplete or "")] if show_incomplete else [])
        for c in table.columns:
            if c.key == "trainable":
                line.append(row.trainable)
                continue
            line.append(mean_std(c, *row.values[c.key]))
            if table.baseline is not None:
                line.append(delta_text(c, row.deltas.get(c.key), star))
        if table.show_chosen:
            line.append(row.chosen)
        cells.append(line)
    if table.show_chosen:
        headers.append("chosen")
    return headers, cells
