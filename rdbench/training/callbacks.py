"""Lightning callbacks rdbench adds to every run."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L


class ResumableCheckpoint(L.Callback):
    """Keep ``last.ckpt`` fresh for resuming: every ``every_n_steps`` optimiser steps and at the end
    of each training epoch. Written to a temporary file and renamed, so a crash mid-write leaves
    the previous checkpoint intact rather than a truncated one. (Lightning's ModelCheckpoint
    writes in place.) What goes in is pruned by ``RetrievalModule.on_save_checkpoint``: the
    trainable tensors and the optimiser state, not the frozen backbone."""

    def __init__(self, path: Path, every_n_steps: int = 50):
        self.path, self.every = Path(path), every_n_steps

    def _save(self, trainer: L.Trainer) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        # the whole state (to resume); every rank takes part, only rank zero writes
        trainer.save_checkpoint(tmp, weights_only=False)
        if trainer.is_global_zero:
            os.replace(tmp, self.path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every and trainer.global_step and trainer.global_step % self.every == 0:
            self._save(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._save(trainer)
