"""Experiment trackers: the ``logger`` slot of a suite, Lightning loggers beside rdbench's CSV log.

A run always writes Lightning's CSV log (``logs/metrics.csv``): records, ``rdbench compare``
and exact resume read it. The ``logger`` slot adds trackers a lab already uses, by key or as
any Lightning logger's ``class_path``::

    defaults:
      logger: [tensorboard, mlflow]                  # keys of kind logger
    runs:
      lora:
        logger:
          - {name: wandb, offline: true}
          - {class_path: lightning.pytorch.loggers.CometLogger, init_args: {project: rs}}

The contract of the kind is Lightning's ``Logger`` itself (:class:`Tracker` accepts any of its
subclasses without importing Lightning), so every logger Lightning ships or a plugin writes fits.
Arguments are checked against the logger's own signature when the suite is resolved. String
arguments may name the run by placeholders, filled when the run starts: ``{run_dir}`` (the run's
folder), ``{results}`` (the results folder), ``{suite}``, ``{run}``, ``{seed}``. The built-in
keys use them to put each tracker's files with the run and to name tracker runs
``<run>/seed<seed>`` in an experiment named after the suite (docs/trackers.md).

A tracker observes a run and never changes it: ``config.yaml`` records the trackers, but adding
or removing one neither reruns a finished run nor discards a checkpoint to resume from.
"""

from __future__ import annotations

import abc
import json
import os
from pathlib import Path
from typing import Any

from rdbench.errors import ConfigError
from rdbench.optional import require
from rdbench.registry import REGISTRY, Entry, import_class_path

#: The config keys that observe a run without changing it (left out when configs are compared).
OBSERVERS = ("logger",)
#: What a run's trackers were, for a resume to continue the same tracker runs.
TRACKERS_FILE = "trackers.json"
#: The key whose log is always written (naming it in the slot adds nothing).
CSV_KEY = "logger/csv"


class Tracker(abc.ABC):
    """Contract of kind ``logger``: a Lightning ``Logger`` class (``lightning.pytorch.loggers``).

    Lightning is imported only when a run builds its loggers, so the check below looks for the
    base class by name instead of importing it: any class with Lightning's ``Logger`` among its
    bases is a tracker."""

    contract_name = "lightning.pytorch.loggers.Logger"  # what an error names: the class users know

    @classmethod
    def __subclasshook__(cls, other: type) -> bool:
        return any(base.__name__ == "Logger" and base.__module__.startswith(("lightning.", "pytorch_lightning."))
                   for base in getattr(other, "__mro__", ()))


REGISTRY.define_kind("logger", Tracker)


def _lightning(name: str):
    return lambda: import_class_path(f"lightning.pytorch.loggers.{name}")


