"""The frozen-feature cache: run the frozen towers once per split, train and evaluate the head.

Zero-shot, the linear probe and CLIP-Adapter change nothing inside the towers: every epoch of
the plain path runs the same frozen ViT and text transformer over the same images and
captions (each image once per caption, five times an epoch on RSICD) only to feed a few
thousand trainable parameters after them. An adapter that declares ``frozen_towers``
(:mod:`rdbench.adapters.base`) lets :class:`~rdbench.training.module.RetrievalModule` encode
every image and caption of a split once, keep the pooled pre-projection outputs in memory
(:class:`FeatureCache`, keyed by split), and run only the adapter's heads afterwards.

The loaders of this path (:class:`FeatureCacheData`, which wraps a
:class:`~rdbench.data.loading.loaders.RetrievalDataModule`) yield indices, not pixels, drawn by the
wrapped module's own batch samplers (same seeded shuffle, batch size, ``drop_last`` and DDP
shard), so a cached run sees exactly the batches of the plain run, and its metrics
equal the plain path's (``tests/test_feature_cache.py``). The features are computed in
evaluation mode in batches of ``eval_batch_size``, exactly as the plain evaluation encodes them.

Limits, by construction: no train augmentation in this path (a cached pixel is the untransformed
one), and loss terms that re-run the towers on the raw batch (``loss/hmmc``'s second pass,
``loss/dtcl``'s teacher) cannot be used with it: the batch has no ``images`` or ``tokens`` and
says so in its error. The runner turns the path on only with ``data: {feature_cache: true}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from rdbench.adapters.base import image_features, text_features
from rdbench.data.loading.loaders import EvalItems, EvalLoaders, KindBatches, RetrievalDataModule, SplitData, pass_batch
from rdbench.data.loading.order import ResumableLoader, split_items
from rdbench.errors import ConfigError


class FeatureBatch(dict):
    """A batch of the cached path: indices only; asking it for pixels or tokens says why not."""

    def __missing__(self, key: str) -> Any:
        if key in ("images", "tokens"):
            raise ConfigError(
                f"a loss term reads batch[{key!r}], which the frozen-feature cache does not keep "
                "(it re-runs the towers); set data.feature_cache to false for this run"
            )
        raise KeyError(key)


@dataclass
class SplitFeatures:
    """One split's pre-projection tower outputs, on the module's device."""

    source: SplitData  # what they were computed from (a new SplitData means recompute)
    image: torch.Tensor  # (N, W_vision)
    text: torch.Tensor  # (M, W_text)


class FeatureCache:
    """Per-split tower outputs, computed once with the frozen towers and kept in memory.

    Not an ``nn.Module``: the features are derived data, never saved in a checkpoint.
    """

    def __init__(self) -> None:
        self.splits: dict[str, SplitFeatures] = {}
        self.encoded = {"images": 0, "captions": 0}  # items run through the towers (for tests)

    @torch.no_grad()
    def ensure(self, module: Any, split: str) -> SplitFeatures:
        """The split's features, encoding them first if this split (or its data) is new."""
        datamodule = module.trainer.datamodule
        if not isinstance(datamodule, FeatureCacheData):
            raise ConfigError("the frozen-feature cache needs its loaders: wrap the data module in "
                              "rdbench.training.feature_cache.FeatureCacheData")
        data = datamodule.split(split)
        cached = self.splits.get(split)
        if cached is not None and cached.source is data:
            return cached
        # The plain evaluation's own items and batches: same eval transform, same batch bounds.
        items = datamodule.base_eval_items(split)
        sampler = KindBatches(items.n_images, len(data.captions), int(datamodule.eval_batch_size))
        model, device = module.model, module.device
        was_training = model.training
        model.eval()  # as the plain evaluation runs the towers: no dropout of any kind
        image, text = [], []
        try:
            for indices in sampler:
                batch = items.__getitems__(indices)
                if "images" in batch:
                    image.append(image_features(model, module.prepare_images(batch["images"].to(device))))
                else:
                    text.append(text_features(model, batch["tokens"].to(device)))
        finally:
            model.train(was_training)
        image, text = torch.cat(image), torch.cat(text)
        self.encoded["images"] += len(image)
        self.encoded["captions"] += len(text)
        self.splits[split] = SplitFeatures(data, image, text)
        return self.splits[split]

    def pairs(self, split: str, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Image and caption features of a training batch of caption indices."""
        feats = self.splits[split]
        return feats.image[batch["image_ids"]], feats.text[batch["caption_index"]]

    def items(self, split: str, batch: dict[str, torch.Tensor]) -> tuple[str, torch.Tensor, torch.Tensor]:
        """``(kind, index, features)`` of an evaluation batch (one kind per batch)."""
        feats = self.splits[split]
        if "image_index" in batch:
            return "images", batch["image_index"], feats.image[batch["image_index"]]
        return "texts", batch["caption_index"], feats.text[batch["caption_index"]]


class _CaptionIndices(Dataset):
    """Training samples of the cached path: a caption's index, its image's index and label."""

    def __init__(self, data: SplitData):
        self.data = data

    def __len__(self) -> int:
        return len(self.data.captions)

    def __getitems__(self, items: list[int] | list[tuple[int, int]]) -> FeatureBatch:
        j, _epochs = split_items(items)  # no augmentation on cached features: the epoch is unused
        i = self.data.caption_image[j]
        return FeatureBatch(caption_index=j, image_ids=i, labels=self.data.labels[i])


class _EvalIndices(Dataset):
    """Evaluation items of the cached path: ``[0, N)`` images, ``[N, N + M)`` captions."""

    def __init__(self, data: SplitData):
        self.n_images, self.n_captions = len(data.image_ids), len(data.captions)

    def __len__(self) -> int:
        return self.n_images + self.n_captions

    def __getitems__(self, indices: list[int]) -> FeatureBatch:
        k = torch.as_tensor(indices, dtype=torch.long)
        if bool((k < self.n_images).all()):
            return FeatureBatch(image_index=k)
        return FeatureBatch(caption_index=k - self.n_images)


class FeatureCacheData(EvalLoaders, L.LightningDataModule):
    """The loaders of the cached path around a :class:`RetrievalDataModule`: same splits, same
    training order and batch sizes, but batches of indices into the module's cached features."""

    def __init__(self, base: RetrievalDataModule):
        super().__init__()
        self.base = base
        self.classes = base.classes
        self.batch_size, self.eval_batch_size, self.seed = base.batch_size, base.eval_batch_size, base.seed

    def split(self, name: str) -> SplitData:
        return self.base.split(name)

    def base_eval_items(self, split: str) -> EvalItems:
        """The wrapped module's evaluation items of ``split`` (pixels through its eval transform)."""
        return EvalItems(self.split(split), self.base.eval_transform, self.base.image_size)

    def state_dict(self) -> dict[str, Any]:  # the training order's resume state is the wrapped module's
        return self.base.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base.load_state_dict(state_dict)

    def _plain(self) -> RetrievalDataModule:
        # The wrapped module's loaders shard by the Trainer's rank and world size (DDP).
        self.base.trainer = self.trainer
        return self.base

    def train_dataloader(self) -> ResumableLoader:
        # The plain loader's own batch sampler (same EpochOrder, drop_last and DDP shard), so
        # that both paths draw identical batches and resume alike. No workers: a batch is indices.
        plain = self._plain().train_dataloader()
        return ResumableLoader(_CaptionIndices(self.split("train")), batch_sampler=plain.batch_sampler,
                               generator=plain.generator, collate_fn=pass_batch)

    def eval_dataloader(self, split: str) -> DataLoader:
        plain = self._plain().eval_dataloader(split)
        return DataLoader(_EvalIndices(self.split(split)), batch_sampler=plain.batch_sampler, collate_fn=pass_batch)

