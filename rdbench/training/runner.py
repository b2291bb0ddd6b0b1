"""Running suites: runs x seeds, one folder and one record each, failures isolated.

For every run and seed: write ``config.yaml`` (resolved, before anything is built), build the
components, ``fit`` with model selection on the validation split, reload the selected
checkpoint, evaluate test once (the validation metrics are those the selection computed for that
checkpoint), and write ``record.json`` atomically. A run whose
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

from rdbench.errors import DataError
from rdbench.resolution.inputs import missing_inputs
from rdbench.resolution.run import ResolvedRun, Unresolvable, resolve_plan, resolve_suite
from rdbench.resolution.select import budget_note, with_values
from rdbench.results.lock import RunLock
from rdbench.results.references import geometry_note
from rdbench.training.execute import execute, failed_record, is_rank_zero, unresolved_record
from rdbench.training.run_state import NoLock, config_changes, is_done, run_dir
from rdbench.training.selection import WAIT_POLL_S, Outcome, SelectionFailed, select, trained_candidate


@dataclass
class SuiteOutcome:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    busy: int = 0  # held by another live process
    changed: int = 0  # a successful record of another config: neither rerun nor skipped silently


def run_suite(
    path: str | Path,
    *,
    results: str | Path = "results",
    only: list[str] | None = None,
    seeds: list[int] | None = None,
    overrides=None,
    overwrite: bool = False,
    echo: Callable[[str], None] = print,
    quick: bool = False,
) -> SuiteOutcome:
    leader = is_rank_zero()
    if not leader:  # a DDP rank > 0: follow rank zero's loop silently, holding no locks
        echo = lambda _line: None  # noqa: E731
    runs = resolve_suite(path, only=only, seeds=seeds, overrides=overrides, quick=quick)
    check_inputs(runs, echo)
    note = budget_note({r.plan.run: r.select for r in runs if isinstance(r, ResolvedRun)})
    if note:
        echo(note)
    outcome = SuiteOutcome()
    started, eta, noted = time.perf_counter(), RunTimes(), set()
    chosen: dict[str, Outcome | SelectionFailed] = {}  # run name -> its selection, once per run
    said: set[str] = set()

    def once(line: str) -> None:  # a deferred selection, asked again, reads its candidates back
        if line not in said:
            said.add(line)
            echo(line)

    def attempt(i: int, run) -> bool:
        """Run one (run, seed); False when it must wait for a selection another process is
        training (then the suite goes on and comes back to it)."""
        if isinstance(run, Unresolvable):  # a broken plugin fails its own runs, not the suite
            if leader:
                unresolved_record(run).write(run_dir(Path(results), run.plan))
            echo(f"[{i}/{len(runs)}] {run.plan.suite}/{run.plan.label}: FAILED: {run.error}")
            outcome.failed += 1
            return True
        label = f"[{i}/{len(runs)}] {run.plan.suite}/{run.plan.label}"
        search, trained_in = None, None
        if run.select is not None:
            if run.plan.run not in chosen:
                once(f"{run.plan.suite}/{run.plan.run}: selecting {', '.join(run.select.space or run.select.grid)} "
                     f"on {run.select.metric} ({run.select.budget} candidates x {len(run.select.seeds)} seed(s))")
                try:
                    picked = select(run, Path(results), once, wait=False)
                except SelectionFailed as exc:
                    picked = exc
                if picked is None:
                    once(f"    {run.plan.run}: a candidate is training in another process; "
                         "its seeds wait, the suite goes on")
                    return False
                chosen[run.plan.run] = picked
            picked = chosen[run.plan.run]
            if isinstance(picked, SelectionFailed):
                if leader:
                    failed_record(run, str(picked)).write(run_dir(Path(results), run.plan))
                echo(f"{label}: FAILED: {picked}")
                outcome.failed += 1
                return True
            run, search = resolve_plan(with_values(run.plan, picked.chosen), path), picked.search
            trained_in = trained_candidate(run, picked, Path(results))
        _execute_one(i, run, label, search, trained_in)
        return True

    def _execute_one(i: int, run: ResolvedRun, label: str, search, trained_in) -> None:
        folder = run_dir(Path(results), run.plan)
        if is_done(folder) and not overwrite:
            changed = config_changes(folder, run)
            if changed:
                shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
                echo(f"{label}: CHANGED since its record ({shown}); not rerun: --overwrite reruns it")
                outcome.changed += 1
            else:
                echo(f"{label}: done already (skipped; --overwrite reruns it)")
                outcome.skipped += 1
            return
        lock = RunLock(folder) if leader else NoLock()
        try:
            acquired = lock.acquire()
        except OSError as exc:  # a file where the folder should be, a folder named .lock, no permission
            _obstructed(label, folder, exc)
            return
        if not acquired:
            holder = lock.holder() or {}
            echo(f"{label}: running in another process (pid {holder.get('pid', '?')} on {holder.get('host', '?')}); skipped")
            outcome.busy += 1
            return
        try:
            if is_done(folder) and not overwrite:  # finished by another process since we looked
                echo(f"{label}: done already (skipped)")
                outcome.skipped += 1
                return
            if lock.took_over_stale:
                echo(f"{label}: took over the lock of a process that is gone (pid {lock.previous.get('pid')})")
            estimate = eta.estimate([r.plan.run for r in runs[i - 1:]])
            echo(f"{label}: elapsed {_clock(time.perf_counter() - started)}{estimate}")
            t0 = time.perf_counter()
            try:
                record = execute(run, folder, fresh=overwrite, search=search, trained_in=trained_in)
            except OSError as exc:  # the folder cannot take the run's files (execute records all else)
                _obstructed(label, folder, exc)
                return
            eta.add(run.plan.run, time.perf_counter() - t0)
        finally:
            lock.release()
        _report(record, trained_in)

    def _obstructed(label: str, folder: Path, exc: OSError) -> None:
        where = exc.filename or folder
        echo(f"{label}: FAILED: {where}: cannot hold the run's files ({exc.strerror or type(exc).__name__}); no record written")
        outcome.failed += 1

    def _report(record, trained_in) -> None:
        if record.resumed_from_step:
            echo(f"    resumed from step {record.resumed_from_step}")
        if trained_in is not None and record.status == "success":
            echo(f"    trained as its selection's candidate {trained_in.parent.name}: evaluated, not trained again")
        if record.status == "success":
            outcome.done += 1
            m = record.metrics
            echo(f"    val mR {m['val/mR']:.2f}, test mR {m['test/mR']:.2f} ({record.cost['trainable_params']:,} trainable)")
            note = geometry_note(record)
            if note and note not in noted:  # once per suite: the split is the dataset's, not the run's
                noted.add(note)
                echo(f"note: {note}")
        else:
            outcome.failed += 1
            echo(f"    FAILED: {record.error}")

    # Runs whose selection another process (--jobs, or a second user) is still training are put
    # off, not waited for: this process goes on with the rest of the suite and comes back to
    # them. It sleeps only when every remaining run waits.
    pending = list(enumerate(runs, 1))
    while pending:
        deferred = [(i, run) for i, run in pending if not attempt(i, run)]
        if len(deferred) == len(pending):
            time.sleep(WAIT_POLL_S)
        pending = deferred
    return outcome


def check_inputs(runs: list, echo: Callable[[str], None]) -> None:
    """Inputs a suite names that are visibly missing (an unset ``env:`` variable, a checkpoint
    or dataset folder that is not there): when every run lacks one, stop before the first run
    with all of them; when some do, say so once, and those runs fail with their own record."""
    resolved = [r for r in runs if isinstance(r, ResolvedRun)]
    lacking = {id(r): missing_inputs(r) for r in resolved}
    problems: dict[str, set[str]] = {}  # the problem (without its run) -> the runs it stops
    for r in resolved:
        for line in lacking[id(r)]:
            problems.setdefault(line.split(": ", 1)[-1], set()).add(r.plan.run)
    if not problems:
        return
    names = sorted({r.plan.run for r in resolved})
    lines = [f"{problem} ({'every run' if len(stops) == len(names) else ', '.join(sorted(stops))})"
             for problem, stops in problems.items()]
    if resolved and all(lacking[id(r)] for r in resolved):
        raise DataError("no run can start, an input is missing: " + "; ".join(lines))
    for line in lines:
        echo(f"warning: {line}")


class RunTimes:
    """Durations of the runs executed so far, to estimate what is left: a run is estimated by
    the other seeds of the same run where there are some (methods differ in cost by 10x), else
    by the mean of every run so far, and the line says which."""

    def __init__(self) -> None:
        self.by_run: dict[str, list[float]] = {}

    def add(self, run: str, seconds: float) -> None:
        self.by_run.setdefault(run, []).append(seconds)

    def estimate(self, remaining: list[str]) -> str:
        every = [t for times in self.by_run.values() for t in times]
        if not every:
            return ""
        mean = sum(every) / len(every)
        seen = [r for r in remaining if r in self.by_run]
        total = sum(sum(self.by_run[r]) / len(self.by_run[r]) if r in self.by_run else mean for r in remaining)
        basis = "from the same runs' other seeds" if len(seen) == len(remaining) else "rough: some runs not timed yet"
        return f", ETA {_clock(total)} ({basis})"


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
