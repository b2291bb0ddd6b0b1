"""Hyper-parameter search with Optuna: ``rdbench tune SUITE --run NAME --trials N``.

The search space is declared in the suite, beside the runs, as dotted slot paths::

    search:
      optimizer.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      adapter.bottleneck: {type: int, low: 8, high: 64, step: 8}
      adapter.vision_mixer: {type: categorical, choices: [attention/diff, attention/mhsa]}

Each trial is an ordinary run of the suite (the named run, with the sampled values set as
``--set`` overrides would be), trained and recorded like any other under
``results/<suite>/tune-<study>/trial<k>/``. Optuna's TPE sampler proposes values; a median
pruner is fed the validation mR after every epoch by a Lightning callback, and a pruned trial is
recorded as ``pruned``. The study lives in an Optuna storage: an SQLite file under ``results/``
by default, any Optuna URL otherwise (PostgreSQL or MySQL for many machines), or
``journal:///path/to/file.log`` for Optuna's journal file storage on a shared filesystem.

Several ``rdbench tune`` processes on one storage and study share the work: trial numbers are
handed out by the storage, and a worker runs only trials numbered below ``--trials``, so the
study gets exactly that many trials however many workers join.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import lightning as L
import optuna
import yaml

from rdbench.errors import ConfigError
from rdbench.suite import Suite, _nest, expand, load_suite, merge
from rdbench.resolution.run import resolve_plan

SPACE_TYPES = ("float", "int", "categorical")


class PrunedRun(optuna.TrialPruned):
    """Raised by the pruning callback; the run's record gets status ``pruned``."""

    rdbench_status = "pruned"


class OptunaPruning(L.Callback):
    """Report the monitored validation metric to the trial after every validation, and stop
    the run when the pruner says so (the role of optuna-integration's Lightning callback,
    without the extra package)."""

    def __init__(self, trial: optuna.Trial, monitor: str = "val/mR"):
        self.trial, self.monitor = trial, monitor

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        epoch = trainer.current_epoch
        self.trial.report(float(trainer.callback_metrics[self.monitor]), step=epoch)
        if self.trial.should_prune():
            raise PrunedRun(f"pruned by the median pruner after epoch {epoch}")


@dataclass
class TuneResult:
    study: optuna.Study
    best_params: dict[str, Any] | None
    snippet_path: Path | None
    ran: int


def check_space(suite: Suite) -> dict[str, dict[str, Any]]:
    space = suite.search or {}
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{suite.path}: `search` must map dotted slot paths to ranges, e.g. optimizer.lr: {{type: float, low: 1.0e-4, high: 1.0e-2, log: true}}")
    for path, spec in space.items():
        where = f"{suite.path}: search.{path}"
        if not isinstance(spec, dict) or spec.get("type") not in SPACE_TYPES:
            raise ConfigError(f"{where}: needs `type` one of {', '.join(SPACE_TYPES)}")
        if spec["type"] == "categorical":
            if not isinstance(spec.get("choices"), list) or not spec["choices"]:
                raise ConfigError(f"{where}: a categorical needs a non-empty `choices` list")
        elif not all(isinstance(spec.get(k), (int, float)) for k in ("low", "high")) or spec["low"] >= spec["high"]:
            raise ConfigError(f"{where}: needs numbers `low` < `high`")
    return space


def sample(trial: optuna.Trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    values = {}
    for path, spec in space.items():
        if spec["type"] == "float":
            values[path] = trial.suggest_float(path, spec["low"], spec["high"], log=bool(spec.get("log", False)))
        elif spec["type"] == "int":
            values[path] = trial.suggest_int(path, int(spec["low"]), int(spec["high"]), step=int(spec.get("step", 1)), log=bool(spec.get("log", False)))
        else:
            values[path] = trial.suggest_categorical(path, spec["choices"])
    return values


def make_storage(url: str | None, default: Path):
    if url is None:
        default.parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{default.resolve()}"
    if url.startswith("journal://"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(url.removeprefix("journal://")))
    if url.startswith("sqlite"):
        # Workers started together race to create the schema, and SQLite serialises writers:
        # wait for the lock instead of failing, and retry the schema race.
        return _retry(lambda: optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}}))
    return url


def _retry(make, attempts: int = 8):
    import random

    for attempt in range(attempts):
        try:
            return make()
        except Exception:  # sqlalchemy's IntegrityError/OperationalError while another worker creates tables
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 + random.random())


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
    from rdbench.training.runner import run_dir

    suite = load_suite(suite_path)
    space = check_space(suite)
    if run not in suite.runs:
        raise ConfigError(f"{suite.path}: --run {run!r} is not a run of the suite; runs are {', '.join(suite.runs)}")
    base_plan = expand(suite, only=[run], overrides=overrides)[0]
    resolve_plan(base_plan, suite.path)  # the untuned run must be valid before any trial starts
    name = study_name or f"{suite.name}-{run}"
    results = Path(results)
    study = _retry(lambda: optuna.create_study(
        study_name=name,
        storage=make_storage(storage, results / suite.name / "optuna.db"),
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
        direction="maximize",
        load_if_exists=True,
    ))
    ran = 0

    def objective(trial: optuna.Trial) -> float:
        values = sample(trial, space)
        config = base_plan.config
        for path, value in values.items():
            config = merge(config, _nest(path.split("."), value))
        plan = type(base_plan)(suite.name, f"tune-{name}/trial{trial.number}", base_plan.run_index, base_plan.seed, config)
        resolved = resolve_plan(plan, suite.path)
        echo(f"[trial {trial.number}] {', '.join(f'{k}={v}' for k, v in values.items())}")
        record = execute(resolved, run_dir(results, resolved.plan), extra_callbacks=[OptunaPruning(trial, resolved.selection.monitor)])
        trial.set_user_attr("record", str(run_dir(results, resolved.plan) / "record.json"))
        if record.status == "pruned":
            echo(f"    pruned ({record.error})")
            raise optuna.TrialPruned(record.error)
        if record.status != "success":
            raise RuntimeError(record.error)
        score = record.metrics[resolved.selection.monitor]
        echo(f"    {resolved.selection.monitor} {score:.2f}")
        return score

    deadline = None if timeout is None else time.monotonic() + timeout
    while deadline is None or time.monotonic() < deadline:
        trial = study.ask()
        if trial.number >= trials:  # the study has its trials: hand this number back unrun
            trial.set_user_attr("rdbench", "over budget, never run")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            break
        try:
            value = objective(trial)
            study.tell(trial, value)
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        except Exception as exc:  # a failed trial is recorded and the search goes on
            echo(f"    failed: {exc}")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        ran += 1
    best = _best(study)
    snippet = None
    if best is not None:
        snippet = results / suite.name / f"tune-{name}" / "best.yaml"
        write_snippet(snippet, suite, run, best)
    return TuneResult(study, best.params if best else None, snippet, ran)


def _best(study: optuna.Study):
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return max(done, key=lambda t: t.value) if done else None


def write_snippet(path: Path, suite: Suite, run: str, best) -> None:
    """A run entry to paste into the suite: the tuned run's own patch with the best values."""
    from rdbench.atomic import write_atomic

    patch: dict[str, Any] = dict(suite.runs[run])
    for dotted, value in best.params.items():
        patch = merge(patch, _nest(dotted.split("."), value))
    text = (
        f"# Best of study trial {best.number}: {best.value:.2f} validation mR.\n"
        f"# Paste under `runs:` in {suite.path}.\n"
        + yaml.safe_dump({f"{run}-tuned": patch}, sort_keys=False)
    )
    write_atomic(path, text)
