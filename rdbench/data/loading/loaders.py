"""From a caption table to batches: decoded images, tokens, and the caption -> image map.

Training iterates over captions (one sample per caption with its image), as PE-RSITR and
HarMA do. Evaluation encodes each distinct image once and each caption once: a single loader
yields image batches, then caption batches, never mixing the two in one batch.

Images are decoded and resized once per split into the on-disk cache of
:mod:`rdbench.data.loading.cache` and memory-mapped from there by every later epoch, run and seed.
Transforms (:mod:`rdbench.transforms`) run per sample on those uint8 tensors, in the loader's
workers; the normalisation of the backbone is applied on the device by the LightningModule, so
batches stay small (uint8) on the way there.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Iterator

import lightning as L
import polars as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from rdbench.data.loading.images import decode_image
from rdbench.data.loading.order import EpochOrder, ResumableLoader, augmentation_seed, split_items
from rdbench.errors import DataError
from rdbench.transforms import Transform


@dataclass
class SplitData:
    """One split, ready for tensors: images in table order, captions grouped by image."""

    name: str
    image_ids: list[str]
    images: torch.Tensor  # uint8 (N, 3, S, S)
    labels: torch.Tensor  # (N,) class index, -1 where unknown
    captions: list[str]
    tokens: torch.Tensor  # (M, L)
    caption_image: torch.Tensor  # (M,) index into images

    @cached_property
    def same_caption(self) -> torch.Tensor:
        """(M,) for each caption, the first caption with the same tokens (itself when unique).

        Evaluation encodes each distinct token sequence once and gives its duplicates the same
        embedding: an encoder in eval mode maps equal inputs to equal outputs, so this changes
        nothing but the time (RSICD and RSITMD repeat captions; so does the embedded data).
        """
        _, inverse = torch.unique(self.tokens, dim=0, return_inverse=True)
        first = torch.full((int(inverse.max()) + 1,) if len(inverse) else (0,), len(inverse), dtype=torch.long)
        first.scatter_reduce_(0, inverse, torch.arange(len(inverse)), reduce="amin")
        return first[inverse]

    @cached_property
    def caption_order(self) -> list[int]:
        """The distinct captions (:attr:`same_caption`'s representatives), shortest first, in
        the order evaluation encodes them: a batch of similar lengths can then be cut at its
        longest caption (:func:`rdbench.openclip.trim_text_padding`)."""
        distinct = (self.same_caption == torch.arange(len(self.same_caption))).nonzero().flatten()
        used = self.tokens[distinct].ne(0)
        length = torch.where(used.any(1), used.shape[1] - used.flip(1).int().argmax(1), 0)
        return distinct[torch.sort(length, stable=True).indices].tolist()


def build_split(
    table: pl.DataFrame,
    split: str,
    tokenize: Callable[[list[str]], torch.Tensor],
    image_size: int,
    classes: list[str],
    *,
    cache: bool = True,
    fingerprint: str | None = None,
) -> SplitData:
    """One split's images (through the decoded-image cache unless ``cache`` is False), tokens
    and caption-to-image map. ``fingerprint`` (the table's) is computed when not given."""
    rows = table.filter(pl.col("split") == split)
    if rows.height == 0:
        sources = ", ".join(sorted(set(table["source"].to_list()))) or "the dataset"
        raise DataError(f"{sources}: split {split!r} is empty")
    images = rows.unique("image_id", keep="first", maintain_order=True)
    image_ids = images["image_id"].to_list()
    index = {image_id: i for i, image_id in enumerate(image_ids)}
    class_index = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([class_index.get(lbl, -1) if lbl is not None else -1 for lbl in images["label"].to_list()])
    paths = images["path"].to_list()
    if cache:
        from rdbench.data.loading.cache import load_or_build
        from rdbench.data.table import table_fingerprint

        fingerprint = fingerprint or table_fingerprint(table)["sha256"]
        pixels = load_or_build(paths, image_size, fingerprint=fingerprint, split=split)
    else:
        pixels = torch.stack([decode_image(p, image_size) for p in paths])
    captions = rows["caption"].to_list()
    caption_image = torch.tensor([index[i] for i in rows["image_id"].to_list()], dtype=torch.long)
    return SplitData(split, image_ids, pixels, labels, captions, tokenize(captions), caption_image)


def _images(data: SplitData, index: torch.Tensor, transform: Transform | None, size: int | None,
            seeds: list[int] | None = None) -> torch.Tensor:
    """The images at ``index`` as one batch: a single gather from the (memory-mapped) split
    tensor, which costs a fraction of stacking per-sample tensors; a transform, when there is
    one, runs per image and writes into a preallocated batch. With ``seeds``, image ``k``'s
    transform draws from torch's CPU generator seeded ``seeds[k]``, on the side of the process's
    own random stream (:mod:`rdbench.data.loading.order`)."""
    # numpy's take is several times faster than torch's advanced indexing for this copy.
    images = torch.from_numpy(data.images.numpy()[index.numpy()])
    if transform is None:
        return images
    size = size if size is not None else int(images.shape[-1])
    out = torch.empty((len(images), 3, size, size), dtype=torch.uint8)
    if seeds is None:
        for k, image in enumerate(images):
            out[k] = transform(image, size)
        return out
    with torch.random.fork_rng(devices=[]):  # the CPU generator only: CUDA's is left alone
        for k, image in enumerate(images):
            torch.default_generator.manual_seed(seeds[k])
            out[k] = transform(image, size)
    return out


def pass_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``collate_fn`` for datasets whose ``__getitems__`` already returns a whole batch."""
    return batch


class CaptionPairs(Dataset):
    """Training samples: one per caption, with its image, image index and scene label.

    ``transform`` (a train augmentation) is applied to the image of each sample, at ``size``.
    ``__getitems__`` builds a whole batch at once (the DataLoader uses it with
    :func:`pass_batch`); ``__getitem__`` gives one sample, for inspection. Items are caption
    indices or, from :class:`~rdbench.data.loading.order.EpochOrder`, ``(index, epoch)`` pairs,
    whose augmentation then draws from :func:`~rdbench.data.loading.order.augmentation_seed`
    of (``seed``, epoch, index).
    """

    def __init__(self, data: SplitData, transform: Transform | None = None, size: int | None = None, seed: int = 0):
        self.data, self.transform, self.size, self.seed = data, transform, size, seed

    def __len__(self) -> int:
        return len(self.data.captions)

    def __getitems__(self, items: list[int] | list[tuple[int, int]]) -> dict[str, torch.Tensor]:
        j, epochs = split_items(items)
        i = self.data.caption_image[j]
        seeds = None
        if epochs is not None and self.transform is not None:
            seeds = [augmentation_seed(self.seed, int(e), int(c)) for e, c in zip(epochs, j)]
        return {"images": _images(self.data, i, self.transform, self.size, seeds), "tokens": self.data.tokens[j],
                "image_ids": i, "labels": self.data.labels[i]}

    def __getitem__(self, j: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([j]).items()}


class EvalItems(Dataset):
    """Evaluation items: indices ``[0, N)`` are images, ``[N, N + M)`` are captions; a batch
    from :class:`KindBatches` holds one kind only."""

    def __init__(self, data: SplitData, transform: Transform | None = None, size: int | None = None):
        self.data, self.transform, self.size = data, transform, size
        self.n_images = len(data.image_ids)

    def __len__(self) -> int:
        return self.n_images + len(self.data.captions)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        k = torch.as_tensor(indices, dtype=torch.long)
        if bool((k < self.n_images).all()):
            return {"images": _images(self.data, k, self.transform, self.size), "index": k}
        if bool((k < self.n_images).any()):
            raise ValueError("an evaluation batch mixes images and captions (use KindBatches)")
        j = k - self.n_images
        return {"tokens": self.data.tokens[j], "index": j}

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        return {key: v[0] for key, v in self.__getitems__([k]).items()}


class KindBatches(Sampler[list[int]]):
    """Batches of images, then batches of captions: a batch never mixes the two.

    ``captions`` (default: all, in order) are the caption indices to encode, in the order to
    encode them (:attr:`SplitData.caption_order`: each distinct caption once, shortest first).
    """

    def __init__(self, n_images: int, n_captions: int, batch_size: int, rank: int = 0, world: int = 1,
                 captions: list[int] | None = None):
        self.n_images, self.n_captions, self.batch_size = n_images, n_captions, batch_size
        self.rank, self.world = rank, world
        self.captions = list(range(n_captions)) if captions is None else captions

    def _all(self) -> list[list[int]]:
        out = [list(range(b, min(b + self.batch_size, self.n_images))) for b in range(0, self.n_images, self.batch_size)]
        items = [self.n_images + j for j in self.captions]
        out += [items[b : b + self.batch_size] for b in range(0, len(items), self.batch_size)]
        return out

    def __iter__(self) -> Iterator[list[int]]:
        # Under DDP each rank encodes every world-th batch; the module gathers the embeddings, so
        # every item is encoded once in all and the metric sees the whole split.
        yield from self._all()[self.rank :: self.world]

    def __len__(self) -> int:
        return len(self._all()[self.rank :: self.world])


class EvalLoaders:
    """Lightning's validation, test and predict loaders, each an ``eval_dataloader(split)``; the
    predict loader serves the split named by ``predict_split`` (the final evaluation,
    :func:`rdbench.training.evaluate.evaluate`)."""

    predict_split = "test"
    eval_dataloader: Callable[[str], DataLoader]  # defined by each data module

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")

    def predict_dataloader(self) -> DataLoader:
        return self.eval_dataloader(self.predict_split)


class RetrievalDataModule(EvalLoaders, L.LightningDataModule):
    """Train, validation and test loaders over one caption table."""

    def __init__(
        self,
        table: pl.DataFrame,
        tokenize: Callable[[list[str]], torch.Tensor],
        image_size: int,
        batch_size: int = 32,
        eval_batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
        *,
        train_transform: Transform | None = None,
        eval_transform: Transform | None = None,
        cache: bool = True,
    ):
        super().__init__()
        self.table, self.tokenize, self.image_size = table, tokenize, image_size
        self.batch_size, self.eval_batch_size, self.num_workers, self.seed = batch_size, eval_batch_size, num_workers, seed
        self.train_transform, self.eval_transform, self.cache = train_transform, eval_transform, cache
        labels = table.filter(pl.col("split") == "train")["label"].drop_nulls().unique().sort().to_list()
        self.classes: list[str] = labels
        self._splits: dict[str, SplitData] = {}
        self._fingerprint: str | None = None
        self._train_order: EpochOrder | None = None  # of the last training loader built
        self._restored_order: dict[str, int] | None = None  # from a checkpoint, for the next one

    # The training order's epoch and position travel in every full checkpoint (see
    # rdbench.data.loading.order for why here and not only in the loader's own state).
    def state_dict(self) -> dict[str, Any]:
        return {"train_order": self._train_order.state_dict()} if self._train_order is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored_order = state_dict.get("train_order")

    def split(self, name: str) -> SplitData:
        if name not in self._splits:
            if self.cache and self._fingerprint is None:
                from rdbench.data.table import table_fingerprint

                self._fingerprint = table_fingerprint(self.table)["sha256"]
            self._splits[name] = build_split(self.table, name, self.tokenize, self.image_size, self.classes,
                                             cache=self.cache, fingerprint=self._fingerprint)
        return self._splits[name]

    def train_dataloader(self) -> ResumableLoader:
        # The order and every augmentation draw are functions of (seed, epoch) and resumable at
        # any batch (rdbench.data.loading.order); the loader's own generator only seeds its
        # workers, so no epoch draws from the process's random stream.
        pairs = CaptionPairs(self.split("train"), self.train_transform, self.image_size, seed=self.seed)
        rank, world = self._rank_world()
        if len(pairs) // world < self.batch_size:
            # every batch would be the incomplete last one, which is dropped: a run that
            # "succeeds" with zero optimiser steps would report the untrained model's metrics
            share = f" ({len(pairs) // world} per process of {world})" if world > 1 else ""
            raise DataError(f"the training split has {len(pairs)} caption pairs{share}, fewer than "
                            f"data.batch_size {self.batch_size}: no optimiser step would run")
        # rdbench shards itself under DDP (the Trainer runs with use_distributed_sampler=False)
        order = EpochOrder(len(pairs), self.batch_size, self.seed, rank, world)
        if self._restored_order is not None:
            order.load_state_dict(self._restored_order)
            self._restored_order = None
        self._train_order = order
        return ResumableLoader(
            pairs,
            batch_size=self.batch_size,
            sampler=order,
            drop_last=True,  # a ragged last batch of one caption makes a degenerate contrastive step
            generator=torch.Generator().manual_seed(self.seed),
            collate_fn=pass_batch,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def eval_dataloader(self, split: str) -> DataLoader:
        data = self.split(split)
        items = EvalItems(data, self.eval_transform, self.image_size)
        return DataLoader(
            items,
            batch_sampler=KindBatches(items.n_images, len(data.captions), self.eval_batch_size, *self._rank_world(),
                                      captions=data.caption_order),
            collate_fn=pass_batch,
            num_workers=self.num_workers,
        )

    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

