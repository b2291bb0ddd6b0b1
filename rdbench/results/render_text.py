"""Text and data renderings of :class:`rdbench.results.tables.SuiteTable`: terminal, Markdown, CSV, Parquet.

The terminal and Markdown tables are for reading (seed and failure counts as columns,
footnotes below); CSV and Parquet are for scripts, so they keep mean, std, delta, test, raw
and Holm-adjusted p and interval as separate numeric columns instead of formatted text. LaTeX lives in
:mod:`rdbench.results.render_latex` because it ranks cells, which the other formats do not;
:func:`rdbench.results.compare.render` picks the renderer of a ``--format``. Renderers share
cell formatting through :mod:`rdbench.results.cells` and never import each other.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from tabulate import tabulate

from rdbench.atomic import atomic_path
from rdbench.errors import RdbenchError
from rdbench.results.cells import grid
from rdbench.results.selection import canonical, row_choices, row_search

#: The ``--format`` values this module renders (LaTeX is :mod:`rdbench.results.render_latex`).
TEXT_FORMATS = ("table", "markdown")
DATA_FORMATS = ("csv", "parquet")
_TABLEFMT = {"table": "simple", "markdown": "github"}
_DELTA_FIELDS = (("delta", "delta"), ("significant", "significant"), ("test", "test"), ("p", "p"),
                 ("p_holm", "p_holm"), ("ci_low", "low"), ("ci_high", "high"), ("se", "se"))


def table_text(table, fmt: str = "table") -> tuple[str, list[str]]:
    """One suite's table (no heading) and its notes, as ``table`` or ``markdown`` text."""
    star = "\\*" if fmt == "markdown" else "*"
    headers, cells = grid(table, star)
    if fmt == "markdown":
        # A "|" inside a cell would end it early in GitHub's table syntax.
        cells = [[c.replace("|", "\\|") for c in line] for line in cells]
    # The chosen column is text: left-aligned, like the method.
    align = ["left"] + ["right"] * (len(headers) - 1 - table.show_chosen) + ["left"] * table.show_chosen
    text = tabulate(cells, headers=headers, tablefmt=_TABLEFMT[fmt], disable_numparse=True, colalign=align)
    return text, [n.replace("*", star) for n in table.footnotes]


def render_text(tables, fmt: str = "table") -> str:
    """Render suite tables as text: ``table`` (terminal) or ``markdown``."""
    if fmt not in TEXT_FORMATS:
        raise ValueError(f"render_text: format '{fmt}' is not one of {', '.join(TEXT_FORMATS)}")
    blocks = []
    for table in tables:
        text, notes = table_text(table, fmt)
        if fmt == "markdown":
            blocks.append(f"### {table.suite}\n\n{text}\n\n" + "\n".join(f"- {n}" for n in notes))
        else:
            blocks.append(f"{table.suite}\n\n{text}\n\n" + "\n".join(notes))
    return "\n\n".join(blocks) + "\n"


def _frame_rows(table) -> list[dict]:
    out = []
    for row in table.rows:
        d = row.data
        rec = {"suite": table.suite, "run": row.label, "base_run": d["base_run"], "published": False,
               "source": None, "dataset": d["dataset"], "backbone": d["backbone"],
               "seeds": row.seeds, "failed": row.failed, "incomplete": row.incomplete,
               "trainable_params": row.trainable_params, "backbone_params": d["backbone_params"],
               "test_images": d["test_images"], "test_captions": d["test_captions"],
               "other_split": bool(row.mark)}
        rec |= _search_fields(d)
        rec |= {k: v for k, v in d.items() if k.endswith(("_mean", "_std"))}
        # Every row gets the delta fields (null where untested) so the schema never depends on data.
        for c in table.value_columns if table.baseline is not None else []:
            delta = row.deltas.get(c.key)
            rec |= {f"{c.key}_{f}": getattr(delta, a, None) for f, a in _DELTA_FIELDS}
        out.append(rec)
    for row in table.published:
        if not row.published:  # rdbench's own row under a published row's evaluation code
            rec = {"suite": table.suite, "run": row.label, "base_run": row.data["base_run"], "published": False,
                   "source": None, "lineage": row.lineage, "seeds": row.seeds, "trainable": row.trainable or None,
                   "other_split": bool(row.mark)}
            rec |= {f"{k}_mean": v[0] for k, v in row.values.items()}
            rec |= {f"{k}_std": v[1] for k, v in row.values.items()}
            out.append(rec)
            continue
        rec = {"suite": table.suite, "run": row.label, "base_run": None, "published": True,
               "source": row.data["source"], "trainable": row.trainable or None}
        rec |= {f"{k}_mean": v[0] for k, v in row.values.items()}
        out.append(rec)
    return out


def _search_fields(data: dict) -> dict:
    """What a row's hyper-parameter search chose (JSON, null without a search or when its seeds
    disagree) and on what budget; present on every rdbench row so the schema never varies."""
    choices = list(row_choices(data).values())
    agree = len({canonical(c) for c in choices}) == 1
    search = row_search(data)
    return {"chosen": json.dumps(choices[0]) if agree else None,
            "search_metric": search["metric"] if search else None,
            "search_candidates": len(search["candidates"]) if search else None,
            "search_cost_s": search["cost_s"] if search else None}


def frame(tables) -> pl.DataFrame:
    """All suites as one numeric frame (published rows flagged, never mixed into statistics)."""
    rows = [r for t in tables for r in _frame_rows(t)]
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return pl.DataFrame([{k: r.get(k) for k in keys} for r in rows], infer_schema_length=None)


def write_frame(tables, fmt: str, output=None) -> str:
    """CSV text (also written to ``output`` if given) or a Parquet file at ``output``."""
    df = frame(tables)
    if output is None:
        return df.write_csv()
    path = Path(output)
    try:
        with atomic_path(path) as temp:
            df.write_csv(temp) if fmt == "csv" else df.write_parquet(temp)
    except OSError as exc:
        raise RdbenchError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return df.write_csv() if fmt == "csv" else ""
