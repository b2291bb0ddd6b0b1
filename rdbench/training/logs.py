"""The training log (``logs/metrics.csv``) of a run that resumes: the rows its checkpoint covers.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts, so a run resumed
from ``last.ckpt`` used to lose the rows of every step before its checkpoint; kept whole
instead, the file would hold the rows the killed attempt wrote after its checkpoint twice.
:class:`ResumableCSVLogger` keeps exactly the rows of the steps below the checkpoint's
``global_step`` (the CSV's ``step`` column counts optimiser steps, and a checkpoint taken after
step ``s`` covers the rows of steps ``0 .. s - 1``, which
:class:`~rdbench.training.callbacks.ResumableCheckpoint` makes sure were written before the
checkpoint took effect), and appends after them. The rows are kept as the bytes they were, so the
resumed log equals an uninterrupted run's. A fresh run behaves as Lightning's logger does.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from rdbench.atomic import atomic_path


def keep_rows_below(path: Path, step: int) -> list[str]:
    """Cut the CSV at ``path`` to its header and the rows whose ``step`` is below ``step``;
    the header's columns."""
    lines = path.read_text().splitlines(keepends=True)
    if not lines:
        return []
    header = next(csv.reader(io.StringIO(lines[0])))
    if "step" not in header:
        return header
    column = header.index("step")
    kept = [lines[0]]
    for line in lines[1:]:
        fields = next(csv.reader(io.StringIO(line)), [])
        try:
            if int(float(fields[column])) < step:
                kept.append(line)
        except (IndexError, ValueError):
            continue  # a row cut short by the kill: it belongs to no step the checkpoint covers
    with atomic_path(path) as tmp:
        Path(tmp).write_text("".join(kept))
    return header


class _KeepingWriter(ExperimentWriter):
    def __init__(self, log_dir: str, keep_below_step: int | None):
        self._keep_below = keep_below_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if self._keep_below is None or not path.is_file():
            super()._check_log_dir_exists()  # a fresh run: Lightning's own behaviour
            return
        # later rows are appended under the same columns (new ones rewrite the header, sorted)
        self.metrics_keys = keep_rows_below(path, self._keep_below)


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSV logger; with ``keep_below_step``, the log of a resumed run (above)."""

    def __init__(self, *args, keep_below_step: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.keep_below_step = keep_below_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(self.log_dir, self.keep_below_step)
        return self._experiment
