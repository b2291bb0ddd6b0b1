"""Hyper-parameter search with Optuna: ``rdbench tune SUITE --run NAME --trials N``.

The search space is declared in the suite, beside the runs, as dotted slot paths::

    search:
      optimizer.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      adapter.bottleneck: {type: int, low: 8, high: 64, step: 8}
      adapter.vision_mixer: {type: categorical, choices: [attention/diff, attention/mhsa]}
      seeds: [0, 1]        # optional: train each trial at these seeds and average the monitor

Each trial is the named run with the sampled values set as ``--set`` overrides would be, trained
at the run's first seed (or at each of ``search.seeds``) and recorded under
``results/<suite>/tune-<study>/trial<k>/seed<s>/`` with ``purpose: trial``: a trial is selected
and evaluated on the validation split only, never on test, and ``rdbench compare`` leaves it out.
Optuna's TPE sampler proposes values; a median pruner is fed the validation monitor after every
epoch by a Lightning callback (first seed only), and a pruned trial is recorded as ``pruned``.
The pruner waits for a few complete trials (:func:`make_pruner`), never judges the first epoch,
and the callback never prunes after the last epoch (the training is done by then), so a one-epoch
trial is never pruned.

The study lives in an Optuna storage: an SQLite file under ``results/`` by default, any Optuna
URL otherwise (PostgreSQL or MySQL for many machines), or ``journal:///path/to/file.log`` for
Optuna's journal file storage on a shared filesystem. Several ``rdbench tune`` processes on one
storage and study share the work: a worker asks the storage for a new trial only while the study
has fewer than ``--trials`` trials, so the study gets exactly that many however many workers join.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import lightning as L
import optuna
import yaml

from rdbench.errors import ConfigError
from rdbench.optuna_storage import make_storage, retry as _retry, storage_label, trial_lock
from rdbench.resolution.select import check_space as check_ranges, sample
from rdbench.suite import Suite, _nest, expand, load_suite, merge
from rdbench.resolution.run import resolve_plan

SEEDS_KEY = "seeds"  # in `search:`, the seeds each trial trains at (not a searched value)
OVER_BUDGET = "over budget, never run"  # user attr of a trial number another worker won the race for


class PrunedRun(optuna.TrialPruned):
    """Raised by the pruning callback; the run's record gets status ``pruned``."""

    rdbench_status = "pruned"


class OptunaPruning(L.Callback):
    """Report the monitored validation metric to the trial after every validation (step = the
    0-based epoch), and stop the run when the pruner says so (the role of optuna-integration's
    Lightning callback, without the extra package).

    After the last epoch the value is reported but the pruner is not asked: the training is done,
    and a fully trained trial is worth its value (so a one-epoch trial is never pruned)."""

    def __init__(self, trial: optuna.Trial, monitor: str = "val/mR"):
        self.trial, self.monitor = trial, monitor

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        epoch = trainer.current_epoch
        self.trial.report(float(trainer.callback_metrics[self.monitor]), step=epoch)
        if not _last_validation(trainer) and self.trial.should_prune():
            raise PrunedRun(f"pruned by the median pruner after epoch {epoch + 1}")


def _last_validation(trainer) -> bool:
    """Whether this validation ends the training (the last epoch, or the step budget spent)."""
    max_epochs = getattr(trainer, "max_epochs", None)
    if max_epochs is not None and max_epochs >= 0 and trainer.current_epoch >= max_epochs - 1:
        return True
    max_steps = getattr(trainer, "max_steps", -1)
    return max_steps is not None and max_steps > 0 and getattr(trainer, "global_step", 0) >= max_steps


