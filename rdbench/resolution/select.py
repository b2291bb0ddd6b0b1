"""Equal-budget hyper-parameter selection per run: the ``select`` slot of a suite.

A suite declares, in ``defaults`` or per run, what is searched and on what::

    select: {metric: val/mR, seeds: [0], grid: {optimizer.lr: [3.0e-4, 1.0e-3, 3.0e-3]}}
    select: {metric: val/mR, grid: 4}        # 4 points per dimension of the method's own space
    select: {metric: val/mR, trials: 8}      # 8 Optuna (TPE, seeded) trials in that space

Every candidate trains with the run's own schedule at ``seeds`` and is scored on the validation
``metric`` (averaged over those seeds); the best candidate's values are then used for every seed
of the run. Candidates are recorded with ``purpose: trial``: they are never evaluated on the test
split, so no selection can read it (docs/metric.md, "Protocol").

Where a suite names no ``space``, the method family's own space is used: an adapter class
declares ``search_space`` where it is registered (``register(..., search_space=...)``, or a
class attribute for plugins), because prompts, adapters, LoRA and full fine-tuning train well at
different learning rates (docs/protocol.md). A single ``select`` in ``defaults`` then gives every
method the same number of candidates over a range fitted to it: equal budget by construction.
A family whose space is empty (``adapter/none``: nothing trains) is not searched.

This module parses and checks; :mod:`rdbench.training.selection` runs the candidates.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from rdbench.errors import ConfigError
from rdbench.suite import RunPlan, _nest, merge

SPACE_TYPES = ("float", "int", "categorical")
METHODS = ("grid", "trials")
SELECT_KEYS = ("metric", "seeds", "grid", "trials", "space", "sampler_seed")


def check_space(space: Any, where: str) -> dict[str, dict[str, Any]]:
    """A search space (dotted slot path -> range), checked; problems name ``where``."""
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{where}: must map dotted slot paths to ranges, e.g. optimizer.lr: "
                          "{type: float, low: 1.0e-4, high: 1.0e-2, log: true}")
    for path, spec in space.items():
        at = f"{where}.{path}"
        if not isinstance(path, str) or not path:
            raise ConfigError(f"{at}: a space key is a dotted slot path such as optimizer.lr")
        if not isinstance(spec, dict) or spec.get("type") not in SPACE_TYPES:
            raise ConfigError(f"{at}: needs `type` one of {', '.join(SPACE_TYPES)}")
        if spec["type"] == "categorical":
            if not isinstance(spec.get("choices"), list) or not spec["choices"]:
                raise ConfigError(f"{at}: a categorical needs a non-empty `choices` list")
        elif not all(isinstance(spec.get(k), (int, float)) and not isinstance(spec.get(k), bool) for k in ("low", "high")) \
                or spec["low"] >= spec["high"]:
            raise ConfigError(f"{at}: needs numbers `low` < `high`")
        elif spec.get("log") and spec["low"] <= 0:
            raise ConfigError(f"{at}: a log range needs `low` > 0")
    return space


def sample(trial: Any, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One point of ``space`` drawn by an Optuna trial (``suggest_*`` per dimension)."""
    values = {}
    for path, spec in space.items():
        if spec["type"] == "float":
            values[path] = trial.suggest_float(path, spec["low"], spec["high"], log=bool(spec.get("log", False)))
        elif spec["type"] == "int":
            values[path] = trial.suggest_int(path, int(spec["low"]), int(spec["high"]), step=int(spec.get("step", 1)), log=bool(spec.get("log", False)))
        else:
            values[path] = trial.suggest_categorical(path, spec["choices"])
    return values


