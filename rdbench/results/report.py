"""``rdbench report``: the results page (docs/results.md) generated from run records.

A results page written by hand drifts from the records (a rerun changes a number, the prose
keeps the old one) and tends to word a null result as a near-win. Here every number comes from
the records through the same path as ``rdbench compare`` (:func:`rdbench.results.compare.prepare`
and :func:`rdbench.results.tables.build_tables`: the same tables, tests, Holm correction and
notes), and every sentence comes from a fixed template chosen by the statistics alone
(significant after Holm or not, with the row's own minimum detectable difference), so that the
page is updated by regenerating it, never by editing it. The output depends on the records and
the arguments only: no clock, sorted orders, and the code commit read from git.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from rdbench.atomic import write_atomic
from rdbench.errors import RdbenchError
from rdbench.optional import require
from rdbench.results import selection
from rdbench.results.deltas import row_mdd
from rdbench.results.model import SuiteTable
from rdbench.results.render_text import table_text

#: The run a suite is compared with when ``--baseline`` names none for it.
DEFAULT_BASELINE = "baseline"
HOW_TO_READ = (
    "How to read a table: each row is a run of the suite, averaged over its successful seeds "
    "(recalls in %, mean ± std). With a baseline, Δ is the row's mean minus the baseline's, and "
    "`*` marks a Δ whose Holm-adjusted p is below 0.05 (Holm's correction covers every test of "
    "that table). Test-metric Δs are tested by a two-level bootstrap over seeds and test queries "
    "where per-query ranks exist (with a 95% percentile interval), other Δs by Welch's t-test "
    "across seeds when both runs have 3 seeds or more; the notes under each table say which. The "
    "minimum detectable difference (MDD) is the smallest mR "
    "difference the comparison would detect with 80% power. A Δ that is not starred is not "
    "evidence of no effect: it is an effect smaller than the comparison can see. Test procedures: "
    "docs/compare.md.")


@dataclass
class Report:
    """The page, the messages for the user, and the files written."""

    text: str
    warnings: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def parse_baselines(values: list[str] | None) -> tuple[dict[str, str], str | None]:
    """``SUITE=RUN`` pairs, plus at most one bare ``RUN`` for every suite that has such a run."""
    pairs: dict[str, str] = {}
    default = None
    for value in values or []:
        suite, sep, run = value.partition("=")
        if not sep:
            if default is not None and default != value:
                raise RdbenchError(f"--baseline: two runs for every suite ('{default}', '{value}'); "
                                   "name the suite: --baseline SUITE=RUN")
            default = value.strip()
            continue
        if not suite.strip() or not run.strip():
            raise RdbenchError(f"--baseline: '{value}' is not SUITE=RUN")
        if pairs.get(suite.strip(), run.strip()) != run.strip():
            raise RdbenchError(f"--baseline: suite '{suite.strip()}' is given two baselines")
        pairs[suite.strip()] = run.strip()
    return pairs, default


def code_commit(cwd: Path | None = None, generated: list[Path] | None = None) -> str:
    """``git rev-parse HEAD`` of the working directory, with ``-dirty`` when tracked files have
    changes other than the ``generated`` files themselves (the page being rewritten must not
    mark its own tree dirty); ``unknown`` outside a git checkout or without git."""
    cwd = Path.cwd() if cwd is None else cwd
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0 or not head.stdout.strip():
            return "unknown"
        excludes = []
        for path in generated or []:
            try:
                excludes.append(f":(exclude){Path(os.path.relpath(Path(path).resolve(), cwd.resolve())).as_posix()}")
            except ValueError:  # another drive: not in the tree
                continue
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *excludes],
                                cwd=cwd, capture_output=True, text=True, timeout=10)
        dirty = status.returncode != 0 or bool(status.stdout.strip())
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _points(value: float) -> str:
    return f"{value:+.2f}"


def _p(value: float) -> str:
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def row_sentence(table: SuiteTable, row) -> str:
    """One sentence on a row's test-mR Δ against the baseline, from fixed templates."""
    base = f"`{table.baseline}`"
    d = row.deltas.get("test/mR")
    head = f"- `{row.label}`: "
    if not row.seeds:
        return head + "no successful seed, so no mean and no comparison."
    if row.label in table.unmatched:
        return head + f"no Δ: no successful seed of {base} on the same dataset and backbone."
    if d is None or d.delta is None:
        return head + f"no mR Δ against {base} (no test mR recorded)."
    text = f"{head}mR {_points(d.delta)} points against {base}"
    if d.test is None:
        return text + f"; not tested ({d.why_untested}), so no conclusion either way."
    if d.test == "bootstrap":
        text += f" (95% CI {_points(d.low)} to {_points(d.high)})"
    else:
        text += " (Welch's t-test across seeds; no interval)"
    tests = f"the {table.n_tests} test{'s' * (table.n_tests != 1)} of this table"
    if d.significant:
        return (text + f", significant after Holm correction over {tests} (adjusted p = {_p(d.p_holm)}): "
                + ("higher" if d.delta > 0 else "lower") + f" than {base}.")
    mdd = row_mdd(d)
    power = (f"at this power (MDD {mdd:.2f} points)" if mdd is not None
             else "at this power (no MDD without per-query ranks)")
    return (text + f", not significant after Holm correction over {tests} (adjusted p = {_p(d.p_holm)}): "
            f"no detectable difference from {base} {power}.")


