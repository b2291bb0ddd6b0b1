"""Where a run's wall time goes: one run of the ablation suite on the embedded default, timed by phase.

The run is the ablation's ``cmaa`` row at seed 0 with its selected learning rate (tiny-rs,
synthetic-rs, 2 epochs, validation after the last), run exactly as ``rdbench run`` runs it
(:func:`rdbench.training.execute.execute`), with a timing callback beside rdbench's own:

* start-up: a fresh ``python -c "import rdbench.training.execute"`` (interpreter, torch,
  Lightning, open_clip), which every ``rdbench run`` process pays once;
* build: from the call to the start of ``fit`` (resolution is done; the model, adapter, data
  module and trainer are built, the backbone loaded from its cache);
* training steps: each batch from ``on_train_batch_start`` to ``on_train_batch_end`` (forward,
  backward, optimiser, the per-batch callbacks);
* data: the gaps before each training batch (the loader's next batch);
* validation: ``on_validation_start`` to ``on_validation_end``;
* checkpoint writes: the time inside :class:`~rdbench.training.checkpoint_io.AtomicCheckpointIO`;
* the rest of ``fit`` (epoch starts and ends, hooks), and after ``fit``: the selected checkpoint
  reloaded, the test split evaluated, the record written.

The figure is the share of a run spent outside training steps *as the suite runs it*: one
``rdbench run`` process (one per ``--jobs`` worker) runs many runs after paying its start-up
once, so each run carries its share of the start-up (the suite's runs and selection candidates
divided among the two workers the suite recommends). The same run started alone, paying the
whole start-up, is reported beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L

from rdbench.bench.common import Figure, Settings, median

SUITE = Path(__file__).resolve().parents[2] / "suites" / "ablation.yaml"
RUN = "cmaa"
LR = 1.0e-2  # one of the row's two candidates (the select slot is replaced by it)


class PhaseClock(L.Callback):
    """Wall-clock time of a fit's phases, from Lightning's hooks."""

    def __init__(self):
        self.marks: dict[str, float] = {}
        self.totals = {"steps": 0.0, "data": 0.0, "validation": 0.0}
        self.batches = 0
        self._ready = self._step = self._val = 0.0

    def on_fit_start(self, trainer, pl_module):
        self.marks["fit_start"] = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module):
        self._ready = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._step = time.perf_counter()
        self.totals["data"] += self._step - self._ready

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._ready = time.perf_counter()
        self.totals["steps"] += self._ready - self._step
        self.batches += 1

    def on_validation_start(self, trainer, pl_module):
        self._val = time.perf_counter()

    def on_validation_end(self, trainer, pl_module):
        self.totals["validation"] += time.perf_counter() - self._val
        self._ready = time.perf_counter()

    def on_fit_end(self, trainer, pl_module):
        self.marks["fit_end"] = time.perf_counter()


def startup_seconds(rounds: int = 2) -> float:
    def once() -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import rdbench.training.execute"], check=True, capture_output=True)
        return time.perf_counter() - t0
    return median([once() for _ in range(rounds)])


def timed_run():
    """The ablation's ``cmaa`` row at seed 0 with one of its learning rates, resolved."""
    from rdbench.resolution.run import resolve_plan
    from rdbench.suite import expand, load_suite

    [plan] = expand(load_suite(SUITE), only=[RUN], seeds=[0], overrides=[(["optimizer", "lr"], LR)])
    plan.config.pop("select", None)  # the candidate's learning rate replaces the selection
    return resolve_plan(plan, SUITE)


