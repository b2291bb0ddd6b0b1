"""Running suites: runs x seeds, one folder and one record each, failures isolated.

For every run and seed: write ``config.yaml`` (resolved, before anything is built), build the
components, ``fit`` with model selection on the validation split, reload the selected
checkpoint, evaluate validation and test once, and write ``record.json`` atomically. A run whose
successful record exists is skipped unless ``overwrite``. A run that raises is recorded as
``failed`` with the reason and the suite goes on.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from rdbench.errors import PluginImportError, RdbenchError
from rdbench.results import record as rec
from rdbench.suite import RunPlan, expand, load_suite
from rdbench.training.plan import ResolvedRun, resolve_plan


@dataclass
class SuiteOutcome:
    done: int = 0
    skipped: int = 0
    failed: int = 0


def run_dir(results: Path, run: ResolvedRun) -> Path:
    # Absolute: Lightning reports checkpoint paths absolute, and records store them relative.
    return Path(results).resolve() / run.plan.suite / run.plan.run / f"seed{run.seed}"


def plan_suite(path: str | Path, *, only=None, seeds=None, overrides=None) -> list[ResolvedRun]:
    """Load, expand and resolve every run of a suite (the whole of ``rdbench validate``)."""
    suite = load_suite(path)
    return [resolve_plan(plan, suite.path) for plan in expand(suite, only=only, seeds=seeds, overrides=overrides)]


def run_suite(
    path: str | Path,
    *,
    results: str | Path = "results",
    only: list[str] | None = None,
    seeds: list[int] | None = None,
    overrides=None,
    overwrite: bool = False,
    echo: Callable[[str], None] = print,
) -> SuiteOutcome:
    suite = load_suite(path)
    runs: list[ResolvedRun | tuple[RunPlan, PluginImportError]] = []
    for plan in expand(suite, only=only, seeds=seeds, overrides=overrides):
        try:
            runs.append(resolve_plan(plan, suite.path))
        except PluginImportError as exc:  # a broken plugin fails its own runs, not the suite
            runs.append((plan, exc))
    outcome = SuiteOutcome()
    started, spent, executed = time.perf_counter(), 0.0, 0
    for i, run in enumerate(runs, 1):
        if isinstance(run, tuple):
            plan, exc = run
            folder = Path(results).resolve() / plan.suite / plan.run / f"seed{plan.seed}"
            rec.write_json(folder / rec.RECORD_FILE, unresolved_record(plan, str(exc)))
            echo(f"[{i}/{len(runs)}] {plan.suite}/{plan.label}: FAILED: {exc}")
            outcome.failed += 1
            continue
        folder = run_dir(Path(results), run)
        old = rec.read_record(folder / rec.RECORD_FILE)
        if old and old.get("status") == "success" and not overwrite:
            echo(f"[{i}/{len(runs)}] {run.plan.suite}/{run.plan.label}: done already (skipped; --overwrite reruns it)")
            outcome.skipped += 1
            continue
        remaining = len(runs) - i + 1
        eta = f", ETA {_clock(spent / executed * remaining)}" if executed else ""
        echo(f"[{i}/{len(runs)}] {run.plan.suite}/{run.plan.label}: elapsed {_clock(time.perf_counter() - started)}{eta}")
        t0 = time.perf_counter()
        record = execute(run, folder)
        spent += time.perf_counter() - t0
        executed += 1
        if record["status"] == "success":
            outcome.done += 1
            m = record["metrics"]
            echo(f"    val mR {m['val/mR']:.2f}, test mR {m['test/mR']:.2f} ({record['cost']['trainable_params']:,} trainable)")
        else:
            outcome.failed += 1
            echo(f"    FAILED: {record['error']}")
    return outcome


def unresolved_record(plan: RunPlan, error: str) -> dict[str, Any]:
    """The record of a run that could not even be resolved (a plugin that fails to import)."""
    return {
        "schema_version": rec.SCHEMA_VERSION, "suite": plan.suite, "run": plan.run, "run_index": plan.run_index,
        "seed": plan.seed, "status": "failed", "error": error, "started_at": rec.now(), "finished_at": rec.now(),
        "components": {}, "metrics": {}, "eval": {}, "train": {}, "cost": {},
        "provenance": {"packages": rec.package_versions(), "code_version": rec.code_version()},
    }


def execute(run: ResolvedRun, folder: Path) -> dict[str, Any]:
    """Train and evaluate one run at one seed; always returns (and writes) a record."""
    folder.mkdir(parents=True, exist_ok=True)
    rec.write_yaml(folder / rec.CONFIG_FILE, run.config())
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
    try:
        _train_and_evaluate(run, folder, record)
        record["status"] = "success"
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # any failure of one run is recorded; the suite goes on
        record["status"] = "failed"
        record["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}".rstrip(": ")
        if not isinstance(exc, RdbenchError):
            (folder / "error.log").write_text(traceback.format_exc())
    record["finished_at"] = rec.now()
    rec.write_json(folder / rec.RECORD_FILE, record)
    return record


def _train_and_evaluate(run: ResolvedRun, folder: Path, record: dict[str, Any]) -> None:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from rdbench.data.loaders import RetrievalDataModule
    from rdbench.data.table import table_fingerprint
    from rdbench.losses.base import CompositeLoss
    from rdbench.training.module import RetrievalModule

    # Lightning's start-up notices (GPU/TPU availability) would bury the suite's own lines.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    L.seed_everything(run.seed, workers=True, verbose=False)
    c = run.components
    backbone = c["backbone"].build()
    model = backbone.build_model()
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
        loss = CompositeLoss({c["loss"].key.split("/", 1)[1]: loss})
    module = RetrievalModule(model, adapter, loss, c["optimizer"].build(), backbone.mean, backbone.std, len(data.classes))

    adapter_params = sum(p.numel() for _, p in adapter.trainable_parameters(model))
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    record["cost"] = {
        "trainable_params": trainable,
        "adapter_params": adapter_params,
        "total_params": sum(p.numel() for p in module.parameters()),
    }
    checkpoint = ModelCheckpoint(
        dirpath=folder / "checkpoints", filename="best", monitor=run.selection.monitor, mode=run.selection.mode,
        save_top_k=1, save_weights_only=True,
    )
    trainer = L.Trainer(
        **run.trainer, callbacks=[checkpoint], logger=CSVLogger(folder, name="logs", version=""), default_root_dir=folder
    )
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    will_train = trainable > 0 and run.trainer.get("max_epochs") != 0 and run.trainer.get("max_steps") != 0
    if will_train:
        trainer.fit(module, datamodule=data)
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
    rec.write_json(folder / rec.RANKS_FILE, {"split": "test", "i2t": ranks["i2t"].tolist(), "t2i": ranks["t2i"].tolist()})
    record["cost"]["peak_mem_bytes"], record["cost"]["peak_mem_kind"] = _peak_memory()


def _peak_memory() -> tuple[int, str]:
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated()), "cuda_max_allocated"
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale), "process_max_rss"


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