def what_it_shows(table: SuiteTable, baseline: str | None, why_none: str = "") -> list[str]:
    """The generated "What the table shows" lines of one suite (``baseline``: its run name)."""
    if table.baseline is None:
        return [f"No baseline for this suite ({why_none}): the table gives means only, with no Δ "
                "and no test."]
    others = [r for r in table.rows if baseline not in (r.label, r.data["base_run"])]
    tested = [r.deltas["test/mR"] for r in others
              if "test/mR" in r.deltas and r.deltas["test/mR"].test is not None]
    higher = sum(1 for d in tested if d.significant and d.delta > 0)
    lower = sum(1 for d in tested if d.significant and d.delta < 0)
    mdds = sorted(m for d in tested if (m := row_mdd(d)) is not None)
    summary = (f"Of {len(others)} row{'s' * (len(others) != 1)} compared with `{table.baseline}`, "
               f"{len(tested)} had their mR tested: {higher} significantly higher, {lower} significantly "
               f"lower after Holm correction, {len(tested) - higher - lower} with no detectable difference")
    if mdds:
        mid = mdds[len(mdds) // 2] if len(mdds) % 2 else (mdds[len(mdds) // 2 - 1] + mdds[len(mdds) // 2]) / 2
        summary += f" (median MDD {mid:.2f} points)"
    return [summary + ".", ""] + [row_sentence(table, r) for r in others]


def _candidate(c: dict, names: dict, chosen: dict, metric: str) -> str:
    text = selection.chosen_text(c["values"], names) or "(no values)"
    score = f"{metric} {c['score']:.2f}" if c.get("score") is not None else f"no score ({c.get('status')})"
    return f"{text}: {score}" + (" (chosen)" if c["values"] == chosen else "")


def search_lines(table: SuiteTable) -> list[str]:
    """Per searched row: what was chosen, on what, and every candidate's score."""
    lines = []
    for row in table.rows:
        search = selection.row_search(row.data)
        if search is None:
            continue
        names = selection.short_names(k for c in search["candidates"] for k in c["values"])
        n = len(search["candidates"])
        seeds = ", ".join(map(str, search["seeds"]))
        lines.append(f"- `{row.label}`: {row.chosen}; chosen on {search['metric']} among {n} candidate"
                     f"{'s' * (n != 1)} ({search['method']}) at seed{'s' * (len(search['seeds']) != 1)} "
                     f"{seeds}, {search['cost_s']:,.0f} s: "
                     + "; ".join(_candidate(c, names, search["chosen"], search["metric"])
                                 for c in search["candidates"]) + ".")
    return lines


def _counts(frame: pl.DataFrame, *cols: str) -> list[tuple]:
    """(values..., count) of the columns, most frequent first, then by value (deterministic)."""
    grouped = frame.group_by(list(cols)).len().rows()
    return sorted(grouped, key=lambda r: (-r[-1], tuple("" if v is None else str(v) for v in r[:-1])))


def _suite_facts(table: SuiteTable, df: pl.DataFrame, baseline_origin: str) -> list[str]:
    rows = table.rows
    seeds = sorted({r.seeds for r in rows if r.seeds})
    per_run = (f"{seeds[0]} per run" if len(seeds) == 1 else
               "per run: " + ", ".join(f"{r.label} {r.seeds}" for r in rows)) if seeds else "none"
    datasets = "; ".join(f"{d or '?'}, fingerprint `{fp or 'unknown'}` ({n} record{'s' * (n != 1)})"
                         for d, fp, n in _counts(df, "dataset", "dataset_fingerprint"))
    return [f"- Baseline: {baseline_origin if table.baseline else f'none ({baseline_origin})'}.",
            f"- Runs: {len(rows)}; successful seeds: {sum(r.seeds or 0 for r in rows)} ({per_run}); "
            f"failed seeds: {sum(r.failed for r in rows)}; unfinished: {sum(r.incomplete for r in rows)}.",
            f"- Dataset: {datasets}."]


def _figure_note(figures: Path | None) -> str | None:
    """One line for the header when no figure will be drawn (None when they will)."""
    if figures is None:
        return "- Figures: not drawn (`rdbench report --figures DIR` draws them)."
    require("matplotlib", "--figures")  # asked for: one line and exit 2 rather than a page without them
    return None


def _figures(table: SuiteTable, figures: Path, page_dir: Path, report: Report) -> list[str]:
    from rdbench.results.plots import plot_suite

    paths = plot_suite(table, figures)
    report.files += paths
    if not paths:
        return ["None for this suite (no row with successful seeds)."]
    return [f"![{table.suite}: {p.stem.rsplit('-', 1)[-1]}]"
            f"({Path(os.path.relpath(p.resolve(), page_dir.resolve())).as_posix()})" for p in paths]


def _resolve_baselines(summary: pl.DataFrame, suites: list[str], pairs: dict[str, str],
                       default: str | None) -> dict[str, tuple[str | None, str]]:
    """suite -> (baseline run or None, how it was chosen / why there is none)."""
    out = {}
    for suite, run in pairs.items():
        if suite not in suites:
            raise RdbenchError(f"--baseline: no suite '{suite}' in this report (suites: {', '.join(suites)})")
    if default is not None and not any(
            default in _runs(summary, s) for s in suites):
        raise RdbenchError(f"--baseline: no suite has a run '{default}' (suites: {', '.join(suites)})")
    for suite in suites:
        runs = _runs(summary, suite)
        if suite in pairs:
            if pairs[suite] not in runs:
                raise RdbenchError(f"--baseline: suite '{suite}' has no run '{pairs[suite]}' (runs: {', '.join(runs)})")
            out[suite] = (pairs[suite], f"`{pairs[suite]}` (given with --baseline {suite}={pairs[suite]})")
        elif default is not None and default in runs:
            out[suite] = (default, f"`{default}` (given with --baseline {default})")
        elif DEFAULT_BASELINE in runs:
            out[suite] = (DEFAULT_BASELINE, f"`{DEFAULT_BASELINE}` (the suite's run of that name)")
        else:
            out[suite] = (None, f"no run named `{DEFAULT_BASELINE}`; `--baseline {suite}=RUN` names one")
    return out


def _runs(summary: pl.DataFrame, suite: str) -> list[str]:
    part = summary.filter(pl.col("suite") == suite)
    return list(dict.fromkeys(part["base_run"].to_list() + part["run"].to_list()))


def report(results_dir, suites: list[str] | None = None, baselines: list[str] | None = None,
           out=None, figures=None) -> Report:
    """Build the page from the records below ``results_dir`` (one folder or a list).

    ``suites``: only these (default: every suite found). ``baselines``: ``SUITE=RUN`` pairs, or a
    bare ``RUN`` for every suite that has it; a suite named in neither is compared with its run
    named ``baseline`` if it has one, else shown without Δs. ``out``: where the page will be
    written (links to figures are relative to it; it is also left out of the dirty check).
    ``figures``: a folder to draw PNG figures into (none when None). Writes nothing but figures.
    """
    from rdbench.results.compare import prepare
    from rdbench.results.tables import build_tables, select_columns

    pairs, default = parse_baselines(baselines)
    df, summary, warnings = prepare(results_dir)
    found = summary["suite"].unique(maintain_order=True).to_list()
    wanted = list(dict.fromkeys(suites or found))
    missing = [s for s in wanted if s not in found]
    if missing:
        raise RdbenchError(f"--suite: no records for suite '{missing[0]}' (suites found: {', '.join(found)})")
    chosen = _resolve_baselines(summary, wanted, pairs, default)
    page = Path(out) if out is not None and str(out) != "-" else None
    figures = Path(figures) if figures is not None else None
    result = Report("", warnings)
    roots = [results_dir] if isinstance(results_dir, (str, Path)) else list(results_dir)
    shown = df.filter(pl.col("suite").is_in(wanted))
    versions = ", ".join(f"`{v or 'unknown'}` ({n})" for v, n in _counts(shown, "code_version"))
    skipped = sum(w.endswith("; skipped") for w in warnings)
    lines = ["# Results", "",
             "<!-- Generated by `rdbench report` from run records: regenerate it, do not edit it. -->", "",
             f"Generated by `rdbench report` from the run records in {', '.join(f'`{r}`' for r in roots)} "
             f"({shown.height} records of {len(wanted)} suite{'s' * (len(wanted) != 1)}; tuning trials and "
             "selection candidates left out"
             + (f"; {skipped} record file{'s' * (skipped != 1)} skipped as unreadable or duplicate, named by "
                "`rdbench compare`" if skipped else "") + ").", "",
             f"- Code: commit `{code_commit(generated=[p for p in (page, figures) if p])}` (where the report "
             "was generated; `-dirty`: with uncommitted changes).",
             f"- Records written by code version(s): {versions}.",
             f"- Suites: {', '.join(f'{s}' for s in wanted)}."]
    figure_note = _figure_note(figures)
    lines += [figure_note] if figure_note else []
    lines += ["", HOW_TO_READ]
    for suite in wanted:
        base, origin = chosen[suite]
        sdf = df.filter(pl.col("suite") == suite)
        ssum = summary.filter(pl.col("suite") == suite)
        (table,), notes = build_tables(ssum, sdf, select_columns(None, ssum), baseline=base,
                                       warnings=warnings)
        result.warnings += notes
        text, footnotes = table_text(table, "markdown")
        lines += ["", f"## {suite}", "", *_suite_facts(table, sdf, origin), "", text, "",
                  *(f"- {n}" for n in footnotes), "", "### What the table shows", "",
                  *what_it_shows(table, base, origin)]
        searched = search_lines(table)
        if searched:
            lines += ["", "### Hyper-parameters", "", *searched]
        if figure_note is None:
            lines += ["", "### Figures", "", *_figures(table, figures, page.parent if page else Path.cwd(), result)]
    result.text = "\n".join(lines) + "\n"
    return result


def write_report(result: Report, out) -> None:
    """Write the page atomically (one line naming the file when it cannot be written)."""
    path = Path(out)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, result.text)
    except OSError as exc:
        raise RdbenchError(f"{path}: cannot write ({exc.strerror or exc})") from None
    result.files.insert(0, path)
