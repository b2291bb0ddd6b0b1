"""The state of a run folder on disk: where it is, whether it is done, whether its recorded
config still matches the suite. Shared by the suite runner and the hyper-parameter selection
(:mod:`rdbench.training.selection`), which run folders the same way."""

from __future__ import annotations

from pathlib import Path

import yaml

from rdbench.resolution.run import ResolvedRun, identity
from rdbench.results.load import countable
from rdbench.results.record import CONFIG_FILE, RECORD_FILE, Record
from rdbench.suite import RunPlan


def run_dir(results: Path, plan: RunPlan) -> Path:
    # Absolute: Lightning reports checkpoint paths absolute, and records store them relative.
    return Path(results).resolve() / plan.suite / plan.run / f"seed{plan.seed}"


def config_changes(folder: Path, run: ResolvedRun) -> list[str]:
    """Dotted keys where ``run``'s resolved config differs from the one in ``folder`` (empty if
    they agree or the folder holds none to compare)."""
    try:
        old = yaml.safe_load((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []
    new = yaml.safe_load(yaml.safe_dump(identity(run.config()), sort_keys=False))
    return _diff(identity(old), new) if isinstance(old, dict) else ["config.yaml"]


def _diff(old, new, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(dict.fromkeys([*old, *new])):
            name = f"{prefix}.{key}" if prefix else str(key)
            out += _diff(old.get(key), new.get(key), name) if key in old and key in new else [name]
        return out
    return [] if old == new else [prefix]


class NoLock:
    """What DDP ranks above zero hold: rank zero's lock covers the whole process group."""

    took_over_stale = False
    previous = None

    def acquire(self) -> bool:
        return True

    def release(self) -> None:
        pass


def is_done(folder: Path) -> bool:
    """A successful record that ``rdbench compare`` would count: anything else (a record rdbench
    did not write, of a future schema, with values no table can hold) does not block the run."""
    old = Record.read(folder / RECORD_FILE)
    return old is not None and old.status == "success" and countable(old)
