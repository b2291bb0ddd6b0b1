"""A suite as a SLURM job array, through submitit: ``rdbench run SUITE --launcher slurm``.

One array task per (run, seed) that has no successful record yet. Each task runs exactly what a
local ``rdbench run SUITE --only RUN --seeds SEED`` runs (:func:`rdbench.training.runner.run_suite`),
so the semantics are a local run's: finished runs are skipped, a per-run lock keeps two tasks
(or a task and a local process) off one run, and a run that stopped part-way resumes from its
``checkpoints/last.ckpt`` (resume is exact, docs/reliability.md).

Preemption and time limits: submitit asks SLURM to signal a task shortly before its time limit
or when it is preempted, and requeues it through :class:`SuiteTask`'s ``checkpoint``; the
requeued task resumes the run from its last resumable checkpoint (every
``RDBENCH_CHECKPOINT_EVERY`` steps and at each epoch's end). A task cancelled with ``scancel``
gets SIGTERM: the run saves a resumable checkpoint at the step it is on and records itself
``interrupted``; the next ``rdbench run ... --launcher slurm`` submits it again and it resumes.

The job ids are written beside the results (``<results>/<suite>/slurm/jobs.jsonl``, one line per
array task naming its run and seed; submitit's logs in ``<results>/<suite>/slurm/<job id>/``).
Without ``--no-wait`` the command waits for every task and prints the usual summary read from
the records; a task is over when its result file exists or SLURM no longer lists it (so a
cluster without accounting, where ``sacct`` fails, works too). Tasks still queued or running
from an earlier submission are not submitted twice.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rdbench.errors import RdbenchError
from rdbench.optional import require
from rdbench.resolution.run import ResolvedRun, resolve_suite
from rdbench.results.record import Record
from rdbench.training.run_state import is_done, run_dir

JOBS_FILE = "jobs.jsonl"
#: Seconds between two looks at the queue while waiting.
POLL_S = 5.0


@dataclass
class SlurmOptions:
    """What ``--partition``, ``--gpus-per-task``, ``--cpus-per-task``, ``--time`` and ``--no-wait`` ask."""

    partition: str | None = None
    gpus_per_task: int = 0
    cpus_per_task: int = 1
    time_min: int = 60
    wait: bool = True
    #: seconds before the time limit at which SLURM signals a task to requeue itself
    signal_delay_s: int = 90


class SuiteTask:
    """One array task: one run at one seed of a suite, run as a local ``rdbench run`` would.

    submitit's ``Checkpointable`` protocol: on a time-out or a preemption it calls
    :meth:`checkpoint`, which requeues the same task without ``overwrite`` (an overwritten run
    that was requeued must resume, not start over)."""

    def __call__(self, suite: str, results: str, run: str, seed: int, overrides: dict, quick: bool,
                 overwrite: bool) -> dict[str, int]:
        from rdbench.training.interrupt import stop_on_signals
        from rdbench.training.runner import run_suite

        with stop_on_signals():
            outcome = run_suite(suite, results=Path(results), only=[run], seeds=[seed], overrides=overrides,
                                overwrite=overwrite, quick=quick)
        return {"done": outcome.done, "skipped": outcome.skipped, "failed": outcome.failed}

    def checkpoint(self, suite, results, run, seed, overrides, quick, overwrite):
        import submitit

        return submitit.helpers.DelayedSubmission(SuiteTask(), suite, results, run, seed, overrides, quick, False)


def pending(runs: list, results: Path, overwrite: bool) -> list:
    """The (run, seed)s to submit: every resolved run without a successful record (all with
    ``overwrite``); a run whose plugin cannot be imported is submitted too, to be recorded."""
    return [r for r in runs if overwrite or not (isinstance(r, ResolvedRun) and is_done(run_dir(results, r.plan)))]


def queued(folder: Path) -> dict[tuple[str, int], str]:
    """(run, seed) -> job id of the tasks an earlier submission left queued or running."""
    lines = _read_jobs(folder)
    if not lines:
        return {}
    listed = _squeue({line["array"] for line in lines})
    return {(line["run"], line["seed"]): line["job_id"] for line in lines if line["job_id"] in listed}


def launch(suite: str | Path, *, results: Path, options: SlurmOptions, only=None, seeds=None, overrides=None,
           overwrite: bool = False, quick: bool = False, echo: Callable[[str], None] = print) -> dict[str, int]:
    """Submit the suite's pending (run, seed)s as one array; wait for them unless told not to.
    Returns the counts of the summary line: done, failed, skipped, queued, submitted."""
    require("submitit", "--launcher slurm", "slurm")
    import submitit

    runs = resolve_suite(suite, only=only, seeds=seeds, overrides=overrides, quick=quick)
    if not runs:
        raise RdbenchError(f"{suite}: no run to launch")
    name = runs[0].plan.suite
    folder = Path(results).resolve() / name / "slurm"
    todo = pending(runs, Path(results), overwrite)
    skipped = len(runs) - len(todo)
    already = queued(folder)
    waiting = [r for r in todo if (r.plan.run, r.plan.seed) in already]
    for r in waiting:
        echo(f"{name}/{r.plan.label}: queued already as job {already[(r.plan.run, r.plan.seed)]}; not submitted again")
    todo = [r for r in todo if (r.plan.run, r.plan.seed) not in already]
    counts = {"submitted": len(todo), "skipped": skipped, "queued": len(waiting), "done": 0, "failed": 0}
    if skipped:
        echo(f"{skipped} run(s) done already (skipped; --overwrite reruns them)")
    jobs = []
    if todo:
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
        executor.update_parameters(name=f"rdbench-{name}", timeout_min=options.time_min, cpus_per_task=options.cpus_per_task,
                                   tasks_per_node=1, nodes=1, slurm_signal_delay_s=options.signal_delay_s,
                                   **({"slurm_partition": options.partition} if options.partition else {}),
                                   **({"gpus_per_node": options.gpus_per_task} if options.gpus_per_task else {}))
        task = SuiteTask()
        with executor.batch():
            for r in todo:
                jobs.append(executor.submit(task, str(Path(suite).resolve()), str(Path(results).resolve()), r.plan.run,
                                            r.plan.seed, overrides or {}, quick, overwrite))
        _write_jobs(folder, [{"job_id": job.job_id, "array": job.job_id.split("_")[0], "run": r.plan.run,
                              "seed": r.plan.seed, "submitted": time.strftime("%Y-%m-%dT%H:%M:%S")}
                             for job, r in zip(jobs, todo)])
        echo(f"submitted {len(jobs)} array task(s) as SLURM job {jobs[0].job_id.split('_')[0]} "
             f"(job ids in {folder / JOBS_FILE})")
    if not options.wait:
        echo(f"not waiting: `rdbench run {suite} --launcher slurm` again submits what is left, "
             "`rdbench compare` shows what is done")
        return counts
    ids = [job.job_id for job in jobs] + [already[(r.plan.run, r.plan.seed)] for r in waiting]
    wait_for(ids, {job.job_id: job.paths.result_pickle for job in jobs}, echo)
    for r in [*todo, *waiting]:
        record = Record.read(run_dir(Path(results), r.plan))
        status = record.status if record is not None else "no record"
        if record is not None and record.resumed_from_step:
            echo(f"{name}/{r.plan.label}: resumed from step {record.resumed_from_step}")
        if status == "success":
            counts["done"] += 1
        else:
            counts["failed"] += 1
            why = (record.error if record is not None and record.error else "the task ended without a record "
                   f"(see {folder}/<job id>/)")
            echo(f"{name}/{r.plan.label}: {status.upper()}: {why}")
    return counts


def wait_for(ids: list[str], results: dict[str, Path], echo: Callable[[str], None], poll_s: float = POLL_S) -> None:
    """Until every task is over: its result file exists, or SLURM no longer lists it."""
    left = set(ids)
    while left:
        listed = _squeue({i.split("_")[0] for i in left})
        over = {i for i in left if (i in results and results[i].exists()) or i not in listed}
        if over:
            left -= over
            echo(f"    {len(ids) - len(left)}/{len(ids)} task(s) over")
        if left:
            time.sleep(poll_s)


def _squeue(arrays: set[str]) -> set[str]:
    """The job ids (``<array>_<task>``, arrays expanded) SLURM lists as queued or running."""
    if not arrays:
        return set()
    done = subprocess.run(["squeue", "--noheader", "--array", "--format=%i", "--jobs", ",".join(sorted(arrays))],
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0 and "Invalid job id" not in done.stderr:
        raise RdbenchError(f"squeue failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    return {line.strip() for line in done.stdout.splitlines() if line.strip()}


def _read_jobs(folder: Path) -> list[dict[str, Any]]:
    try:
        text = (folder / JOBS_FILE).read_text(encoding="utf-8")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and {"job_id", "array", "run", "seed"} <= set(item):
            out.append(item)
    return out


def _write_jobs(folder: Path, lines: list[dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / JOBS_FILE, "a", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
