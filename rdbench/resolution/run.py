"""From a merged run config to a resolved run: every slot checked, nothing built.

Resolution is complete: the resolved run names every component that runs with all its
arguments. A single loss term becomes the composite it runs as, the evaluation transform
takes its default, every default argument is written out. This is what ``rdbench validate
--show`` prints and what ``config.yaml`` records before training, and
:func:`resolve_config` turns a written ``config.yaml`` back into the same run (``rdbench
reproduce``).
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jsonargparse.typing import NonNegativeInt, PositiveInt

from rdbench.errors import ConfigError, PluginImportError, RdbenchError
from rdbench.resolution.select import SelectSpec, family_space_of, parse_select, probe_values, with_values
from rdbench.resolution.spec import Resolved, check_plain, resolve
from rdbench.suite import COMPONENT_SLOTS, LIST_SLOTS, RunPlan, expand, load_suite, merge
from rdbench.training.trackers import OBSERVERS, check_installed

#: Slots a suite may leave out, and what they default to.
DEFAULT_SLOTS = {
    "adapter": "adapter/none",
    "loss": "loss/infonce",
    "optimizer": "optimizer/adamw",
    # the resize to the backbone's size: a no-op on images cached at that size
    "eval_transform": "transform/resize",
}
#: What a single loss term runs as: the only term of this composite (fixed weight 1).
COMPOSITE_LOSS = "loss/composite"
REQUIRED_SLOTS = ("backbone", "dataset")
#: Lightning Trainer settings rdbench chooses unless the suite says otherwise.
TRAINER_DEFAULTS: dict[str, Any] = {
    "max_epochs": 5,
    "accelerator": "auto",
    "devices": 1,
    "precision": "32-true",
    "num_sanity_val_steps": 0,
    "log_every_n_steps": 10,
    "enable_model_summary": False,
}
#: Always set: rdbench shards training and evaluation itself under DDP (see loaders.py).
TRAINER_FIXED = {"use_distributed_sampler": False}
#: Trainer arguments rdbench owns: a suite cannot set them (they would break records).
TRAINER_RESERVED = ("callbacks", "logger", "default_root_dir", "enable_checkpointing", "use_distributed_sampler")


@dataclass
class DataOptions:
    """Loader settings (the ``data`` slot)."""

    batch_size: PositiveInt = 32
    eval_batch_size: PositiveInt = 128
    num_workers: NonNegativeInt = 0
    #: Frozen-tower adapters (adapter/none, linear-probe, clip-adapter) run the towers once per
    #: split and train only their heads (rdbench.training.feature_cache); off: results unchanged.
    feature_cache: bool = False

    def __post_init__(self) -> None:
        for name in ("batch_size", "eval_batch_size"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name} must be at least 2 (a contrastive batch needs negatives)")
        if self.num_workers < 0:
            raise ValueError("num_workers must be >= 0")


@dataclass
class Selection:
    """Model selection (the ``selection`` slot): always on a validation metric."""

    monitor: str = "val/mR"
    mode: str = "max"

    def __post_init__(self) -> None:
        if not self.monitor.startswith("val/"):
            raise ValueError(f"model selection must use the validation split, not {self.monitor!r} (docs/metric.md, Protocol)")
        if self.mode not in ("max", "min"):
            raise ValueError("mode must be 'max' or 'min'")


@dataclass
class ResolvedRun:
    plan: RunPlan
    components: dict[str, Resolved]
    trainer: dict[str, Any]
    data: DataOptions
    selection: Selection
    notes: list[str] = field(default_factory=list)
    #: Hyper-parameter selection before the run's seeds train (the ``select`` slot), or None.
    select: SelectSpec | None = None
    #: Experiment trackers beside the CSV log (the ``logger`` slot; rdbench.training.trackers).
    loggers: list[Resolved] = field(default_factory=list)

    @property
    def seed(self) -> int:
        return self.plan.seed

    def config(self) -> dict[str, Any]:
        """The fully resolved config, as written to ``config.yaml`` and printed by validate."""
        return {
            "suite": self.plan.suite,
            "run": self.plan.run,
            "run_index": self.plan.run_index,
            "seed": self.plan.seed,
            "components": {slot: r.record() for slot, r in self.components.items()},
            "trainer": self.trainer,
            "data": asdict(self.data),
            "selection": asdict(self.selection),
            **({"select": self.select.as_config()} if self.select is not None else {}),
            **({"logger": [r.record() for r in self.loggers]} if self.loggers else {}),
        }


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """A resolved config without what only observes the run (trackers): two configs with the
    same identity train the same weights, so one's record or checkpoint serves the other."""
    return {k: v for k, v in config.items() if k not in OBSERVERS}