def space_points(space: dict[str, dict[str, Any]], points: int) -> dict[str, list[Any]]:
    """``points`` values per dimension: log-spaced (``log: true``) or evenly spaced between
    ``low`` and ``high`` inclusive, integers rounded and deduplicated, every categorical choice."""
    grid: dict[str, list[Any]] = {}
    for path, spec in space.items():
        if spec["type"] == "categorical":
            grid[path] = list(spec["choices"])
            continue
        low, high = float(spec["low"]), float(spec["high"])
        if points == 1:
            values = [math.sqrt(low * high) if spec.get("log") else (low + high) / 2]
        elif spec.get("log"):
            values = [low * (high / low) ** (i / (points - 1)) for i in range(points)]
        else:
            values = [low + (high - low) * i / (points - 1) for i in range(points)]
        if spec["type"] == "int":
            values = list(dict.fromkeys(int(round(v)) for v in values))
        else:
            values = [float(f"{v:.2g}") for v in values]  # 0.00097, not 0.0009654893846056298
        grid[path] = values
    return grid


@dataclass
class SelectSpec:
    """A run's resolved ``select`` slot (what ``config.yaml`` records under ``select``)."""

    metric: str = "val/mR"
    seeds: list[int] = field(default_factory=lambda: [0])
    method: str = "grid"  # "grid": every point of `grid`; "trials": Optuna TPE in `space`
    grid: dict[str, list[Any]] = field(default_factory=dict)
    trials: int = 0
    space: dict[str, dict[str, Any]] = field(default_factory=dict)
    sampler_seed: int = 0
    #: Where the space came from: "suite", or the adapter key whose family space it is.
    space_from: str = "suite"

    @property
    def budget(self) -> int:
        """Candidates trained, each at every selection seed."""
        return self.trials if self.method == "trials" else len(self.candidates())

    def candidates(self) -> list[dict[str, Any]]:
        """The grid's points in file order (the first of equal scores wins)."""
        paths = list(self.grid)
        return [dict(zip(paths, values)) for values in itertools.product(*(self.grid[p] for p in paths))]

    def as_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"metric": self.metric, "seeds": list(self.seeds), "method": self.method}
        if self.method == "grid":
            out["grid"] = copy.deepcopy(self.grid)
        else:
            out.update(trials=self.trials, space=copy.deepcopy(self.space), sampler_seed=self.sampler_seed)
        out["space_from"] = self.space_from
        return out


