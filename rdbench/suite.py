"""Suites: YAML files that compose components by key into runs, expanded into runs x seeds.

A suite has ``suite`` (its name), ``description``, ``defaults`` (every slot a run needs) and
``runs`` (a mapping of run name to the slots it changes). Overrides merge in this order:
defaults, then the run, then ``--set`` on the command line. A component slot is a key
(``adapter/bottleneck`` or just ``bottleneck``), ``{name: key, <arg>: value}``, or the
jsonargparse form ``{class_path: ..., init_args: {...}}``. Merging a mapping without a name onto a
component keeps the component and changes its arguments; naming another component replaces it.

Two optional sections: ``select`` (a slot, in ``defaults`` or a run: hyper-parameters chosen on
validation before the run's seeds train, :mod:`rdbench.resolution.select`) and ``quick`` (a
top-level mapping of slots, and ``only`` runs, that ``rdbench run --quick`` applies: the suite's
documented short variant, recorded under ``<suite>-quick``).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rdbench.errors import ConfigError

#: Slots that hold a component, with the kind of component they hold.
COMPONENT_SLOTS = {
    "backbone": "backbone",
    "dataset": "dataset",
    "train_transform": "transform",
    "eval_transform": "transform",
    "adapter": "adapter",
    "loss": "loss",
    "optimizer": "optimizer",
}
#: Slots that hold plain settings.
PLAIN_SLOTS = ("trainer", "data", "seeds", "selection", "select")
#: Slots that hold a list of components of one kind (experiment trackers, rdbench.training.trackers).
LIST_SLOTS = {"logger": "logger"}
SLOTS = (*COMPONENT_SLOTS, *LIST_SLOTS, *PLAIN_SLOTS)
SUITE_KEYS = ("suite", "description", "defaults", "runs", "search", "quick")
#: What ``--quick`` adds to a suite's name: its records live apart from the full suite's.
QUICK_SUFFIX = "-quick"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")  # whole names only: used with fullmatch


class DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int):
        super().__init__(f"duplicate key {key!r} at line {line}")
        self.key, self.line = key, line


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping: PyYAML keeps the last
    silently, so a run pasted twice under ``runs:`` would vanish without a word."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base loader says so
                duplicate = False
            if duplicate:
                raise DuplicateKey(key, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> Any:
    """Read a YAML file; any problem becomes one line naming the file (and line, column)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc})") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except DuplicateKey as exc:
        raise ConfigError(f"{path}: line {exc.line}: duplicate key {exc.key!r} (the earlier one would be dropped)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML at {where}{problem}") from None


@dataclass
class Suite:
    """A loaded suite: its name, file, default slots and run patches, in file order."""

    name: str
    path: Path
    description: str
    defaults: dict[str, Any]
    runs: dict[str, dict[str, Any]]
    search: dict[str, Any] | None = None
    #: ``quick``: the slots ``rdbench run --quick`` changes for every run (a documented short
    #: variant of the suite), and optionally ``only``, the runs it keeps.
    quick: dict[str, Any] | None = None


@dataclass
class RunPlan:
    """One run of a suite at one seed, with its fully merged (not yet resolved) config."""

    suite: str
    run: str
    run_index: int
    seed: int
    config: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.run}/seed{self.seed}"


def load_suite(path: str | Path, quick: bool = False) -> Suite:
    """Read and check a suite file. ``quick``: its ``quick`` variant (named ``<suite>-quick``,
    its slots applied to every run after the run's own, its ``only`` runs kept)."""
    path = Path(path)
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a suite is a mapping with `suite`, `defaults` and `runs`")
    unknown = [k for k in data if k not in SUITE_KEYS]
    if unknown:
        raise ConfigError(f"{path}: unknown suite key(s) {', '.join(map(str, unknown))}; allowed: {', '.join(SUITE_KEYS)}")
    name = data.get("suite")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{path}: `suite` must be a name of letters, digits, '-', '_' or '.'")
    defaults = data.get("defaults") or {}
    runs = data.get("runs") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(f"{path}: `defaults` must be a mapping of slots")
    if not isinstance(runs, dict) or not runs:
        raise ConfigError(f"{path}: `runs` must be a non-empty mapping of run name to the slots it changes")
    _check_slots(path, "defaults", defaults)
    for run, patch in runs.items():
        if not isinstance(run, str) or not _NAME.fullmatch(run):
            raise ConfigError(f"{path}: run name {run!r} must be letters, digits, '-', '_', '+' or '.'")
        if patch is None:
            runs[run] = patch = {}
        if not isinstance(patch, dict):
            raise ConfigError(f"{path}: run {run!r} must be a mapping of the slots it changes")
        _check_slots(path, f"run {run!r}", patch)
    suite = Suite(name, path, str(data.get("description", "")).strip(), defaults, runs, data.get("search"),
                  _check_quick(path, data.get("quick"), runs))
    if not quick:
        return suite
    if suite.quick is None:
        raise ConfigError(f"{path}: --quick: the suite declares no `quick` variant (a mapping of slots, and `only` runs)")
    patch = {k: v for k, v in suite.quick.items() if k != "only"}
    kept = suite.quick.get("only") or list(runs)
    quick_runs = {run: merge(runs[run], patch) for run in kept}
    return Suite(name + QUICK_SUFFIX, path, suite.description, merge(defaults, patch), quick_runs, suite.search, suite.quick)