#: The built-in trackers: (key, Lightning class, module needed, extra, arguments, description).
BUILTIN = (
    (CSV_KEY, "CSVLogger", None, None, {"save_dir": "{run_dir}", "name": "logs", "version": ""},
     "Lightning's CSV log at logs/metrics.csv: always written (records and resume read it); naming it adds nothing."),
    ("logger/tensorboard", "TensorBoardLogger", "tensorboard", "tensorboard",
     {"save_dir": "{run_dir}", "name": "tensorboard", "version": "", "default_hp_metric": False},
     "TensorBoard event files in the run's folder (tensorboard --logdir results/)."),
    ("logger/mlflow", "MLFlowLogger", "mlflow", "mlflow",
     # MLflow 3 refuses its file store; an SQLite file beside the results is the local default.
     # MLFLOW_TRACKING_URI (a server, say) wins when set, as it does for MLflow itself.
     {"experiment_name": "{suite}", "run_name": "{run}/seed{seed}",
      "tracking_uri": os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///{results}/mlflow.db"},
     "An MLflow run per run and seed, in an experiment named after the suite (SQLite under results/ unless MLFLOW_TRACKING_URI is set)."),
    ("logger/wandb", "WandbLogger", "wandb", "wandb",
     # quiet: W&B's per-run summary would bury the suite's own progress lines
     {"save_dir": "{run_dir}", "project": "{suite}", "name": "{run}/seed{seed}", "settings": {"quiet": True}},
     "A Weights & Biases run per run and seed in a project named after the suite (offline: true, or WANDB_MODE=offline, needs no network)."),
)
NEEDS: dict[str, tuple[str, str]] = {}
for _key, _cls, _module, _extra, _args, _about in BUILTIN:
    REGISTRY.add(Entry(key=_key, source="builtin", description=_about, loader=_lightning(_cls), args=dict(_args),
                       example={"offline": True} if _key == "logger/wandb" else {}))
    if _module:
        NEEDS[_key] = (_module, _extra)


def check_installed(key: str | None) -> None:
    """One line naming the extra when a built-in tracker's package is missing (at resolution)."""
    if key in NEEDS:
        module, extra = NEEDS[key]
        require(module, key, extra)


def fill(value: Any, names: dict[str, str]) -> Any:
    """``value`` with ``{placeholder}`` names of the run filled in (strings, lists, mappings)."""
    if isinstance(value, str):
        for name, text in names.items():
            value = value.replace("{" + name + "}", text)
        return value
    if isinstance(value, dict):
        return {k: fill(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, names) for v in value]
    return value


def run_names(folder: Path, plan: Any) -> dict[str, str]:
    """The placeholders of one run: its folder, the results folder above it, suite, run, seed."""
    depth = len(Path(plan.suite, plan.run).parts) + 1  # run_dir: results/<suite>/<run>/seed<n>
    results = folder.parents[depth - 1] if len(folder.parents) >= depth else folder.parent
    return {"run_dir": str(folder), "results": str(results), "suite": plan.suite, "run": plan.run, "seed": str(plan.seed)}


def label_of(resolved: Any) -> str:
    return resolved.key or f"{resolved.cls.__module__}.{resolved.cls.__qualname__}"


def make_loggers(trackers: list, folder: Path, plan: Any, resumed: bool, resumed_step: int | None) -> list[tuple[str, Any]]:
    """Build the run's trackers (never the CSV log, which the run makes itself): ``(label,
    logger)`` pairs. On a resume, each continues the tracker run it started before where the
    logger can (MLflow's ``run_id``, W&B's ``id``; TensorBoard drops the events logged after
    the checkpoint, as the CSV log does)."""
    names = run_names(folder, plan)
    before = _read_trackers(folder) if resumed else {}
    out = []
    for resolved in trackers:
        if resolved.key == CSV_KEY:
            continue
        label = label_of(resolved)
        check_installed(resolved.key)
        args = {name: fill(value, names) for name, value in resolved.args.items()}
        args.update(_continuing(resolved.cls.__name__, before.get(label), resumed_step))
        try:
            logger = resolved.cls(**args)
        except ModuleNotFoundError as exc:  # a class_path logger whose package is missing
            raise ConfigError(f"logger {label}: {exc} (install the package it needs)") from None
        out.append((label, logger))
    return out


def _continuing(class_name: str, before: dict | None, resumed_step: int | None) -> dict[str, Any]:
    if class_name == "TensorBoardLogger" and resumed_step is not None:
        return {"purge_step": resumed_step}  # TensorBoard hides events at or after this step
    if not before or not before.get("run"):
        return {}
    if class_name == "MLFlowLogger":
        return {"run_id": before["run"]}
    if class_name == "WandbLogger":
        return {"id": before["run"], "resume": "allow"}
    return {}


def reference(label: str, logger: Any) -> dict[str, Any]:
    """Where a tracker put the run: ``{logger, run, uri}``, for the record and for a resume."""
    experiment = logger.experiment  # opens the tracker's run, which gives it its id
    ref: dict[str, Any] = {"logger": label, "run": None if logger.version in (None, "") else str(logger.version)}
    kind = type(logger).__name__
    if kind == "MLFlowLogger":
        ref["uri"], ref["experiment"] = logger._tracking_uri, logger.name  # noqa: SLF001 (no public getter)
    elif kind == "WandbLogger":
        offline = getattr(experiment, "offline", True)  # asking an offline run for its URL warns
        ref["uri"] = str(Path(experiment.dir).parent) if offline else experiment.url
    elif getattr(logger, "log_dir", None):
        ref["uri"] = str(logger.log_dir)
    elif getattr(logger, "save_dir", None):
        ref["uri"] = str(logger.save_dir)
    return ref


def start(loggers: list[tuple[str, Any]], folder: Path, config: dict[str, Any]) -> list[dict[str, Any]]:
    """Open each tracker run (so it has an id before training), log the resolved config as its
    hyper-parameters, remember the runs for a resume; returns their references."""
    refs = [reference(label, logger) for label, logger in loggers]
    flat = {k: v for k, v in config.items() if k not in OBSERVERS}
    for _, logger in loggers:
        logger.log_hyperparams(flat)
    if refs:
        (folder / TRACKERS_FILE).write_text(json.dumps({r["logger"]: r for r in refs}, indent=1), encoding="utf-8")
    return refs


def finish(loggers: list[tuple[str, Any]], metrics: dict[str, float | None], step: int, status: str) -> None:
    """Log the run's final validation and test metrics, and close each tracker run. Metrics of
    the other tie rules (``test@pir/mR``) stay in the record: some trackers refuse ``@``."""
    final = {k: v for k, v in metrics.items() if v is not None and "@" not in k.split("/")[0]}
    for _, logger in loggers:
        if final:
            logger.log_metrics(final, step=step)
        logger.finalize(status)
        experiment = getattr(logger, "_experiment", None)
        if type(logger).__name__ == "WandbLogger" and experiment is not None:
            experiment.finish()  # Lightning leaves a W&B run open; the next run would join it


def _read_trackers(folder: Path) -> dict[str, dict]:
    try:
        data = json.loads((folder / TRACKERS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
