"""Running suites: runs x seeds, one folder and one record each, failures isolated.

For every run and seed: write ``config.yaml`` (resolved, before anything is built), build the
components, ``fit`` with model selection on the validation split, reload the selected
checkpoint, evaluate validation and test once, and write ``record.json`` atomically. A run whose
successful record exists is skipped unless ``overwrite``. A run that raises is recorded as
``failed`` with the reason and the suite goes on.

Several ``rdbench run`` processes may share one results folder: each run is guarded by a lock
(:mod:`rdbench.results.lock`), so a run is executed by one process while the others go on with
the rest of the suite.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rdbench.resolution.run import ResolvedRun, Unresolvable, resolve_suite
from rdbench.results.lock import RunLock
from rdbench.results.record import RECORD_FILE, Record
from rdbench.suite import RunPlan
from rdbench.training.execute import execute, is_rank_zero, unresolved_record


@dataclass
class SuiteOutcome:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    busy: int = 0  # held by another live process


def run_dir(results: Path, plan: RunPlan) -> Path:
    # Absolute: Lightning reports checkpoint paths absolute, and records store them relative.
    return Path(results).resolve() / plan.suite / plan.run / f"seed{plan.seed}"


def run_suite(
    path: str | Path,
    *,
    results: str | Path = "results",
    only: list[str] | None = None,
    seeds: list[int] | None = None,
    overrides=None,
    overwrite: bool = False,
    echo: Callable[[str], None] = print,
) -> SuiteOutcome:
    leader = is_rank_zero()
    if not leader:  # a DDP rank > 0: follow rank zero's loop silently, holding no locks
        echo = lambda _line: None  # noqa: E731
    runs = resolve_suite(path, only=only, seeds=seeds, overrides=overrides)
    outcome = SuiteOutcome()
    started, spent, executed = time.perf_counter(), 0.0, 0
    for i, run in enumerate(runs, 1):
        if isinstance(run, Unresolvable):  # a broken plugin fails its own runs, not the suite
            if leader:
                unresolved_record(run).write(run_dir(Path(results), run.plan))
            echo(f"[{i}/{len(runs)}] {run.plan.suite}/{run.plan.label}: FAILED: {run.error}")
            outcome.failed += 1
            continue
        folder = run_dir(Path(results), run.plan)
        label = f"[{i}/{len(runs)}] {run.plan.suite}/{run.plan.label}"
        if _done(folder) and not overwrite:
            echo(f"{label}: done already (skipped; --overwrite reruns it)")
            outcome.skipped += 1
            continue
        lock = RunLock(folder) if leader else _NoLock()
        if not lock.acquire():
            holder = lock.holder() or {}
            echo(f"{label}: running in another process (pid {holder.get('pid', '?')} on {holder.get('host', '?')}); skipped")
            outcome.busy += 1
            continue
        try:
            if _done(folder) and not overwrite:  # finished by another process since we looked
                echo(f"{label}: done already (skipped)")
                outcome.skipped += 1
                continue
            if lock.took_over_stale:
                echo(f"{label}: took over the lock of a process that is gone (pid {lock.previous.get('pid')})")
            remaining = len(runs) - i + 1
            eta = f", ETA {_clock(spent / executed * remaining)}" if executed else ""
            echo(f"{label}: elapsed {_clock(time.perf_counter() - started)}{eta}")
            t0 = time.perf_counter()
            record = execute(run, folder, fresh=overwrite)
            spent += time.perf_counter() - t0
            executed += 1
        finally:
            lock.release()
        if record.resumed_from_step:
            echo(f"    resumed from step {record.resumed_from_step}")
        if record.status == "success":
            outcome.done += 1
            m = record.metrics
            echo(f"    val mR {m['val/mR']:.2f}, test mR {m['test/mR']:.2f} ({record.cost['trainable_params']:,} trainable)")
        else:
            outcome.failed += 1
            echo(f"    FAILED: {record.error}")
    return outcome


class _NoLock:
    """What DDP ranks above zero hold: rank zero's lock covers the whole process group."""

    took_over_stale = False
    previous = None

    def acquire(self) -> bool:
        return True

    def release(self) -> None:
        pass


def _done(folder: Path) -> bool:
    old = Record.read(folder / RECORD_FILE)
    return old is not None and old.status == "success"


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
