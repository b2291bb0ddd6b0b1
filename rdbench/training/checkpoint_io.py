"""Checkpoints written atomically: Lightning's checkpoint IO with rdbench's write recipe.

Lightning's ``ModelCheckpoint`` rewrites ``best.ckpt`` under the same name whenever validation
improves, and its default IO (``TorchCheckpointIO``) writes through an fsspec transaction,
which on a local disk stages the file in the system's temporary folder and then moves it over
the target: a copy rather than a rename when that folder is on another file system (a
``/tmp`` in memory, a node-local scratch disk), and never fsynced. A crash at the wrong moment
can then leave a truncated ``best.ckpt``, which a later evaluation would load.
:class:`AtomicCheckpointIO` saves every checkpoint the trainer writes (``best.ckpt`` from
``ModelCheckpoint``, ``last.ckpt`` from ``ResumableCheckpoint``, any ``trainer.save_checkpoint``)
the way :mod:`rdbench.atomic` writes records: ``torch.save`` to a temporary file in the target's
folder, fsync it, rename it over the target, fsync the folder. Give it to the trainer:
``L.Trainer(..., plugins=[AtomicCheckpointIO()])``.

Remote paths (``s3://``, ...) have no rename to rely on; they are written by Lightning's own IO.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem

from rdbench.atomic import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are atomic and durable on local file systems."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike[str],
                        storage_options: Any | None = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            # Lightning's own handling: it refuses storage_options and writes remote files.
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        local = os.fspath(path)
        local = local.removeprefix("file://")
        with atomic_path(local) as temp:
            torch.save(checkpoint, temp)