def resolve_plan(plan: RunPlan, where: str | Path) -> ResolvedRun:
    """Resolve every slot of one run; errors name the suite file, the run and the slot."""
    config = plan.config
    components: dict[str, Resolved] = {}
    for slot, kind in COMPONENT_SLOTS.items():
        spec = config.get(slot, DEFAULT_SLOTS.get(slot))
        if isinstance(spec, dict) and not ({"name", "class_path"} & set(spec)) and slot in DEFAULT_SLOTS:
            # arguments set (e.g. by --set optimizer.lr=...) on a slot the suite left at its default
            spec = merge(DEFAULT_SLOTS[slot], spec)
        if spec is None:
            if slot in REQUIRED_SLOTS:
                raise ConfigError(f"{where}: run {plan.run!r} has no `{slot}` (set it in defaults or in the run)")
            continue
        try:
            components[slot] = resolve(spec, kind)
            if slot == "loss":
                components[slot] = as_composite(components[slot])
        except PluginImportError as exc:  # fails this run only (the runner records it)
            raise PluginImportError(f"{where}: run {plan.run!r}, {slot}: {exc}") from None
        except RdbenchError as exc:
            raise ConfigError(f"{where}: run {plan.run!r}, {slot}: {exc}") from None
    try:
        trainer = check_trainer(config.get("trainer") or {})
        data = _dataclass(DataOptions, config.get("data") or {}, "data")
        selection = _dataclass(Selection, config.get("selection") or {}, "selection")
    except RdbenchError as exc:
        raise ConfigError(f"{where}: run {plan.run!r}, {exc}") from None
    loggers = [resolve_listed(spec, kind, f"{where}: run {plan.run!r}, {slot}")
               for slot, kind in LIST_SLOTS.items() for spec in listed(config.get(slot), f"{where}: run {plan.run!r}, {slot}")]
    adapter = components.get("adapter")
    select = parse_select(config.get("select"), f"{where}: run {plan.run!r}",
                          family_space_of(adapter.cls if adapter else None), adapter.key if adapter else "the adapter")
    if select is not None:  # every searched path must apply to this run (checked before training)
        probe = with_values(plan, probe_values(select))
        probe.config.pop("select", None)
        try:
            resolve_plan(probe, where)
        except ConfigError as exc:
            raise ConfigError(f"{exc} (with the values of select: {probe_values(select)})") from None
    return ResolvedRun(plan, components, trainer, data, selection, select=select, loggers=loggers)


def listed(value: Any, where: str) -> list[Any]:
    """A list slot's entries: a list, or one entry given alone (``logger: tensorboard``)."""
    if value is None:
        return []
    if isinstance(value, (str, dict)):
        return [value]
    if isinstance(value, list):
        return value
    raise ConfigError(f"{where}: expected a key, a {{name: key, ...}} mapping or a list of them, got {value!r}")


def resolve_listed(spec: Any, kind: str, where: str) -> Resolved:
    try:
        resolved = resolve(spec, kind)
        check_installed(resolved.key)
    except PluginImportError as exc:
        raise PluginImportError(f"{where}: {exc}") from None
    except RdbenchError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return resolved


def as_composite(loss: Resolved) -> Resolved:
    """A single loss term as the only term of ``loss/composite`` (named by its key's name)."""
    from rdbench.losses.base import CompositeLoss  # the one class the module optimises

    if issubclass(loss.cls, CompositeLoss):
        return loss
    name = loss.key.split("/", 1)[1] if loss.key else loss.cls.__name__.lower()
    return resolve({"name": COMPOSITE_LOSS, "terms": {name: loss.record()}}, "loss")


@dataclass
class Unresolvable:
    """A run whose components could not be imported (a broken plugin): recorded as failed."""

    plan: RunPlan
    error: PluginImportError


def resolve_suite(path: str | Path, *, only=None, seeds=None, overrides=None, quick: bool = False) -> list[ResolvedRun | Unresolvable]:
    """Load, expand and resolve every run of a suite (its ``quick`` variant if asked). A plugin
    that fails to import fails its own runs (returned as :class:`Unresolvable`); every other
    problem is raised at once."""
    suite = load_suite(path, quick=quick)
    runs: list[ResolvedRun | Unresolvable] = []
    for plan in expand(suite, only=only, seeds=seeds, overrides=overrides):
        try:
            runs.append(resolve_plan(plan, suite.path))
        except PluginImportError as exc:
            runs.append(Unresolvable(plan, exc))
    return runs


