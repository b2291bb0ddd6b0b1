"""One run at one seed: assemble, train with resumable checkpoints, select on validation, test once.

The record (:class:`rdbench.results.record.Record`) is written atomically at the end, whatever
happened. Checkpoints keep what trains (the adapter's and loss's tensors, or the backbone under
full fine-tuning) plus the optimiser state, never the frozen backbone: ``checkpoints/last.ckpt``
(every ``CHECKPOINT_EVERY`` steps and at each epoch's end) lets a rerun resume after a crash or
``kill -9``, and ``checkpoints/best.ckpt`` holds the weights selected on the validation split.
Every checkpoint goes through :class:`~rdbench.training.checkpoint_io.AtomicCheckpointIO`
(temporary file, fsync, rename), and is loaded with ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import shutil
import signal
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch.utilities.exceptions import SIGTERMException

from rdbench.atomic import replace_file, write_json, write_yaml
from rdbench.data.table import table_fingerprint
from rdbench.errors import RdbenchError
from rdbench.resolution.run import ResolvedRun, Unresolvable, identity
from rdbench.results.record import CONFIG_FILE, RANKS_FILE, Record, code_version, now, package_versions
from rdbench.training.assemble import Assembly, assemble
from rdbench.training import trackers
from rdbench.training.evaluate import evaluate
from rdbench.training.interrupt import Interrupted, StopAtStep, received

#: Optimiser steps between resumable checkpoints (and one at every epoch's end); the
#: environment variable ``RDBENCH_CHECKPOINT_EVERY`` sets another interval (a preemptible
#: cluster with long epochs may want it shorter). Resuming is exact wherever the run stopped
#: (docs/reliability.md), so the interval changes how much is redone, never the results.
CHECKPOINT_EVERY = 50


def checkpoint_every() -> int:
    value = os.environ.get("RDBENCH_CHECKPOINT_EVERY", "").strip()
    if not value:
        return CHECKPOINT_EVERY
    if not value.isdigit() or int(value) < 1:
        raise RdbenchError(f"RDBENCH_CHECKPOINT_EVERY={value!r}: expected a whole number of optimiser steps >= 1")
    return int(value)


def is_rank_zero() -> bool:
    """False in the extra processes of a DDP run (Lightning's launcher, torchrun, SLURM): they
    run the same suite loop in lockstep but leave files and messages to rank zero."""
    for var in ("RANK", "SLURM_PROCID"):
        if var in os.environ:
            return int(os.environ[var]) == 0
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def _new_record(plan: Any) -> Record:
    return Record(
        suite=plan.suite, run=plan.run, run_index=plan.run_index, seed=plan.seed, status="running",
        started_at=now(), provenance={"packages": package_versions(), "code_version": code_version()},
    )


def unresolved_record(run: Unresolvable) -> Record:
    """The record of a run that could not even be resolved (a plugin that fails to import)."""
    return failed_record(run, str(run.error))


def failed_record(run: ResolvedRun | Unresolvable, error: str) -> Record:
    """The record of a run that failed before it could start (its selection failed, say)."""
    record = _new_record(run.plan)
    record.status, record.error, record.finished_at = "failed", error, now()
    return record


def execute(run: ResolvedRun, folder: Path, fresh: bool = False, extra_callbacks: list | tuple = (),
            purpose: str = "run", search: dict[str, Any] | None = None, trained_in: Path | None = None) -> Record:
    """Train and evaluate one run at one seed; always returns (and writes) a record.

    A ``purpose="trial"`` run (a tuning trial) is selected and evaluated on validation only:
    the test split is never encoded, so no search can read it.

    A ``checkpoints/last.ckpt`` left by an interrupted attempt with the same resolved config is
    resumed unless ``fresh``; with another config it is discarded (it trained something else).

    ``search``: what the run's hyper-parameter selection did (:mod:`rdbench.training.selection`),
    added to the record's ``selection`` object beside the checkpoint selection.

    ``trained_in``: the folder of a selection candidate that trained this very config at this
    seed (:func:`rdbench.training.selection.trained_candidate`). Its selected checkpoint, training
    log and training summary are taken over instead of training again (training is
    deterministic per seed, so retraining would give the same weights), and the run is
    evaluated as usual; the record's ``selection.trained_in`` names the folder.
    """
    folder.mkdir(parents=True, exist_ok=True)
    config = run.config()
    resume = _resumable(folder, config) if not fresh else None
    writer = is_rank_zero()
    if resume is None and writer:
        for stale in (*(folder / "checkpoints").glob("*.ckpt"), *(folder / "checkpoints").glob("*.ckpt.pending")):
            stale.unlink()
    if writer:
        write_yaml(folder / CONFIG_FILE, config)
    record = _new_record(run.plan)
    record.purpose = purpose
    record.components = config["components"]
    try:
        with quiet_lightning():
            _train_and_evaluate(run, folder, record, resume, list(extra_callbacks), test=purpose != "trial",
                                trained_in=trained_in)
        record.status = "success"
        if writer:
            for done in ("last.ckpt", "last.ckpt.pending"):  # done: nothing to resume
                (folder / "checkpoints" / done).unlink(missing_ok=True)
    except (Interrupted, SIGTERMException) as exc:
        # a stop signal (rdbench.training.interrupt): the record says so, and the suite stops
        signum = exc.signum if isinstance(exc, Interrupted) else (received() or signal.SIGTERM)
        record.status = "interrupted"
        step = getattr(exc, "rdbench_step", None)
        record.error = f"interrupted by {signal.Signals(signum).name}" + (f" at step {step}" if step is not None else "")
        record.finished_at = now()
        if writer:
            record.write(folder)
        raise Interrupted(signum, f"during {run.plan.suite}/{run.plan.label}"
                          + (f" (step {step}, checkpointed)" if step else "")) from None
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # any failure of one run is recorded; the suite goes on
        # An exception may name its own status (an Optuna pruning is "pruned", not "failed").
        record.status = getattr(exc, "rdbench_status", "failed")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        record.error = f"{type(exc).__name__}: {first}".rstrip(": ")
        step = getattr(exc, "rdbench_step", None)
        if step is not None:
            record.failed_at_step = int(step)
        if not isinstance(exc, RdbenchError) and record.status == "failed" and writer:
            (folder / "error.log").write_text(traceback.format_exc())
    if search:
        record.selection = {**(record.selection or {}), **search}
    record.finished_at = now()
    if writer:
        record.write(folder)
    return record


#: Messages a user can do nothing about: Lightning's notice that SLURM's ``srun`` exists (it
#: is not used to launch a plain run), a deprecation inside Lightning's own pytree code, and
#: the renaming of every R@K metric for MLflow, and a resume finding its own checkpoints.
QUIET = (r".*The `srun` command is available on your system but is not used.*", r".*LeafSpec.*",
         # MLflow's metric names drop the "@" of R@K (val/i2t_R1): docs/trackers.md says so once
         r".*MLFlow only allows.*special characters in metric name.*",
         # a resumed run's checkpoint folder holds its own earlier checkpoints, by design
         r".*Checkpoint directory .* exists and is not empty.*")


@contextlib.contextmanager
def quiet_lightning():
    """Silence the warnings in :data:`QUIET` (and Lightning's start-up notices) for one run."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        for message in QUIET:
            warnings.filterwarnings("ignore", message=message)
        yield


def _resumable(folder: Path, config: dict[str, Any]) -> tuple[Path, int] | None:
    """The last checkpoint of an interrupted attempt at this very config and its step, if any.

    A checkpoint that cannot be loaded (a disk that filled, a copy cut short) is set aside as
    ``last.ckpt.corrupt`` with one warning and the run starts fresh, rather than failing every
    later attempt on the same file."""
    last = folder / "checkpoints" / "last.ckpt"
    try:
        old = yaml.safe_load((folder / CONFIG_FILE).read_text())
        same = isinstance(old, dict) and identity(old) == yaml.safe_load(yaml.safe_dump(identity(config)))
    except (OSError, yaml.YAMLError):
        return None
    if not (same and last.is_file()):
        return None
    try:
        state = torch.load(last, map_location="cpu", weights_only=True)
        step = int(state["global_step"])
    except Exception as exc:  # any unreadable file: truncated, zeroed, not a checkpoint
        aside = last.with_name("last.ckpt.corrupt")
        replace_file(last, aside)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"warning: {last}: cannot be resumed from ({first}); set aside as {aside.name}, "
              "training from the start", file=sys.stderr)
        return None
    return last, step


def _terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stdout
        return False


def _provenance(record: Record, run: ResolvedRun, parts: Assembly) -> None:
    c = run.components
    record.provenance["backbone"] = {"key": c["backbone"].key, **parts.backbone.provenance()}
    dataset = {"key": c["dataset"].key, **parts.dataset.describe(), **table_fingerprint(parts.table)}
    dataset["fingerprint"] = dataset.pop("sha256", None)
    record.provenance["dataset"] = dataset


def _train_and_evaluate(run: ResolvedRun, folder: Path, record: Record, resume: tuple[Path, int] | None, callbacks: list,
                        test: bool = True, trained_in: Path | None = None) -> None:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from rdbench.diagnostics.gradients import TowerGradients
    from rdbench.training.callbacks import EpochLines, ResumableCheckpoint, StepOnFailure
    from rdbench.training.checkpoint_io import AtomicCheckpointIO
    from rdbench.training.logs import ResumableCSVLogger

    parts = assemble(run)
    module, data = parts.module, parts.data
    _provenance(record, run, parts)
    record.cost = {
        "trainable_params": parts.trainable_params,
        "adapter_params": parts.adapter_params,
        "total_params": parts.total_params,
        "backbone_params": parts.backbone_params,
    }
    if module.features is not None:
        record.cost["feature_cache"] = True
    resume_from, resumed_step = resume if resume is not None else (None, None)
    towers = TowerGradients()
    checkpoint = ModelCheckpoint(
        dirpath=folder / "checkpoints", filename="best", monitor=run.selection.monitor, mode=run.selection.mode,
        save_top_k=1, save_weights_only=True,
    )
    # Progress bars on a terminal; elsewhere (a job log, CI, a file) one line per epoch. The
    # choice changes what is printed only, never the run, so config.yaml does not hold it.
    settings, lines = dict(run.trainer), []
    if not _terminal():
        settings["enable_progress_bar"], lines = False, [EpochLines()]
    # Trackers (the suite's logger slot) on rank zero, beside the CSV log every run keeps.
    loggers = trackers.make_loggers(run.loggers, folder, run.plan, resume is not None, resumed_step) if is_rank_zero() else []
    if loggers:
        record.provenance["trackers"] = trackers.start(loggers, folder, run.config())
    trainer = L.Trainer(
        **settings,
        callbacks=[checkpoint, ResumableCheckpoint(folder / "checkpoints" / "last.ckpt", checkpoint_every()),
                   StepOnFailure(), StopAtStep(), towers, *lines, *callbacks],
        plugins=[AtomicCheckpointIO()],
        # Nothing trains in a run that takes a candidate's training over: the candidate's log is
        # copied, and a CSV logger would clear its folder.
        logger=([ResumableCSVLogger(folder, name="logs", version="", keep_below_step=resumed_step)]
                if trained_in is None else []) + [logger for _, logger in loggers] or False,
        default_root_dir=folder,
    )
    status = "failed"
    try:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        will_train = record.cost["trainable_params"] > 0 and run.trainer.get("max_epochs") != 0 and run.trainer.get("max_steps") != 0
        if will_train and trained_in is not None:
            _take_over(trained_in, folder, record)
            record.selection = {"monitor": run.selection.monitor, **record.selection}
            taken = folder / record.selection["checkpoint"]
            module.load_trained(torch.load(taken, map_location="cpu", weights_only=True)["state_dict"], str(taken))
            will_train = False
        elif will_train:
            record.resumed_from_step = resumed_step
            trainer.fit(module, datamodule=data, ckpt_path=resume_from, weights_only=True)
            record.train = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
            record.train["epochs"] = trainer.current_epoch
            record.train["steps"] = trainer.global_step
            record.diagnostics["train"] = towers.summary()
        if trained_in is None:
            record.cost["train_time_s"] = round(time.perf_counter() - t0, 3)
            record.selection = {"monitor": run.selection.monitor, "best_score": None, "checkpoint": None}
        selected = None  # the validation loop's evaluation of the selected checkpoint, if it ran here
        if checkpoint.best_model_path:
            saved = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
            module.load_trained(saved["state_dict"], checkpoint.best_model_path)
            record.selection.update(best_score=float(checkpoint.best_model_score),
                                    checkpoint=str(Path(checkpoint.best_model_path).relative_to(folder)))
            selected = module.val_evaluations.get(saved.get("global_step"))
        for split in ("val", "test") if test else ("val",):
            if split == "val" and trained_in is not None and _took_over_val(trained_in, record):
                continue
            if split == "val" and selected is not None:
                # The checkpoint holds the very weights this evaluation saw (it was saved right
                # after it, on the same loader), so encoding the split again would repeat it.
                result = selected
            else:
                # the test split also under each public evaluation code's tie handling (test@pir/mR, ...)
                result = evaluate(trainer, module, data, split, lineages=split == "test")
            record.metrics.update({f"{split}/{k}": v for k, v in result.metrics.items()})
            for rule, values in result.lineages.items():
                record.metrics.update({f"{split}@{rule}/{k}": v for k, v in values.items()})
            record.eval[split] = dict(result.counts)
            record.diagnostics[split] = result.diagnostics if split == "test" else {
                k: v for k, v in result.diagnostics.items() if k != "per_class"}
        status = "success"
    finally:  # a W&B run left open would take the next run's metrics
        trackers.finish(loggers, record.metrics if status == "success" else {}, trainer.global_step, status)
    # Per-query test ranks, for paired significance tests across methods (same test queries).
    if test and is_rank_zero():
        write_json(folder / RANKS_FILE, {"split": "test", "i2t": result.ranks["i2t"].tolist(), "t2i": result.ranks["t2i"].tolist()})
    record.cost["peak_mem_bytes"], record.cost["peak_mem_kind"] = _peak_memory()


def _take_over(source: Path, folder: Path, record: Record) -> None:
    """Adopt the training done in ``source`` (a selection candidate of the same config and
    seed): its selected checkpoint (hard-linked where the file system allows, else copied), its
    training log, summary and training time, and its checkpoint selection."""
    done = Record.read(source / "record.json")
    assert done is not None and done.selection is not None
    checkpoint = Path(done.selection["checkpoint"])
    target = folder / checkpoint
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(source / checkpoint, target)
    except OSError:
        shutil.copyfile(source / checkpoint, target)
    log = source / "logs" / "metrics.csv"
    if log.is_file():
        (folder / "logs").mkdir(exist_ok=True)
        shutil.copyfile(log, folder / "logs" / "metrics.csv")
    record.train = dict(done.train)
    if "train" in done.diagnostics:
        record.diagnostics["train"] = dict(done.diagnostics["train"])
    record.cost["train_time_s"] = done.cost.get("train_time_s")
    record.selection = {"best_score": done.selection.get("best_score"), "checkpoint": str(checkpoint),
                        "trained_in": os.path.relpath(source, folder)}


def _took_over_val(source: Path, record: Record) -> bool:
    """Copy the validation results of the candidate whose training the run took over: it
    evaluated the same checkpoint on the same split. False when its record lacks them."""
    done = Record.read(source / "record.json")
    if done is None or "val" not in done.eval or "val/mR" not in done.metrics:
        return False
    record.metrics.update({k: v for k, v in done.metrics.items() if k.startswith("val/")})
    record.eval["val"] = dict(done.eval["val"])
    if "val" in done.diagnostics:
        record.diagnostics["val"] = dict(done.diagnostics["val"])
    return True


def _peak_memory() -> tuple[int, str]:
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated()), "cuda_max_allocated"
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale), "process_max_rss"
