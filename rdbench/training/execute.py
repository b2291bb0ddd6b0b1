"""One run at one seed: build, train with resumable checkpoints, select on validation, test once.

The record is written atomically at the end, whatever happened. Checkpoints keep what trains
(the adapter's and loss's tensors, or the backbone under full fine-tuning) plus the optimiser
state, never the frozen backbone: ``checkpoints/last.ckpt`` (every ``CHECKPOINT_EVERY`` steps and
at each epoch's end, written atomically) lets a rerun resume after a crash or ``kill -9``, and
``checkpoints/best.ckpt`` holds the weights selected on the validation split. Both are loaded
with ``weights_only=True``.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
import yaml

from rdbench.errors import RdbenchError
from rdbench.results import record as rec
from rdbench.suite import RunPlan
from rdbench.training.plan import ResolvedRun

#: Optimiser steps between resumable checkpoints (and one at every epoch's end).
CHECKPOINT_EVERY = 50


def is_rank_zero() -> bool:
    """False in the extra processes of a DDP run (Lightning's launcher, torchrun, SLURM): they
    run the same suite loop in lockstep but leave files and messages to rank zero."""
    for var in ("RANK", "SLURM_PROCID"):
        if var in os.environ:
            return int(os.environ[var]) == 0
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def unresolved_record(plan: RunPlan, error: str) -> dict[str, Any]:
    """The record of a run that could not even be resolved (a plugin that fails to import)."""
    return {
        "schema_version": rec.SCHEMA_VERSION, "suite": plan.suite, "run": plan.run, "run_index": plan.run_index,
        "seed": plan.seed, "status": "failed", "error": error, "started_at": rec.now(), "finished_at": rec.now(),
        "components": {}, "metrics": {}, "eval": {}, "train": {}, "cost": {},
        "provenance": {"packages": rec.package_versions(), "code_version": rec.code_version()},
    }


def execute(run: ResolvedRun, folder: Path, fresh: bool = False, extra_callbacks: list | tuple = ()) -> dict[str, Any]:
    """Train and evaluate one run at one seed; always returns (and writes) a record.

    A ``checkpoints/last.ckpt`` left by an interrupted attempt with the same resolved config is
    resumed unless ``fresh``; with another config it is discarded (it trained something else).
    """
    folder.mkdir(parents=True, exist_ok=True)
    config = run.config()
    resume = _resumable(folder, config) if not fresh else None
    writer = is_rank_zero()
    if resume is None and writer:
        for stale in (folder / "checkpoints").glob("*.ckpt"):
            stale.unlink()
    if writer:
        rec.write_yaml(folder / rec.CONFIG_FILE, config)
    record: dict[str, Any] = {
        "schema_version": rec.SCHEMA_VERSION,
        "suite": run.plan.suite,
        "run": run.plan.run,
        "run_index": run.plan.run_index,
        "seed": run.seed,
        "status": "running",
        "error": None,
        "started_at": rec.now(),
        "components": {slot: r.record() for slot, r in run.components.items()},
        "metrics": {},
        "eval": {},
        "train": {},
        "cost": {},
        "provenance": {"packages": rec.package_versions(), "code_version": rec.code_version()},
    }
    state: dict[str, Any] = {}
    try:
        state["callbacks"] = list(extra_callbacks)
        _train_and_evaluate(run, folder, record, resume, state)
        record["status"] = "success"
        if writer:
            (folder / "checkpoints" / "last.ckpt").unlink(missing_ok=True)  # done: nothing to resume
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # any failure of one run is recorded; the suite goes on
        # An exception may name its own status (an Optuna pruning is "pruned", not "failed").
        record["status"] = getattr(exc, "rdbench_status", "failed")
        record["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}".rstrip(": ")
        if "trainer" in state:
            record["failed_at_step"] = int(state["trainer"].global_step)
        if not isinstance(exc, RdbenchError) and record["status"] == "failed" and writer:
            (folder / "error.log").write_text(traceback.format_exc())
    record["finished_at"] = rec.now()
    if writer:
        rec.write_json(folder / rec.RECORD_FILE, record)
    return record


def _resumable(folder: Path, config: dict[str, Any]) -> Path | None:
    """The last checkpoint of an interrupted attempt at this very config, if any."""
    last = folder / "checkpoints" / "last.ckpt"
    try:
        same = yaml.safe_load((folder / rec.CONFIG_FILE).read_text()) == yaml.safe_load(yaml.safe_dump(config))
    except (OSError, yaml.YAMLError):
        return None
    return last if same and last.is_file() else None


def _train_and_evaluate(run: ResolvedRun, folder: Path, record: dict[str, Any], resume: Path | None, state: dict[str, Any]) -> None:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from rdbench.data.loaders import RetrievalDataModule
    from rdbench.data.table import table_fingerprint
    from rdbench.losses.base import CompositeLoss
    from rdbench.training.callbacks import ResumableCheckpoint
    from rdbench.training.module import RetrievalModule

    # Lightning's start-up notices (GPU/TPU availability) would bury the suite's own lines.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    L.seed_everything(run.seed, workers=True, verbose=False)
    c = run.components
    backbone = c["backbone"].build()
    model = backbone.build_model()
    backbone_params = sum(p.numel() for p in model.parameters())  # before an adapter adds any
    dataset = c["dataset"].build()
    table = dataset.load_table()
    record["provenance"]["backbone"] = {"key": c["backbone"].key, **backbone.provenance()}
    record["provenance"]["dataset"] = {"key": c["dataset"].key, **dataset.describe(), **table_fingerprint(table)}
    record["provenance"]["dataset"]["fingerprint"] = record["provenance"]["dataset"].pop("sha256", None)

    # No train_transform: images go in as cached (the embedded default's results stay as they
    # were); no eval_transform: the resize to the backbone's size (a no-op on cached images).
    from rdbench.transforms import ResizeTransform

    data = RetrievalDataModule(
        table, backbone.tokenize, backbone.image_size, run.data.batch_size, run.data.eval_batch_size, run.data.num_workers, run.seed,
        train_transform=c["train_transform"].build() if "train_transform" in c else None,
        eval_transform=c["eval_transform"].build() if "eval_transform" in c else ResizeTransform(),
    )
    adapter = c["adapter"].build()
    loss = c["loss"].build()
    if not isinstance(loss, CompositeLoss):
        name = c["loss"].key.split("/", 1)[1] if c["loss"].key else c["loss"].cls.__name__
        loss = CompositeLoss({name: loss})
    module = RetrievalModule(model, adapter, loss, c["optimizer"].build(), backbone.mean, backbone.std, len(data.classes),
                             feature_cache=run.data.feature_cache)
    if module.features is not None:  # the adapter allows it: towers once per split, heads per step
        from rdbench.training.feature_cache import FeatureCacheData

        data = FeatureCacheData(data)

    adapter_params = sum(p.numel() for _, p in adapter.trainable_parameters(model))
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    record["cost"] = {
        "trainable_params": trainable,
        "adapter_params": adapter_params,
        "total_params": sum(p.numel() for p in module.parameters()),
        "backbone_params": backbone_params,
    }
    if module.features is not None:
        record["cost"]["feature_cache"] = True
    checkpoint = ModelCheckpoint(
        dirpath=folder / "checkpoints", filename="best", monitor=run.selection.monitor, mode=run.selection.mode,
        save_top_k=1, save_weights_only=True,
    )
    trainer = L.Trainer(
        **run.trainer,
        callbacks=[checkpoint, ResumableCheckpoint(folder / "checkpoints" / "last.ckpt", CHECKPOINT_EVERY), *state.get("callbacks", [])],
        logger=CSVLogger(folder, name="logs", version=""), default_root_dir=folder,
    )
    state["trainer"] = trainer
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    will_train = trainable > 0 and run.trainer.get("max_epochs") != 0 and run.trainer.get("max_steps") != 0
    if will_train:
        if resume is not None:
            record["resumed_from_step"] = int(torch.load(resume, map_location="cpu", weights_only=True)["global_step"])
        trainer.fit(module, datamodule=data, ckpt_path=resume, weights_only=True)
        record["train"] = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/",))}
        record["train"]["epochs"] = trainer.current_epoch
        record["train"]["steps"] = trainer.global_step
    record["cost"]["train_time_s"] = round(time.perf_counter() - t0, 3)
    if checkpoint.best_model_path:
        state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state, strict=False)
        record["selection"] = {
            "monitor": run.selection.monitor,
            "best_score": float(checkpoint.best_model_score),
            "checkpoint": str(Path(checkpoint.best_model_path).relative_to(folder)),
        }
    else:
        record["selection"] = {"monitor": run.selection.monitor, "best_score": None, "checkpoint": None}
    for split, fn in (("val", trainer.validate), ("test", trainer.test)):
        fn(module, datamodule=data, verbose=False)
        metrics = module.last_eval[split]
        record["metrics"].update({f"{split}/{k}": v for k, v in metrics.items() if "R@" in k or k == "mR"})
        record["eval"][split] = {k: metrics[k] for k in ("n_images", "n_captions", "ties_i2t", "ties_t2i")}
    # Per-query test ranks, for paired significance tests across methods (same test queries).
    ranks = module.last_ranks["test"]
    if is_rank_zero():
        rec.write_json(folder / rec.RANKS_FILE, {"split": "test", "i2t": ranks["i2t"].tolist(), "t2i": ranks["t2i"].tolist()})
    record["cost"]["peak_mem_bytes"], record["cost"]["peak_mem_kind"] = _peak_memory()


def _peak_memory() -> tuple[int, str]:
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated()), "cuda_max_allocated"
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale), "process_max_rss"