def plan_suite(path: str | Path, *, only=None, seeds=None, overrides=None, quick: bool = False) -> list[ResolvedRun]:
    """Every run of a suite resolved, or the first problem raised (``rdbench validate``)."""
    runs = resolve_suite(path, only=only, seeds=seeds, overrides=overrides, quick=quick)
    for run in runs:
        if isinstance(run, Unresolvable):
            raise run.error
    return [run for run in runs if isinstance(run, ResolvedRun)]


def resolve_config(config: dict[str, Any], where: str | Path) -> ResolvedRun:
    """The run a written ``config.yaml`` describes (its components in their recorded form)."""
    if not isinstance(config, dict):
        raise ConfigError(f"{where}: not a resolved run config (expected a mapping)")
    missing = [k for k in ("suite", "run", "seed", "components") if k not in config]
    if missing:
        raise ConfigError(f"{where}: not a resolved run config (missing {', '.join(missing)})")
    components = config["components"]
    if not isinstance(components, dict):
        raise ConfigError(f"{where}: `components` must be a mapping of slot to component")
    unknown = [slot for slot in components if slot not in COMPONENT_SLOTS]
    if unknown:
        raise ConfigError(f"{where}: unknown component slot(s) {', '.join(unknown)}")
    run_config = {**components, **{k: config[k] for k in ("trainer", "data", "selection", "select", *LIST_SLOTS) if k in config}}
    trainer = dict(run_config.get("trainer") or {})
    for key in TRAINER_FIXED:  # rdbench sets these itself; a written config repeats them
        trainer.pop(key, None)
    run_config["trainer"] = trainer
    plan = RunPlan(str(config["suite"]), str(config["run"]), int(config.get("run_index", 0)), int(config["seed"]), run_config)
    return resolve_plan(plan, where)


def _dataclass(cls: type, values: dict[str, Any], slot: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{slot}: expected a mapping, got {values!r}")
    params = {n: p for n, p in inspect.signature(cls).parameters.items()}
    unknown = [k for k in values if k not in params]
    if unknown:
        raise ConfigError(f"{slot}: unknown setting(s) {', '.join(unknown)}; settings are {', '.join(params)}")
    checked = check_plain(cls, slot, dict(values), set(), params, partial=True)
    try:
        return cls(**checked)
    except ValueError as exc:
        raise ConfigError(f"{slot}: {exc}") from None


@functools.lru_cache(maxsize=1)
def _trainer_params() -> dict[str, inspect.Parameter]:
    import lightning as L

    return dict(list(inspect.signature(L.Trainer.__init__).parameters.items())[1:])


#: Lightning's accelerator names (a plugin may pass an Accelerator object instead of a name).
ACCELERATORS = ("auto", "cpu", "cuda", "gpu", "mps", "tpu", "hpu", "xla")


def check_trainer(values: dict[str, Any]) -> dict[str, Any]:
    """Lightning Trainer arguments, checked against ``Trainer.__init__``; defaults filled in."""
    if not isinstance(values, dict):
        raise ConfigError(f"trainer: expected a mapping of Lightning Trainer arguments, got {values!r}")
    params = _trainer_params()
    for key, value in values.items():
        if key in TRAINER_RESERVED:
            raise ConfigError(f"trainer: {key!r} is set by rdbench (records and model selection depend on it)")
        if key not in params:
            import difflib

            close = difflib.get_close_matches(key, list(params), n=1)
            raise ConfigError(f"trainer: unknown Lightning Trainer argument {key!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
        if key in ("max_epochs", "max_steps", "min_epochs", "log_every_n_steps", "accumulate_grad_batches", "check_val_every_n_epoch"):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ConfigError(f"trainer: {key} must be an integer, got {value!r}")
            # Lightning's own "unlimited" is -1 for max_epochs and max_steps; nothing else may be negative
            lowest = -1 if key in ("max_epochs", "max_steps") else (0 if key in ("min_epochs", "log_every_n_steps") else 1)
            if value is not None and value < lowest:
                raise ConfigError(f"trainer: {key} must be at least {lowest}, got {value}")
        if key == "accelerator" and isinstance(value, str) and value not in ACCELERATORS:
            raise ConfigError(f"trainer: unknown accelerator {value!r}; one of {', '.join(ACCELERATORS)}")
        if key.startswith("limit_") and not isinstance(value, (int, float)):
            raise ConfigError(f"trainer: {key} must be a number, got {value!r}")
    return {**TRAINER_DEFAULTS, **values, **TRAINER_FIXED}
