"""Lightning callbacks rdbench adds to every run."""

from __future__ import annotations

from pathlib import Path

import lightning as L


class ResumableCheckpoint(L.Callback):
    """Keep ``last.ckpt`` fresh for resuming: every ``every_n_steps`` optimiser steps, at the end
    of each training epoch, and at the step a stop signal arrives in. The trainer's checkpoint IO
    (:class:`~rdbench.training.checkpoint_io.AtomicCheckpointIO`) writes it to a temporary file,
    fsyncs and renames it, so a crash mid-write leaves the previous checkpoint intact. What goes in
    is pruned by ``RetrievalModule.on_save_checkpoint``: the trainable tensors and the optimiser
    state, not the frozen backbone."""

    def __init__(self, path: Path, every_n_steps: int = 50):
        self.path, self.every = Path(path), every_n_steps

    def _save(self, trainer: L.Trainer) -> None:
        # the whole state (to resume); every rank takes part, only rank zero writes
        trainer.save_checkpoint(self.path, weights_only=False)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every and trainer.global_step and trainer.global_step % self.every == 0:
            self._save(trainer)
        elif trainer.received_sigterm and (batch_idx + 1) % trainer.accumulate_grad_batches == 0:
            # asked to stop (rdbench.training.interrupt): Lightning raises after this batch, so
            # this optimiser step is the last one to resume from
            self._save(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._save(trainer)


class StepOnFailure(L.Callback):
    """Note on an exception the optimiser step it happened at (the record's ``failed_at_step``)."""

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        try:
            setattr(exception, "rdbench_step", int(trainer.global_step))
        except AttributeError:  # exceptions that refuse attributes: the step stays unknown
            pass
