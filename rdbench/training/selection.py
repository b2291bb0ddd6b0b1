"""Running a run's ``select`` slot: train the candidates on validation, choose, report.

Each candidate is the run with the candidate's values set (as ``--set`` would), trained at every
selection seed with ``purpose: trial`` (validation only; the test split is never encoded) in
``results/<suite>/<run>/select/c<k>/seed<s>/``. Candidate folders behave as run folders do: a
finished candidate whose config has not changed is read back instead of retrained, an
interrupted one resumes from its ``last.ckpt``, and a lock keeps two processes from training the
same candidate (the second waits for the first's score). So an interrupted selection resumes
where it stopped, and a finished one costs nothing on the next ``rdbench run``.

``trials`` candidates come from Optuna's TPE sampler, seeded, asked one at a time and told each
score: on a rerun the same scores read back from the records give the same proposals, so the
same folders are found. Equal scores keep the earlier candidate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from rdbench.errors import RdbenchError
from rdbench.resolution.run import ResolvedRun, resolve_plan
from rdbench.resolution.select import SelectSpec, sample, with_values
from rdbench.results.lock import RunLock
from rdbench.results.record import CONFIG_FILE, RECORD_FILE, Record
from rdbench.suite import RunPlan
from rdbench.training.execute import execute, is_rank_zero
from rdbench.training.run_state import NoLock, config_changes, is_done, run_dir

#: Seconds between looks at a candidate another process is training.
WAIT_POLL_S = 2.0


class SelectionFailed(RdbenchError):
    """No candidate of a run's selection produced a score."""


@dataclass
class Outcome:
    """What a selection chose, and what the record's ``selection`` object says about it."""

    chosen: dict[str, Any]
    search: dict[str, Any] = field(default_factory=dict)
    #: Index ``k`` of the chosen candidate (its folders are ``select/c<k>/seed<s>``).
    index: int = 0


def candidate_plan(run: ResolvedRun, k: int, values: dict[str, Any], seed: int) -> RunPlan:
    plan = with_values(run.plan, values, run=f"{run.plan.run}/select/c{k}")
    plan.config.pop("select", None)  # a candidate trains; it does not select again
    plan.config["seeds"] = [seed]
    return RunPlan(plan.suite, plan.run, plan.run_index, seed, plan.config)


def select(run: ResolvedRun, results: Path, echo: Callable[[str], None] = print,
           wait: bool = True) -> Outcome | None:
    """Train ``run.select``'s candidates (or read them back) and return the chosen values.

    Without ``wait``, every candidate no other process holds is trained, and None is returned
    when a candidate is still training elsewhere: the caller can do other work meanwhile and
    ask again (what is done is read back, not retrained)."""
    spec = run.select
    assert spec is not None
    name = run.plan.run
    scored: list[dict[str, Any]] = []
    if spec.method == "grid":
        candidates = spec.candidates()
        # First pass: train what no other process is training (--jobs N splits a grid this
        # way); second pass: wait for the candidates others held.
        first = [_score(run, k, values, len(candidates), results, echo, wait=False) for k, values in enumerate(candidates)]
        if not wait and any(c is None for c in first):
            return None
        scored = [c if c is not None else _score(run, k, values, len(candidates), results, echo)
                  for (k, values), c in zip(enumerate(candidates), first)]
    else:
        trials = _trials(run, spec, results, echo, wait)
        if trials is None:
            return None
        scored = trials
    done = [c for c in scored if c["score"] is not None]
    if not done:
        raise SelectionFailed(f"{name}: selection: every candidate failed ({scored[0]['status'] if scored else 'none ran'})")
    best = max(done, key=lambda c: c["score"])  # max keeps the first of equal scores
    index = next(k for k, c in enumerate(scored) if c is best)
    search = {
        "metric": spec.metric,
        "method": spec.method,
        "seeds": list(spec.seeds),
        "candidates": scored,
        "chosen": dict(best["values"]),
        "cost_s": round(sum(c.pop("_cost_s") for c in scored), 1),
        "space_from": spec.space_from,
    }
    shown = ", ".join(f"{p}={_fmt(v)}" for p, v in best["values"].items())
    echo(f"    {name}: chose {shown} ({spec.metric} {best['score']:.2f}, "
         f"{len(done)} of {len(scored)} candidates, {search['cost_s']:.0f} s)")
    return Outcome(dict(best["values"]), search, index)


