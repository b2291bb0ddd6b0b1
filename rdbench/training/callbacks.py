"""Lightning callbacks rdbench adds to every run."""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint

from rdbench.atomic import replace_file
from rdbench.data.loading.order import ResumableLoader

#: The key of the random states in a resumable checkpoint.
RNG_KEY = "rdbench_rng"


def rng_states() -> dict[str, Any]:
    """Every random stream a training step may draw from, in a form ``weights_only`` loads."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    n = states["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ResumableCheckpoint(Checkpoint):
    """Keep ``last.ckpt`` such that a run resumed from it is the run it resumes (docs/reliability.md).

    When: every ``every_n_steps`` optimiser steps, at the end of each training epoch, and at the
    step boundary a stop signal arrives at (:mod:`rdbench.training.interrupt`); never on the
    last batch of an epoch, whose validation has yet to run: that save is the epoch's end.

    What: the trainable tensors and the optimiser state (pruned by
    ``RetrievalModule.on_save_checkpoint``, never the frozen backbone), Lightning's loop and
    callback states, the training loader's epoch and position
    (:class:`~rdbench.data.loading.order.ResumableLoader`), and the random states of torch
    (CPU and CUDA), Python and numpy, which are put back just before the first batch after a
    resume, so that nothing Lightning does while it restores draws from them first.

    Order: this is a Lightning ``Checkpoint``, so it runs after the other callbacks and after
    the ``ModelCheckpoint`` that records the epoch's best, and the epoch-end state it saves knows
    that best. The file is written (atomically, by the trainer's checkpoint IO) to
    ``last.ckpt.pending`` and renamed to ``last.ckpt`` at the next batch or epoch start, or when
    fit stops: by then Lightning has written the log rows of the saved step, so the rows a
    resumed run keeps (those below its step, :class:`~rdbench.training.logs.ResumableCSVLogger`)
    are all there. A process killed in between leaves the previous ``last.ckpt``, which resumes
    exactly as well, from further back.
    """

    def __init__(self, path: Path, every_n_steps: int = 50):
        self.path, self.every = Path(path), every_n_steps
        self.pending = self.path.with_name(self.path.name + ".pending")
        self._written = False  # a pending file waits to be renamed
        self._restored_rng: dict[str, Any] | None = None
        self._stop_after_epoch = False

    # -- saving ---------------------------------------------------------------------------
    def _save(self, trainer: L.Trainer, position: int) -> None:
        loader = trainer.train_dataloader
        if isinstance(loader, ResumableLoader):
            loader.order.position = position
        # the whole state (to resume); every rank takes part, only rank zero writes
        trainer.save_checkpoint(self.pending, weights_only=False)
        self._written = True

    def _commit(self, trainer: L.Trainer) -> None:
        if self._written and trainer.is_global_zero and self.pending.exists():
            replace_file(self.pending, self.path)
        self._written = False

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        if "loops" in checkpoint:  # a full checkpoint (to resume), not best.ckpt's weights
            checkpoint[RNG_KEY] = rng_states()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # inside a gradient accumulation: not a step boundary
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            if trainer.received_sigterm:
                # Lightning would stop before this epoch's validation and end; hold the request
                # until the epoch-end checkpoint (which knows the epoch's best) is written.
                trainer._signal_connector.received_sigterm = False
                self._stop_after_epoch = True
            return
        if (self.every and trainer.global_step % self.every == 0) or trainer.received_sigterm:
            self._save(trainer, batch_idx + 1)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._save(trainer, sys.maxsize)  # the epoch is complete: a resume starts the next one
        if self._stop_after_epoch:
            self._stop_after_epoch = False
            trainer._signal_connector.received_sigterm = True  # Lightning stops after this hook

    # -- committing and restoring ----------------------------------------------------------
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._commit(trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._commit(trainer)
        if self._restored_rng is not None:
            set_rng_states(self._restored_rng)
            self._restored_rng = None

    def on_train_end(self, trainer, pl_module) -> None:
        self._commit(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._commit(trainer)  # a stop signal's checkpoint, or the last good one before a failure

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        self._restored_rng = checkpoint.get(RNG_KEY)


class EpochLines(L.Callback):
    """One line per training epoch, for output that is not a terminal (a cluster job's log, CI, a
    file): Lightning's progress bars redraw with carriage returns, which read as hundreds of
    kilobytes of frames there. The line carries the epoch's training loss, its validation
    metric when validation ran, the epoch's time and the run's remaining time at that pace."""

    def __init__(self, echo=print):
        self.echo = echo
        self._started = 0.0
        self._times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        took = time.perf_counter() - self._started
        self._times.append(took)
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        done = trainer.current_epoch + 1
        parts = [f"{k} {float(v):.4g}" for k, v in sorted(trainer.callback_metrics.items())
                 if k in ("train/loss", "val/mR")]
        eta = ""
        if total is not None and total > done:
            eta = f"; run ETA {_duration(sum(self._times) / len(self._times) * (total - done))}"
        self.echo(f"    epoch {done}{f'/{total}' if total else ''}: {', '.join(parts) or 'no metrics yet'} "
                  f"({_duration(took)}{eta})")


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class StepOnFailure(L.Callback):
    """Note on an exception the optimiser step it happened at (the record's ``failed_at_step``)."""

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        try:
            setattr(exception, "rdbench_step", int(trainer.global_step))
        except AttributeError:  # exceptions that refuse attributes: the step stays unknown
            pass