def make_pruner(trials: int) -> optuna.pruners.MedianPruner:
    """The median pruner with a warm-up: no pruning until max(2, min(5, trials // 4)) trials are
    complete (Optuna's own default is 5, most of a small study), and never on the first epoch's
    value (step 0, usually still in the learning-rate warm-up)."""
    return optuna.pruners.MedianPruner(n_startup_trials=max(2, min(5, trials // 4)), n_warmup_steps=1)


@dataclass
class TuneResult:
    study: optuna.Study
    best_params: dict[str, Any] | None
    snippet_path: Path | None
    ran: int
    storage: str = ""  # where the study lives, as --storage would name it (password hidden)
    seeds: list[int] = field(default_factory=list)
    monitor: str = "val/mR"
    budget: int = 0


def check_space(suite: Suite) -> dict[str, dict[str, Any]]:
    """The searched values of the suite's `search:` section (without its `seeds`), checked."""
    space = suite.search or {}
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{suite.path}: `search` must map dotted slot paths to ranges, e.g. optimizer.lr: {{type: float, low: 1.0e-4, high: 1.0e-2, log: true}}")
    search_seeds(suite)
    space = {path: spec for path, spec in space.items() if path != SEEDS_KEY}
    if not space:
        raise ConfigError(f"{suite.path}: `search` names no value to search, only `seeds`")
    check_ranges(space, f"{suite.path}: search")
    return space


def search_seeds(suite: Suite) -> list[int] | None:
    """`search.seeds`: the seeds every trial trains at, its value the mean over them (None: the
    run's first seed)."""
    seeds = (suite.search or {}).get(SEEDS_KEY) if isinstance(suite.search, dict) else None
    if seeds is None:
        return None
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise ConfigError(f"{suite.path}: search.seeds: needs a non-empty list of distinct integers, got {seeds!r}")
    return seeds


@contextlib.contextmanager
def _optuna_quiet() -> Iterator[None]:
    """Optuna's info lines ("A new study created in RDB with name: ...") read like rdbench's
    method names; rdbench prints its own line about the study instead."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def _next_trial(study: optuna.Study, trials: int, lock: Callable[[], Any]) -> optuna.Trial | None:
    """A new trial of the study while it has fewer than ``trials``, else None.

    Counting and asking happen under a lock every worker of the study takes
    (:func:`rdbench.optuna_storage.trial_lock`: a file lock for SQLite and journal files, an
    advisory lock of the server for PostgreSQL and MySQL), so two workers never both take the
    last number. Where no lock exists (another server), the one handed a number at or past
    ``trials`` closes it as FAIL, marked ``over budget, never run`` (Optuna cannot delete a
    trial)."""
    with lock():
        if len(study.get_trials(deepcopy=False)) >= trials:
            return None
        trial = study.ask()
    if trial.number >= trials:
        trial.set_user_attr("rdbench", OVER_BUDGET)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return None
    return trial


def tune(
    suite_path: str | Path,
    run: str,
    trials: int,
    *,
    study_name: str | None = None,
    storage: str | None = None,
    timeout: float | None = None,
    results: str | Path = "results",
    seed: int = 0,
    overrides=None,
    echo: Callable[[str], None] = print,
) -> TuneResult:
    from rdbench.training.execute import execute
    from rdbench.training.run_state import run_dir

    suite = load_suite(suite_path)
    space = check_space(suite)
    if run not in suite.runs:
        raise ConfigError(f"{suite.path}: --run {run!r} is not a run of the suite; runs are {', '.join(suite.runs)}")
    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    explicit_seeds = search_seeds(suite)
    base_plans = expand(suite, only=[run], seeds=explicit_seeds, overrides=overrides)
    if explicit_seeds is None:
        base_plans = base_plans[:1]  # the run's first seed
    seeds = [p.seed for p in base_plans]
    monitor = resolve_plan(base_plans[0], suite.path).selection.monitor
    for plan in base_plans[1:]:
        resolve_plan(plan, suite.path)  # the untuned run must be valid before any trial starts
    name = study_name or f"{suite.name}-{run}"
    results = Path(results)
    default_db = results / suite.name / "optuna.db"
    label = storage_label(storage, default_db)
    lock = trial_lock(storage, default_db, name)
    with _optuna_quiet():
        study = _retry(lambda: optuna.create_study(
            study_name=name,
            storage=make_storage(storage, default_db),
            sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=make_pruner(trials),
            direction="maximize",
            load_if_exists=True,
        ))
    so_far = len(study.get_trials(deepcopy=False))
    echo(f"study {name} in {label}: " + (f"{so_far} of {trials} trials already" if so_far else f"new, {trials} trials"))
    echo(f"trials train at seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
         + (", the monitor averaged" if len(seeds) > 1 else "")
         + ("" if explicit_seeds else " (the run's first seed; `seeds:` under `search:` sets others)"))
    ran = 0

    def objective(trial: optuna.Trial) -> float:
        # One sampler per trial number: workers sharing the study draw different values (the
        # same seeded sampler in every worker would propose the same first values to all).
        study.sampler = optuna.samplers.TPESampler(seed=seed + trial.number)
        values = sample(trial, space)
        echo(f"[trial {trial.number}] {format_params(values)}")
        runs = []
        for base in base_plans:
            config = base.config
            for path, value in values.items():
                config = merge(config, _nest(path.split("."), value))
            plan = type(base)(suite.name, f"tune-{name}/trial{trial.number}", base.run_index, base.seed, config)
            resolved = resolve_plan(plan, suite.path)
            runs.append((resolved, run_dir(results, resolved.plan)))
        trial.set_user_attr("records", [str(folder / "record.json") for _, folder in runs])
        scores = []
        for i, (resolved, folder) in enumerate(runs):
            # the pruner compares trials epoch by epoch on the first seed; later seeds run in full
            callbacks = [OptunaPruning(trial, monitor)] if i == 0 else []
            record = execute(resolved, folder, extra_callbacks=callbacks, purpose="trial")
            if record.status == "pruned":
                echo(f"    pruned ({record.error})")
                raise optuna.TrialPruned(record.error)
            if record.status != "success":
                raise RuntimeError(f"seed {resolved.plan.seed}: {record.error}")
            scores.append(record.metrics[monitor])
            echo(f"    seed {resolved.plan.seed}: {monitor} {scores[-1]:.2f}")
        if len(scores) > 1:
            echo(f"    mean {monitor} {sum(scores) / len(scores):.2f}")
        return sum(scores) / len(scores)

    deadline = None if timeout is None else time.monotonic() + timeout
    while deadline is None or time.monotonic() < deadline:
        trial = _next_trial(study, trials, lock)
        if trial is None:
            break
        try:
            value = objective(trial)
            study.tell(trial, value)
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        except KeyboardInterrupt:  # close the trial, so the study holds no trial running forever
            trial.set_user_attr("rdbench", "interrupted")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        except Exception as exc:  # a failed trial is recorded and the search goes on
            echo(f"    failed: {exc}")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        ran += 1
    best = _best(study)
    snippet = None
    if best is not None:
        snippet = results / suite.name / f"tune-{name}" / "best.yaml"
        write_snippet(snippet, suite, run, best, monitor)
    return TuneResult(study, best.params if best else None, snippet, ran, label, seeds, monitor, trials)


def _best(study: optuna.Study):
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return max(done, key=lambda t: t.value) if done else None


def format_params(params: dict[str, Any]) -> str:
    """``a=1, b=0.00125``: floats to 4 significant digits (the snippet keeps them exact)."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def summary(result: TuneResult) -> list[str]:
    """What ``rdbench tune`` prints at the end: trial counts, the best trial, where things are."""
    counts: dict[str, int] = {"complete": 0, "pruned": 0, "failed": 0}
    for t in result.study.trials:
        if t.user_attrs.get("rdbench") == OVER_BUDGET:
            name = "over budget (never run)"
        elif t.state == optuna.trial.TrialState.FAIL:
            name = "failed"
        else:
            name = t.state.name.lower()  # complete, pruned, running (another worker), waiting
        counts[name] = counts.get(name, 0) + 1
    total = sum(counts.values())
    seeds = ", ".join(map(str, result.seeds))
    lines = [
        f"study {result.study.study_name}: {total} of {result.budget} trials, "
        + ", ".join(f"{n} {s}" for s, n in counts.items()) + f" ({result.ran} run here)",
        f"  seed{'s' if len(result.seeds) > 1 else ' '}    {seeds}"
        + (f" ({result.monitor} averaged over them)" if len(result.seeds) > 1 else ""),
    ]
    best = _best(result.study)
    if best is not None:
        lines.append(f"  best     trial {best.number}: {result.monitor} {best.value:.2f} on validation, {format_params(best.params)}")
        lines.append(f"  snippet  {result.snippet_path}")
    lines.append(f"  study    {result.study.study_name} in {result.storage}")
    return lines


def write_snippet(path: Path, suite: Suite, run: str, best, monitor: str = "val/mR") -> None:
    """A run entry to paste into the suite: the tuned run's own patch with the best values."""
    from rdbench.atomic import write_atomic

    patch: dict[str, Any] = dict(suite.runs[run])
    for dotted, value in best.params.items():
        patch = merge(patch, _nest(dotted.split("."), value))
    text = (
        f"# Best of study trial {best.number}: {best.value:.2f} {monitor} (validation).\n"
        f"# Paste under `runs:` in {suite.path}.\n"
        + yaml.safe_dump({f"{run}-tuned": patch}, sort_keys=False)
    )
    write_atomic(path, text)