def trained_candidate(run: ResolvedRun, picked: Outcome, results: Path) -> Path | None:
    """The chosen candidate's folder at ``run``'s seed when it already trained exactly what
    ``run`` would (same resolved config but for the run's name and ``select``; a selection seed),
    so the run can evaluate that training instead of repeating it. None otherwise."""
    if run.select is None or run.plan.seed not in run.select.seeds:
        return None
    plan = candidate_plan(run, picked.index, picked.chosen, run.plan.seed)
    folder = run_dir(results, plan)
    record = _reusable(folder, resolve_plan(plan, run.plan.suite))
    if record is None or record.selection is None or not record.selection.get("checkpoint"):
        return None
    if not (folder / record.selection["checkpoint"]).is_file():
        return None
    return folder if (folder / CONFIG_FILE).is_file() and _same_training(folder, run) else None


def _same_training(folder: Path, run: ResolvedRun) -> bool:
    """The candidate's config is the run's but for what names the run and what selects."""
    return all(key.split(".")[0] in ("run", "select") for key in config_changes(folder, run))


def _trials(run: ResolvedRun, spec: SelectSpec, results: Path, echo, wait: bool = True) -> list[dict[str, Any]] | None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # rdbench prints each candidate itself
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=spec.sampler_seed))
    scored = []
    for k in range(spec.trials):
        trial = study.ask()
        values = sample(trial, spec.space)
        result = _score(run, k, values, spec.trials, results, echo, wait)
        if result is None:  # held by another process (only without ``wait``)
            return None
        scored.append(result)
        if result["score"] is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, result["score"])
    return scored


def _score(run: ResolvedRun, k: int, values: dict[str, Any], total: int, results: Path, echo,
           wait: bool = True) -> dict[str, Any] | None:
    """One candidate at every selection seed: its mean validation score (None if it failed).
    Without ``wait``, a candidate another process is training gives None at once."""
    spec = run.select
    scores, cost, status = [], 0.0, "success"
    shown = ", ".join(f"{p}={_fmt(v)}" for p, v in values.items())
    for seed in spec.seeds:
        resolved = resolve_plan(candidate_plan(run, k, values, seed), run.plan.suite)
        record = _run_candidate(resolved, run_dir(results, resolved.plan), echo, wait)
        if record is None:
            return None
        cost += _wall(record)
        if record.status != "success" or spec.metric not in record.metrics:
            status = record.status if record.status != "success" else f"no {spec.metric}"
            echo(f"    {run.plan.run} select c{k + 1}/{total} {shown} seed {seed}: {status} {record.error or ''}".rstrip())
            break
        scores.append(float(record.metrics[spec.metric]))
    score = sum(scores) / len(scores) if status == "success" and scores else None
    if score is not None:
        echo(f"    {run.plan.run} select c{k + 1}/{total} {shown}: {spec.metric} {score:.2f}")
    return {"values": dict(values), "score": None if score is None else round(score, 4), "status": status, "_cost_s": cost}


def _run_candidate(run: ResolvedRun, folder: Path, echo, wait: bool = True) -> Record | None:
    """A candidate's record: read back when done with this config, else trained (under a lock;
    when another process holds it, wait for its record, or return None without ``wait``)."""
    while True:
        reusable = _reusable(folder, run)
        if reusable is not None:
            return reusable
        lock = RunLock(folder) if is_rank_zero() else NoLock()
        if lock.acquire():
            try:
                reusable = _reusable(folder, run)  # finished by another process since we looked
                return reusable if reusable is not None else execute(run, folder, purpose="trial")
            finally:
                lock.release()
        if not wait:
            return None
        time.sleep(WAIT_POLL_S)


def _reusable(folder: Path, run: ResolvedRun) -> Record | None:
    if not is_done(folder) or config_changes(folder, run):
        return None
    return Record.read(folder / RECORD_FILE)


def _wall(record: Record) -> float:
    try:
        return (datetime.fromisoformat(record.finished_at) - datetime.fromisoformat(record.started_at)).total_seconds()
    except (TypeError, ValueError):
        return 0.0


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
