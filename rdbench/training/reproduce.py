"""``rdbench reproduce RUN_DIR``: rebuild a run from its ``config.yaml`` alone, rerun it, compare.

The resolved config names every component that ran with all its arguments, the trainer, data
and selection settings and the seed (:mod:`rdbench.resolution.run`), so it is enough to run the
same experiment again. The rerun goes into a scratch results folder (never over the original);
each metric of the original record is printed beside the new one with their difference, and
the metrics that differ by more than the tolerance are named. On CPU rdbench runs are
deterministic, so the default tolerance there is 0; accelerators use nondeterministic kernels
(cuBLAS, atomics in backward), so the default there is 0.5 points.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rdbench.errors import RdbenchError
from rdbench.resolution.run import resolve_config
from rdbench.results.record import CONFIG_FILE, RECORD_FILE, Record
from rdbench.suite import read_yaml
from rdbench.training.execute import execute
from rdbench.training.runner import run_dir

#: Default tolerance (points of recall) on an accelerator; 0 on CPU.
ACCELERATOR_TOLERANCE = 0.5


@dataclass
class Reproduction:
    """The recorded and the reproduced metrics of one run, side by side."""

    original: Record
    rerun: Record
    folder: Path
    tolerance: float
    rows: list[tuple[str, float | None, float | None]] = field(default_factory=list)

    @property
    def differing(self) -> list[str]:
        return [name for name, old, new in self.rows
                if old is None or new is None or abs(new - old) > self.tolerance]

    def lines(self) -> list[str]:
        out = [f"reproduced {self.original.suite}/{self.original.run}/seed{self.original.seed} in {self.folder}",
               f"{'metric':<16} {'recorded':>10} {'reproduced':>11} {'difference':>11}"]
        for name, old, new in self.rows:
            diff = "missing" if old is None or new is None else f"{new - old:+.4f}"
            show = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
            out.append(f"{name:<16} {show(old):>10} {show(new):>11} {diff:>11}")
        verdict = "identical within" if not self.differing else "DIFFERENT beyond"
        out.append(f"{verdict} tolerance {self.tolerance:g}" + (f": {', '.join(self.differing)}" if self.differing else ""))
        return out


def reproduce(folder: Path, *, results: Path | None = None, tolerance: float | None = None) -> Reproduction:
    """Rerun the run recorded in ``folder`` from its ``config.yaml`` and compare the metrics."""
    folder = Path(folder)
    config_path, record_path = folder / CONFIG_FILE, folder / RECORD_FILE
    for path in (config_path, record_path):
        if not path.is_file():
            raise RdbenchError(f"{path}: no such file (RUN_DIR is a run folder, e.g. results/<suite>/<run>/seed0)")
    try:
        original = Record.from_json(_read_json(record_path))
    except ValueError as exc:
        raise RdbenchError(f"{record_path}: {exc}") from None
    if original.status != "success" or not original.metrics:
        raise RdbenchError(f"{record_path}: the run did not succeed (status {original.status}); nothing to compare")
    run = resolve_config(read_yaml(config_path), config_path)
    run.loggers = []  # a check, not a run to track: the original's tracker runs stay the only ones
    scratch = Path(results) if results is not None else Path(tempfile.mkdtemp(prefix="rdbench-reproduce-"))
    target = run_dir(scratch, run.plan)
    if target.resolve() == folder.resolve():
        raise RdbenchError(f"{scratch}: the scratch results folder must not hold the original run")
    rerun = execute(run, target, fresh=True)
    if rerun.status != "success":
        raise RdbenchError(f"{target}: the rerun failed: {rerun.error}")
    if tolerance is None:
        tolerance = ACCELERATOR_TOLERANCE if _on_accelerator(run.trainer) else 0.0
    names = list(original.metrics) + [n for n in rerun.metrics if n not in original.metrics]
    rows = [(n, original.metrics.get(n), rerun.metrics.get(n)) for n in names]
    return Reproduction(original, rerun, target, float(tolerance), rows)


def _read_json(path: Path):
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RdbenchError(f"{path}: not readable as JSON ({exc})") from None


def _on_accelerator(trainer: dict) -> bool:
    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator == "cpu":
        return False
    return accelerator != "auto" or torch.cuda.is_available()