def parse_select(raw: Any, where: str, family_space: dict[str, Any] | None, family: str) -> SelectSpec | None:
    """The ``select`` slot of one run, or None when nothing is to be searched.

    ``family_space`` is the run's adapter family's declared space (None: it declares none;
    ``{}``: nothing of it trains, so nothing is searched). ``family`` names it in messages.
    """
    if raw is None or raw is False or raw == {} or family_space == {}:
        return None  # nothing asked, or nothing of this method trains: nothing to select
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: `select` must be a mapping such as {{metric: val/mR, grid: 4}}")
    # `method` and `space_from` appear in a written config.yaml; they follow from the rest
    unknown = [k for k in raw if k not in (*SELECT_KEYS, "method", "space_from")]
    if unknown:
        raise ConfigError(f"{where}: select: unknown key(s) {', '.join(map(str, unknown))}; keys are {', '.join(SELECT_KEYS)}")
    metric = raw.get("metric", "val/mR")
    if not isinstance(metric, str) or not metric.startswith("val/"):
        raise ConfigError(f"{where}: select.metric must be a validation metric (val/...), got {metric!r}: "
                          "selection never reads the test split")
    seeds = raw.get("seeds", [0])
    seeds = [seeds] if isinstance(seeds, int) and not isinstance(seeds, bool) else seeds
    if (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise ConfigError(f"{where}: select.seeds must be a non-empty list of distinct integers, got {seeds!r}")
    grid, trials = raw.get("grid"), raw.get("trials")
    if (grid is None) == (trials is None):
        raise ConfigError(f"{where}: select needs exactly one of `grid` (values, or points per dimension) and `trials`")
    sampler_seed = raw.get("sampler_seed", 0)
    if not isinstance(sampler_seed, int) or isinstance(sampler_seed, bool):
        raise ConfigError(f"{where}: select.sampler_seed must be an integer")
    spec = SelectSpec(metric=metric, seeds=list(seeds), sampler_seed=sampler_seed)

    explicit_grid = isinstance(grid, dict)
    space = raw.get("space")
    if space is not None:
        spec.space = check_space(copy.deepcopy(space), f"{where}: select.space")
    elif not explicit_grid:
        if family_space is None:
            raise ConfigError(f"{where}: select: {family} declares no search space; give `space` (or a `grid` of values)")
        spec.space, spec.space_from = copy.deepcopy(family_space), family
    if explicit_grid:
        if not grid:
            raise ConfigError(f"{where}: select.grid names no value to search")
        for path, values in grid.items():
            if not isinstance(path, str) or not isinstance(values, list) or not values:
                raise ConfigError(f"{where}: select.grid.{path}: needs a non-empty list of values")
        spec.method, spec.grid = "grid", copy.deepcopy(grid)
    elif grid is not None:
        if not isinstance(grid, int) or isinstance(grid, bool) or grid < 1:
            raise ConfigError(f"{where}: select.grid must be a mapping of values or a number of points (>= 1), got {grid!r}")
        spec.method, spec.grid = "grid", space_points(spec.space, grid)
    else:
        if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
            raise ConfigError(f"{where}: select.trials must be a positive integer, got {trials!r}")
        spec.method, spec.trials = "trials", trials
    if isinstance(raw.get("space_from"), str):  # a written config.yaml keeps where it came from
        spec.space_from = raw["space_from"]
    return spec


def family_space_of(cls: type | None) -> dict[str, Any] | None:
    """The search space an adapter class declares (``search_space``), or None."""
    space = getattr(cls, "search_space", None) if cls is not None else None
    return copy.deepcopy(space) if isinstance(space, dict) else None


def budget_note(specs: dict[str, SelectSpec | None]) -> str | None:
    """One line on the selection budget of a suite's runs (None if nothing is selected); says
    so when runs got unequal budgets, which a comparison of methods should not have."""
    searched = {run: s for run, s in specs.items() if s is not None}
    if not searched:
        return None
    budgets = {run: s.budget * len(s.seeds) for run, s in searched.items()}
    sizes = sorted(set(budgets.values()))
    metric = ", ".join(sorted({s.metric for s in searched.values()}))
    if len(sizes) == 1:
        one = next(iter(searched.values()))
        return (f"selection: {len(searched)} run(s) choose hyper-parameters on {metric}, each from "
                f"{one.budget} candidate(s) x {len(one.seeds)} seed(s) (equal budget); a run's seed that is "
                f"a selection seed evaluates the chosen candidate's training instead of repeating it")
    shown = ", ".join(f"{run} {n}" for run, n in budgets.items())
    return f"warning: unequal selection budgets (candidate trainings per run: {shown})"


def with_values(plan: RunPlan, values: dict[str, Any], run: str | None = None) -> RunPlan:
    """``plan`` with searched values set as ``--set`` would set them (``run`` renames it). A
    component written in the ``class_path``/``init_args`` form (a suite's jsonargparse form, or
    a recorded ``config.yaml``) takes the value among its ``init_args``."""
    config = plan.config
    for path, value in values.items():
        config = merge(config, _nest(_into_init_args(config, path.split(".")), value))
    return RunPlan(plan.suite, run or plan.run, plan.run_index, plan.seed, config)


def _into_init_args(config: Any, parts: list[str]) -> list[str]:
    out, node = [], config
    for part in parts:
        if isinstance(node, dict) and "init_args" in node and part not in node:
            out.append("init_args")
            node = node["init_args"]
        out.append(part)
        node = node.get(part) if isinstance(node, dict) else None
    return out


def probe_values(spec: SelectSpec) -> dict[str, Any]:
    """One candidate's values, to check before anything trains that the paths apply."""
    if spec.method == "grid":
        return spec.candidates()[0]
    return {p: (r["choices"][0] if r["type"] == "categorical" else r["low"]) for p, r in spec.space.items()}
