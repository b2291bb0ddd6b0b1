"""The HTML report of ``rdbench compare --format html``: one self-contained page.

Everything a reader needs is inside the file: the suite tables (the same cells as the terminal
and Markdown tables, :func:`rdbench.results.cells.grid`), their notes (seed counts, the
significance tests and their correction, where published numbers come from), a provenance
line, and the figures as PNG images embedded as ``data:`` URIs. No script, font, style sheet or
image is fetched when the page is viewed, so it opens offline, attached to an e-mail or from a
cluster's file system, and shows the same thing years later.
"""

from __future__ import annotations

import base64
import html

from rdbench.results.cells import grid

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1b1f24; margin: 2rem auto;
       max-width: 78rem; padding: 0 1.5rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
h2 { font-size: 1.25rem; margin-top: 2.4rem; border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; }
p.provenance { color: #57606a; font-size: .88rem; margin-top: 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: .9rem; margin: .8rem 0; }
th, td { padding: .3rem .6rem; border-bottom: 1px solid #eaeef2; white-space: nowrap; }
th { text-align: right; background: #f6f8fa; border-bottom: 2px solid #d0d7de; }
td { text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
tr.published td { color: #57606a; font-style: italic; }
ul.notes { color: #424a53; font-size: .86rem; padding-left: 1.2rem; }
figure { display: inline-block; margin: .6rem 1.2rem .6rem 0; vertical-align: top; }
figure img { max-width: 36rem; width: 100%; border: 1px solid #eaeef2; }
figcaption { font-size: .82rem; color: #57606a; }
"""

#: What each figure of :func:`rdbench.results.plots.suite_figures` shows, as its caption.
CAPTIONS = {
    "pareto": "Test mR against trainable parameters, with the Pareto front.",
    "ablation": "Test mR of each row minus that of the reference row named in the title, with the seed spread.",
    "recall": "Recall@K curves, image-to-text and text-to-image.",
    "gradient-ratio": "Text-to-image gradient-norm ratio during training (docs/diagnostics.md).",
    "gap-mR": "Test mR against the test split's modality gap.",
}


def _cell(text: str, tag: str = "td", cls: str | None = None) -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<{tag}{attr}>{html.escape(text)}</{tag}>"


def table_html(table) -> str:
    """One suite's table: a header row, one row per run (published rows set apart)."""
    headers, cells = grid(table)
    text_columns = {len(headers) - 1} if table.show_chosen else set()
    rows = table.rows + table.published
    head = "<tr>" + "".join(_cell(h, "th") for h in headers) + "</tr>"
    body = []
    for row, line in zip(rows, cells):
        kind = ' class="published"' if row.published else ""
        body.append(f"<tr{kind}>" + "".join(_cell(c, cls="text" if i in text_columns else None)
                                             for i, c in enumerate(line)) + "</tr>")
    return (f'<div class="scroll"><table>\n<thead>{head}</thead>\n<tbody>\n' + "\n".join(body)
            + "\n</tbody>\n</table></div>")


def figure_html(suite: str, name: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    caption = CAPTIONS.get(name, name)
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(suite)}: {html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def render_html(tables, provenance: str, figures: dict[str, list[tuple[str, bytes]]]) -> str:
    """The whole page: ``figures`` maps a suite to its ``(name, PNG bytes)`` figures."""
    suites = ", ".join(t.suite for t in tables)
    parts = ["<!doctype html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>rdbench comparison: {html.escape(suites)}</title>", f"<style>{STYLE}</style>", "</head>",
             "<body>", "<h1>rdbench comparison</h1>", f'<p class="provenance">{html.escape(provenance)}</p>']
    for table in tables:
        parts += [f'<section id="{html.escape(table.suite, quote=True)}">', f"<h2>{html.escape(table.suite)}</h2>",
                  table_html(table)]
        if table.footnotes:
            parts.append('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in table.footnotes) + "</ul>")
        shown = figures.get(table.suite) or []
        if shown:
            parts.append("<div>" + "".join(figure_html(table.suite, name, png) for name, png in shown) + "</div>")
        parts.append("</section>")
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"