def _check_quick(path: Path, quick: Any, runs: dict[str, Any]) -> dict[str, Any] | None:
    if quick is None:
        return None
    if not isinstance(quick, dict):
        raise ConfigError(f"{path}: `quick` must be a mapping of slots (and `only`: runs to keep)")
    only = quick.get("only")
    if only is not None and (not isinstance(only, list) or not only or any(r not in runs for r in only)):
        raise ConfigError(f"{path}: quick.only must list runs of the suite; runs are {', '.join(runs)}")
    _check_slots(path, "quick", {k: v for k, v in quick.items() if k != "only"})
    return quick


def _check_slots(path: Path, where: str, slots: dict[str, Any]) -> None:
    for slot in slots:
        if slot not in SLOTS:
            import difflib

            close = difflib.get_close_matches(str(slot), SLOTS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; slots are {', '.join(SLOTS)}"
            raise ConfigError(f"{path}: {where}: unknown slot {slot!r}{hint}")


def merge(base: Any, patch: Any) -> Any:
    """Merge ``patch`` onto ``base`` (neither is modified).

    Mappings merge key by key; a mapping that names a different component (``name`` or
    ``class_path``) replaces the base; a mapping without a name applied to a key string keeps
    that component and sets its arguments. Anything else replaces.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if isinstance(base, str):
        base = {"name": base}
    if not isinstance(base, dict):
        return copy.deepcopy(patch)
    if _names_other(base, patch):
        return copy.deepcopy(patch)
    out = copy.deepcopy(base)
    for key, value in patch.items():
        out[key] = merge(out.get(key), value) if key in out else copy.deepcopy(value)
    return out


def _names_other(base: dict, patch: dict) -> bool:
    for field in ("name", "class_path"):
        if field in patch:
            old = base.get(field)
            return old is None or _short(str(old)) != _short(str(patch[field]))
    return False


def _short(key: str) -> str:
    return key.split("/", 1)[-1]


def parse_set(items: list[str] | None) -> list[tuple[list[str], Any]]:
    """Parse ``dotted.key=value`` overrides; values are YAML scalars or flow collections."""
    out = []
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected dotted.key=value")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({str(exc).splitlines()[0]})") from None
        out.append((key.split("."), value))
    return out


def _nest(path: list[str], value: Any) -> dict[str, Any]:
    for part in reversed(path):
        value = {part: value}
    return value


def expand(
    suite: Suite,
    *,
    only: list[str] | None = None,
    seeds: list[int] | None = None,
    overrides: list[tuple[list[str], Any]] | None = None,
) -> list[RunPlan]:
    """Runs x seeds, in file order, each with defaults <- run <- overrides merged.

    An override ``runs.<name>.<slot>...`` applies to one run; ``defaults.<slot>...`` or a bare
    ``<slot>...`` applies to every run (after the run's own patch, so the command line wins).
    """
    run_names = list(suite.runs)
    if only:
        missing = [r for r in only if r not in suite.runs]
        if missing:
            raise ConfigError(f"{suite.path}: --only names unknown run(s) {', '.join(missing)}; runs are {', '.join(run_names)}")
    global_patch: dict[str, Any] = {}
    run_patches: dict[str, dict[str, Any]] = {r: {} for r in run_names}
    for path, value in overrides or []:
        if path[0] == "runs":
            if len(path) < 3 or path[1] not in suite.runs:
                raise ConfigError(f"{suite.path}: --set {'.'.join(path)}: expected runs.<run>.<slot>..., runs are {', '.join(run_names)}")
            _check_slots(suite.path, "--set", {path[2]: None})
            run_patches[path[1]] = merge(run_patches[path[1]], _nest(path[2:], value))
            continue
        if path[0] == "defaults":
            path = path[1:]
        _check_slots(suite.path, "--set", {path[0]: None})
        global_patch = merge(global_patch, _nest(path, value))

    plans = []
    for index, run in enumerate(run_names):
        if only and run not in only:
            continue
        config = merge(merge(merge(suite.defaults, suite.runs[run]), run_patches[run]), global_patch)
        run_seeds = seeds if seeds is not None else config.get("seeds", [0])
        if isinstance(run_seeds, int):
            run_seeds = [run_seeds]
        if not isinstance(run_seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in run_seeds):
            raise ConfigError(f"{suite.path}: run {run!r}: `seeds` must be a list of integers, got {run_seeds!r}")
        bad = [s for s in run_seeds if not 0 <= s < 2 ** 32]
        if bad:  # what numpy and Lightning's seed_everything accept
            raise ConfigError(f"{suite.path}: run {run!r}: seed {bad[0]} is out of range (0 to 2**32 - 1)")
        if not run_seeds:
            raise ConfigError(f"{suite.path}: run {run!r}: `seeds` is empty: nothing would run")
        for seed in run_seeds:
            config_at_seed = copy.deepcopy(config)
            config_at_seed["seeds"] = [seed]
            plans.append(RunPlan(suite.name, run, index, seed, config_at_seed))
    return plans