def one_run(folder: Path) -> dict[str, float]:
    """Run the ablation's ``cmaa`` row once into ``folder`` and time its phases."""
    from rdbench.training import checkpoint_io
    from rdbench.training.execute import execute

    run = timed_run()
    clock = PhaseClock()
    writes = {"s": 0.0, "n": 0}
    original = checkpoint_io.AtomicCheckpointIO.save_checkpoint

    def timed_save(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            writes["s"] += time.perf_counter() - t0
            writes["n"] += 1

    checkpoint_io.AtomicCheckpointIO.save_checkpoint = timed_save  # the bench's own stopwatch, put back below
    try:
        t0 = time.perf_counter()
        record = execute(run, folder, fresh=True, extra_callbacks=[clock])
        total = time.perf_counter() - t0
    finally:
        checkpoint_io.AtomicCheckpointIO.save_checkpoint = original
    if record.status != "success":
        raise RuntimeError(f"the timed run failed: {record.error}")
    fit = clock.marks["fit_end"] - clock.marks["fit_start"]
    inside = clock.totals["steps"] + clock.totals["data"] + clock.totals["validation"] + writes["s"]
    return {"total": total, "build": clock.marks["fit_start"] - t0, "steps": clock.totals["steps"],
            "data": clock.totals["data"], "validation": clock.totals["validation"], "checkpoints": writes["s"],
            "fit_other": max(fit - inside, 0.0), "after_fit": t0 + total - clock.marks["fit_end"],
            "batches": clock.batches, "checkpoint_writes": writes["n"]}


def step_throughput(seconds: float, threads: int) -> dict[str, float]:
    """Run in a child process: training steps per second of the ablation's ``cmaa`` row (tiny-rs,
    its real first batch) at ``threads`` torch threads, stepping for ``seconds`` after 3 warm-up
    steps."""
    import torch

    from rdbench.bench.peft import train_step
    from rdbench.training.assemble import assemble

    torch.set_num_threads(threads)
    built = assemble(timed_run())
    built.data.setup("fit")
    batch = next(iter(built.data.train_dataloader()))
    module = built.module.train()
    optimizer, _ = module.optimizer_factory.build([p for p in module.parameters() if p.requires_grad], 1000)

    for _ in range(3):
        train_step(module, optimizer, batch)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        train_step(module, optimizer, batch)
        steps += 1
    return {"steps_per_s": steps / (time.perf_counter() - t0)}


def _children(count: int, threads: int, seconds: float) -> float:
    """Steps per second of ``count`` concurrent child processes at ``threads`` threads, summed."""
    command = [sys.executable, "-m", "rdbench.bench.runtime", "--throughput", str(seconds), "--threads", str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    children = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                for _ in range(count)]
    total = 0.0
    for child in children:
        out, err = child.communicate()
        if child.returncode != 0:
            raise RuntimeError(f"throughput child failed:\n{err[-2000:]}")
        total += json.loads(out.strip().splitlines()[-1])["steps_per_s"]
    return total


def jobs_figure(settings: Settings) -> Figure:
    """One process with every core's thread against one single-thread process per core: the
    training-step throughput that decides ``--jobs`` (docs/performance.md)."""
    seconds, rounds = (5.0, 1) if settings.quick else (20.0, 2)
    cores = os.cpu_count() or 1
    one, many = [], []
    for _ in range(rounds):  # interleaved: the machine's load drifts
        one.append(_children(1, cores, seconds))
        many.append(_children(cores, 1, seconds))
    ratio = median([m / o for m, o in zip(many, one)])
    return Figure(
        f"Training throughput, {cores} processes x 1 thread / 1 process x {cores} threads (ablation row cmaa)", ratio, "x",
        "none (chooses --jobs)", None,
        [f"tiny-rs / synthetic-rs, the run's first batch (32 pairs), steps of {seconds:.0f} s per child after 3 warm-up "
         f"steps, {rounds} interleaved rounds: 1 x {cores} threads {median(one):.2f} steps/s, {cores} x 1 thread "
         f"{median(many):.2f} steps/s in all",
         (f"so the suites recommend `--jobs {cores}` on this machine: each worker takes one thread "
          "(rdbench run gives each its share of the cores)") if ratio > 1 else
         "so one process with every thread trains faster here than one process per core"],
        settings.command, {"one_process": median(one), "per_core": median(many)})


def trainings_per_worker(jobs: int = 2) -> float:
    """The ablation suite's trainings (each run and seed, plus the selection candidates that no
    seed reuses) per ``rdbench run`` worker at ``--jobs`` ``jobs``."""
    from rdbench.resolution.run import plan_suite

    runs = plan_suite(SUITE)
    trainings = len(runs)
    for row in {run.plan.run for run in runs}:
        select = next(run.select for run in runs if run.plan.run == row)
        if select is not None:  # each candidate at each selection seed; a run at a selection seed reuses one
            seeds = {run.plan.seed for run in runs if run.plan.run == row}
            trainings += select.budget * len(select.seeds) - len(seeds & set(select.seeds))
    return trainings / jobs


def figures(settings: Settings) -> list[Figure]:
    startup = startup_seconds()
    with tempfile.TemporaryDirectory(prefix="rdbench-bench-run-") as tmp:
        one_run(Path(tmp) / "warm")  # the backbone's cache and the data built once, untimed
        phases = one_run(Path(tmp) / "timed")
    per_worker = trainings_per_worker()
    share = startup / per_worker
    whole = share + phases["total"]
    outside = (whole - phases["steps"]) / whole
    alone = (startup + phases["total"] - phases["steps"]) / (startup + phases["total"])
    parts = [(f"start-up (imports; {startup:.2f} s per worker process, shared by its {per_worker:.0f} trainings)", share),
             ("build (model, data, trainer)", phases["build"]),
             ("training steps", phases["steps"]), ("data (waiting for batches)", phases["data"]),
             ("validation", phases["validation"]), ("checkpoint writes", phases["checkpoints"]),
             ("rest of fit (hooks, epoch ends)", phases["fit_other"]),
             ("after fit (reload the selected checkpoint, test, record)", phases["after_fit"])]
    return [Figure(
        "Run wall time outside training steps (ablation row cmaa, embedded default)", outside, "of the run",
        "<= 0.15", outside <= 0.15,
        [f"suites/ablation.yaml, run {RUN}, seed 0, lr {LR} (one of its two candidates), tiny-rs / synthetic-rs, "
         f"{phases['batches']} training steps, as `rdbench run --jobs 2` runs it, after one untimed run in the same "
         "process (backbone cache built, captions tokenized: a worker's later runs find both)",
         f"{whole:.1f} s in all: " + ", ".join(f"{name} {t:.2f} s ({t / whole:.0%})" for name, t in parts),
         f"{phases['checkpoint_writes']} checkpoint files written; a training step takes "
         f"{phases['steps'] / max(phases['batches'], 1) * 1e3:.0f} ms on average",
         f"the same run started alone (`rdbench run suites/ablation.yaml --only {RUN}`, the whole start-up its own): "
         f"{alone:.3f} of it outside training steps"],
        settings.command, {**phases, "startup": startup, "trainings_per_worker": per_worker, "alone": alone}),
        jobs_figure(settings)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rdbench.bench.runtime")
    parser.add_argument("--throughput", type=float, metavar="SECONDS", required=True,
                        help="child mode: print the cmaa row's training steps per second")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    print(json.dumps(step_throughput(args.throughput, args.threads)))


if __name__ == "__main__":
    main()
