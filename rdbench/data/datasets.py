"""Datasets (kind ``dataset``): where a caption table comes from.

Contract of a ``dataset/*`` component: ``load_table()`` returns the caption table of
:mod:`rdbench.data.table` (one row per caption: image id, path, caption, split, label, source);
``describe()`` returns what a record needs to identify it beyond the table's fingerprint.
"""

from __future__ import annotations

import abc
import hashlib
import json
from pathlib import Path
from typing import Any

import polars as pl
from jsonargparse.typing import PositiveInt

from rdbench.registry import REGISTRY, register


class Dataset(abc.ABC):
    """Base class of datasets; see the module docstring for the contract."""

    @abc.abstractmethod
    def load_table(self) -> pl.DataFrame:  # pragma: no cover - contract
        """Contract method: every registered component overrides it."""

    def describe(self) -> dict[str, Any]:
        return {}


REGISTRY.define_kind("dataset", Dataset)


@register("dataset/synthetic-rs")
class SyntheticRSDataset(Dataset):
    """The embedded dataset (DATA.md section 5): synthetic aerial scenes with RSICD-style captions.

    Generated deterministically from ``seed`` (the data's own seed, not the run's: every seed of
    a suite is evaluated on the same test split), written to disk in format A (Karpathy-style
    JSON with PNG images whose names carry the scene class) and read back by the real format-A
    reader, so that the embedded default exercises the same path as RSICD. The files are cached
    under ``$RDBENCH_CACHE/data`` unless ``root`` is given.
    """

    def __init__(self, root: str | None = None, train: PositiveInt = 400, val: PositiveInt = 100, test: PositiveInt = 100, image_size: PositiveInt = 64, seed: int = 0):
        for name, n in (("train", train), ("val", val), ("test", test)):
            if n < 1:
                raise ValueError(f"{name} must be at least 1 image")
        self.splits = {"train": train, "val": val, "test": test}
        self.image_size, self.seed = image_size, seed
        self.root = Path(root) if root else None

    def _root(self) -> Path:
        if self.root is not None:
            return self.root
        from rdbench.backbones.tiny_rs import cache_dir
        from rdbench.data import synthetic

        key = json.dumps({"splits": self.splits, "size": self.image_size, "seed": self.seed,
                          "generator": getattr(synthetic, "GENERATOR_VERSION", 1)}, sort_keys=True)
        return cache_dir() / "data" / f"synthetic-rs-{hashlib.sha256(key.encode()).hexdigest()[:12]}"

    def load_table(self) -> pl.DataFrame:
        from rdbench.data.karpathy import read_karpathy_json
        from rdbench.data.synthetic import write_synthetic_dataset

        json_path = write_synthetic_dataset(self._root(), splits=self.splits, image_size=self.image_size, seed=self.seed)
        return read_karpathy_json(json_path)

    def describe(self) -> dict[str, Any]:
        return {"root": str(self._root()), "format": "A"}
