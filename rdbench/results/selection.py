"""Hyper-parameter searches as records state them, shown beside a table (``chosen`` column, notes).

A run whose suite has a ``select:`` slot tries candidate hyper-parameters on the validation
split and then trains every seed with the values it chose; its records' ``selection`` object
says so (:data:`rdbench.results.record.SEARCH_KEYS`). A table that compares methods tuned that
way must say what each row ran with and how much tuning each got, or a reader cannot tell an
adapter's merit from its tuning budget: hence one short cell per row (``lr=1e-3``) and one
note on the budget. The cell text is the same in every format, so it is built here, once.
"""

from __future__ import annotations

import json
from typing import Any

from rdbench.results.record import SEARCH_KEYS

#: Cell of a row whose seeds chose different values (the notes list them per seed).
DIFFERS = "differs by seed"
#: Cell of a row without a search, in a table where other rows have one.
NO_SEARCH = "—"


def search_of(selection: dict | None) -> dict | None:
    """The search part of a record's ``selection`` object, or None when no search ran."""
    if not isinstance(selection, dict) or "chosen" not in selection:
        return None
    return {k: selection[k] for k in SEARCH_KEYS if k in selection}


def format_value(value: Any) -> str:
    """A hyper-parameter value, short: floats to 3 significant digits (``1e-3``, ``0.0125``,
    ``32``), booleans and None as YAML writes them, lists as ``[q,v]``."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value == 0.0 or 1e-2 <= abs(value) < 1e4:
            return f"{value:.3g}"
        mantissa, exponent = f"{value:.2e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exponent)}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def short_names(paths) -> dict[str, str]:
    """Each dotted path by its shortest unambiguous tail: ``optimizer.lr`` -> ``lr``, but
    ``adapter.scale`` and ``loss.scale`` side by side keep their parents."""
    paths = list(dict.fromkeys(paths))
    out = {}
    for path in paths:
        parts = path.split(".")
        for n in range(1, len(parts) + 1):
            tail = ".".join(parts[-n:])
            if sum(1 for p in paths if p == tail or p.endswith("." + tail)) == 1:
                out[path] = tail
                break
        else:
            out[path] = path
    return out


def chosen_text(chosen: dict, names: dict[str, str] | None = None) -> str:
    """``lr=1e-3, bottleneck=32`` (in the order the record lists them)."""
    names = names or short_names(chosen)
    return ", ".join(f"{names.get(k, k)}={format_value(v)}" for k, v in chosen.items())


def canonical(value: dict | None) -> str | None:
    """A JSON string that is equal for equal dicts (how seeds' choices are compared)."""
    return None if value is None else json.dumps(value, sort_keys=True)


def row_choices(data: dict) -> dict[int, dict]:
    """seed -> chosen values, for the successful seeds of a summary row that had a search."""
    seeds, chosen = data.get("chosen_seeds") or [], data.get("chosen_values") or []
    return {s: json.loads(c) for s, c in zip(seeds, chosen) if c is not None}


def row_search(data: dict) -> dict | None:
    """The search of a summary row (its first successful seed's), or None."""
    return json.loads(data["search"]) if data.get("search") else None


def cell(data: dict) -> str:
    """The ``chosen`` cell of a row: the values, :data:`DIFFERS` or :data:`NO_SEARCH`."""
    choices = row_choices(data)
    if not choices:
        return NO_SEARCH
    distinct = {canonical(c) for c in choices.values()}
    if len(distinct) > 1:
        return DIFFERS
    return chosen_text(next(iter(choices.values())))


def _per_row(values: dict[str, str]) -> str:
    """One phrase when every row agrees, else ``row a; row b``."""
    if len(set(values.values())) == 1:
        return next(iter(values.values()))
    return "; ".join(f"{label}: {v}" for label, v in values.items())


def _seeds_text(seeds) -> str:
    seeds = list(seeds)
    return f"seed{'s' * (len(seeds) != 1)} {', '.join(map(str, seeds))}" if seeds else "no seed"


def budget_note(rows) -> str | None:
    """The notes' line on how hyper-parameters were chosen, from the rows' records, e.g.
    ``Hyper-parameters (column chosen) chosen on val/mR among 4 candidates per method (grid) at
    seed 0, never on test; 3 of 4 rows searched, 812 s of search in all.`` (None: no search)."""
    searches = {r.label: s for r in rows if (s := row_search(r.data)) is not None}
    if not searches:
        return fixed_note(rows)
    metric = _per_row({k: s["metric"] for k, s in searches.items()})
    budget = _per_row({k: f"{len(s['candidates'])} candidate{'s' * (len(s['candidates']) != 1)} "
                          f"per method ({s['method']})" for k, s in searches.items()})
    seeds = _per_row({k: _seeds_text(s["seeds"]) for k, s in searches.items()})
    on_test = [k for k, s in searches.items() if not str(s["metric"]).startswith("val/")]
    where = ("never on test" if not on_test else
             f"NOT on validation for {', '.join(on_test)}: their test numbers are optimistic")
    unscored = sum(c.get("score") is None for s in searches.values() for c in s["candidates"])
    cost = sum(s["cost_s"] for s in searches.values())
    return (f"Hyper-parameters (column chosen) chosen on {metric} among {budget} at {seeds}, {where}; "
            f"{len(searches)} of {len(rows)} rows searched, {cost:,.0f} s of search in all"
            + (f"; {unscored} candidate{'s' * (unscored != 1)} in all without a score (failed)" if unscored else "")
            + (f"; {NO_SEARCH}: the suite's values, no search" if len(searches) < len(rows) else "") + ".")


def fixed_note(rows) -> str | None:
    """Without any search, the notes say so and state the learning rate every row trained at
    (a table at one hand-set rate compares methods at that rate, not at their best)."""
    # Rows that train nothing (zero-shot) or whose records do not name a learning rate are left out.
    trained = {r.label: "/".join(format_value(v) for v in r.data["lrs"]) for r in rows
               if r.data.get("seeds") and r.data.get("trainable_params") != 0 and r.data.get("lrs")}
    if not trained:
        return None
    return ("No hyper-parameter search: every row trains at the suite's values, optimizer lr "
            + (_per_row(trained) if len(set(trained.values())) > 1 else f"{next(iter(trained.values()))} for every row")
            + ".")


def differs_note(rows) -> str | None:
    """The notes' line listing each seed's values for rows whose seeds chose differently (one
    search per run should choose once for all its seeds)."""
    parts = []
    for r in rows:
        choices = row_choices(r.data)
        if len({canonical(c) for c in choices.values()}) > 1:
            names = short_names(k for c in choices.values() for k in c)
            parts.append(f"{r.label}: " + "; ".join(f"seed {s} {chosen_text(c, names)}"
                                                    for s, c in sorted(choices.items())))
    if not parts:
        return None
    return ("Chosen values differ between seeds of one run (a run's search should choose once "
            f"for all its seeds): {' | '.join(parts)}.")
