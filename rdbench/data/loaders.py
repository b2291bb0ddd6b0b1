"""From a caption table to batches: decoded images, tokens, and the caption -> image map.

Training iterates over captions (one sample per caption with its image), as PE-RSITR and
HarMA do. Evaluation encodes each distinct image once and each caption once: a single loader
yields image batches, then caption batches, never mixing the two in one batch.

Images are decoded and resized once per split into a uint8 tensor held in memory; the
normalisation of the backbone is applied on the device by the LightningModule, so batches stay
small (uint8) on the way there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import lightning as L
import polars as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from rdbench.errors import DataError


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


def decode_image(path: str, size: int) -> torch.Tensor:
    """RGB uint8 (3, size, size); grayscale and palette images are converted, others resized."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BICUBIC)
            data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: image cannot be decoded ({exc})") from None
    return data.view(size, size, 3).permute(2, 0, 1).contiguous()


def build_split(
    table: pl.DataFrame, split: str, tokenize: Callable[[list[str]], torch.Tensor], image_size: int, classes: list[str]
) -> SplitData:
    rows = table.filter(pl.col("split") == split)
    if rows.height == 0:
        sources = ", ".join(sorted(set(table["source"].to_list()))) or "the dataset"
        raise DataError(f"{sources}: split {split!r} is empty")
    images = rows.unique("image_id", keep="first", maintain_order=True)
    image_ids = images["image_id"].to_list()
    index = {image_id: i for i, image_id in enumerate(image_ids)}
    class_index = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([class_index.get(lbl, -1) if lbl is not None else -1 for lbl in images["label"].to_list()])
    pixels = torch.stack([decode_image(p, image_size) for p in images["path"].to_list()])
    captions = rows["caption"].to_list()
    caption_image = torch.tensor([index[i] for i in rows["image_id"].to_list()], dtype=torch.long)
    return SplitData(split, image_ids, pixels, labels, captions, tokenize(captions), caption_image)


class CaptionPairs(Dataset):
    """Training samples: one per caption, with its image, image index and scene label."""

    def __init__(self, data: SplitData):
        self.data = data

    def __len__(self) -> int:
        return len(self.data.captions)

    def __getitem__(self, j: int) -> dict[str, torch.Tensor]:
        i = self.data.caption_image[j]
        return {"images": self.data.images[i], "tokens": self.data.tokens[j], "image_ids": i, "labels": self.data.labels[i]}


class EvalItems(Dataset):
    """Evaluation items: indices ``[0, N)`` are images, ``[N, N + M)`` are captions."""

    def __init__(self, data: SplitData):
        self.data = data
        self.n_images = len(data.image_ids)

    def __len__(self) -> int:
        return self.n_images + len(self.data.captions)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        if k < self.n_images:
            return {"images": self.data.images[k], "index": torch.tensor(k)}
        j = k - self.n_images
        return {"tokens": self.data.tokens[j], "index": torch.tensor(j)}


class KindBatches(Sampler[list[int]]):
    """Batches of images, then batches of captions: a batch never mixes the two."""

    def __init__(self, n_images: int, n_captions: int, batch_size: int):
        self.n_images, self.n_captions, self.batch_size = n_images, n_captions, batch_size

    def __iter__(self) -> Iterator[list[int]]:
        for start, stop in ((0, self.n_images), (self.n_images, self.n_images + self.n_captions)):
            for b in range(start, stop, self.batch_size):
                yield list(range(b, min(b + self.batch_size, stop)))

    def __len__(self) -> int:
        per = lambda n: -(-n // self.batch_size)  # noqa: E731
        return per(self.n_images) + per(self.n_captions)


class RetrievalDataModule(L.LightningDataModule):
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
    ):
        super().__init__()
        self.table, self.tokenize, self.image_size = table, tokenize, image_size
        self.batch_size, self.eval_batch_size, self.num_workers, self.seed = batch_size, eval_batch_size, num_workers, seed
        labels = table.filter(pl.col("split") == "train")["label"].drop_nulls().unique().sort().to_list()
        self.classes: list[str] = labels
        self._splits: dict[str, SplitData] = {}

    def split(self, name: str) -> SplitData:
        if name not in self._splits:
            self._splits[name] = build_split(self.table, name, self.tokenize, self.image_size, self.classes)
        return self._splits[name]

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            CaptionPairs(self.split("train")),
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=True,  # a ragged last batch of one caption makes a degenerate contrastive step
            generator=generator,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def eval_dataloader(self, split: str) -> DataLoader:
        data = self.split(split)
        items = EvalItems(data)
        return DataLoader(
            items,
            batch_sampler=KindBatches(items.n_images, len(data.captions), self.eval_batch_size),
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")
