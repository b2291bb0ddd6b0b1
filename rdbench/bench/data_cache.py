"""Benchmark: data loading of a second epoch, decoded-image cache vs decoding the files each epoch.

Not a test: it prints numbers. It writes a tree of ``--images`` JPEGs (224 px by default, like
RSICD) with five captions each in format A, then times one training epoch of loading (every
caption once, as ``CaptionPairs`` yields them, batched by a DataLoader) two ways:

* **decode**: each sample opens and decodes its image file, as loaders without a cache do
  (open_clip's CsvDataset, PIR's and HarMA's datasets), so every epoch pays the decoding;
* **cache**: rdbench's ``RetrievalDataModule``, which decodes each image once into the on-disk
  cache (``$RDBENCH_CACHE/images``) and memory-maps it for every later epoch, run and seed.

Each loader is measured ``--repeats`` times (interleaved, fresh loaders), two epochs each, and
the medians are reported: epoch 1, epoch 2, and the ratio of the epoch-2 times (the target is
at least 5x), with the one-off time of building the cache. Run it with

    .venv/bin/python -m rdbench.bench.data_cache                 # 300 images, 224 px, batch 64
    .venv/bin/python -m rdbench.bench.data_cache --images 1000 --workers 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def write_tree(root: Path, n: int, size: int) -> Path:
    """``n`` textured JPEGs (quality 90) and a format-A file with five captions each."""
    from rdbench.data.formats.karpathy import write_karpathy_json

    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    classes = ("airport", "beach", "forest", "port", "river", "parking")
    entries = []
    for i in range(n):
        low = rng.integers(0, 256, (8, 8, 3)).astype(np.float32)
        pixels = np.kron(low, np.ones((size // 8 + 1, size // 8 + 1, 1)))[:size, :size]
        pixels = np.clip(pixels + rng.normal(0, 20, pixels.shape), 0, 255).astype(np.uint8)
        name = f"{classes[i % len(classes)]}_{i}.jpg"
        Image.fromarray(pixels).save(images / name, quality=90)
        split = "test" if i % 10 == 9 else "train"
        entries.append({"filename": name, "split": split,
                        "captions": [f"Caption {k} of image {i}, a {classes[i % len(classes)]}." for k in range(5)]})
    return write_karpathy_json(root / "dataset_bench.json", entries, dataset="bench")


def time_epoch(loader) -> float:
    start = time.perf_counter()
    for batch in loader:
        batch["images"][:, :, ::16, ::16].float().mean()  # use the batch, cheaply
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--size", type=int, default=224, help="image size on disk and for the model")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for both loaders")
    parser.add_argument("--repeats", type=int, default=3,
                        help="measure each loader this many times (fresh loaders, two epochs each) and report the medians")
    parser.add_argument("--folder", help="where to write the images and the cache (default: a temporary folder)")
    args = parser.parse_args()

    folder = Path(args.folder) if args.folder else Path(tempfile.mkdtemp(prefix="rdbench-bench-"))
    os.environ["RDBENCH_CACHE"] = str(folder / "cache")
    import torch
    from torch.utils.data import DataLoader, Dataset

    from rdbench.data.loading.images import decode_image
    from rdbench.data.formats.karpathy import read_karpathy_json
    from rdbench.data.loading.loaders import RetrievalDataModule
    from rdbench.testing import tokenize

    started = time.perf_counter()
    table = read_karpathy_json(write_tree(folder / "data", args.images, args.size))
    train = table.filter(table["split"] == "train")
    print(f"wrote {args.images} {args.size}px JPEGs in {time.perf_counter() - started:.1f}s under {folder}; "
          f"an epoch is {train.height} captions of {train['image_id'].n_unique()} train images, batch {args.batch_size}, "
          f"{args.workers} worker(s), torch threads {torch.get_num_threads()}")

    class DecodeEachTime(Dataset):
        def __init__(self, paths: list[str], tokens: torch.Tensor):
            self.paths, self.tokens = paths, tokens

        def __len__(self) -> int:
            return len(self.paths)

        def __getitem__(self, j: int):
            return {"images": decode_image(self.paths[j], args.size), "tokens": self.tokens[j]}

    tokens = tokenize(train["caption"].to_list())

    def decode_epochs() -> list[float]:
        loader = DataLoader(DecodeEachTime(train["path"].to_list(), tokens), batch_size=args.batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(0), num_workers=args.workers,
                            persistent_workers=args.workers > 0)
        return [time_epoch(loader) for _ in range(2)]

    builds: list[float] = []

    def cache_epochs() -> list[float]:
        module = RetrievalDataModule(table, tokenize, args.size, args.batch_size, num_workers=args.workers, seed=0)
        start = time.perf_counter()
        module.split("train")  # decodes into the cache the first time, maps it afterwards
        builds.append(time.perf_counter() - start)
        loader = module.train_dataloader()
        return [time_epoch(loader) for _ in range(2)]

    # Interleaved, so that a burst of load on a shared machine hits both loaders alike.
    decode, cached = [], []
    for _ in range(args.repeats):
        decode.append(decode_epochs())
        cached.append(cache_epochs())
    med = lambda values: statistics.median(values)  # noqa: E731
    d1, d2 = med([e[0] for e in decode]), med([e[1] for e in decode])
    c1, c2 = med([e[0] for e in cached]), med([e[1] for e in cached])
    print(f"decode every epoch: epoch 1 {d1:.3f}s, epoch 2 {d2:.3f}s  (medians of {args.repeats})")
    print(f"cache:              epoch 1 {c1:.3f}s, epoch 2 {c2:.3f}s; building it took {builds[0]:.3f}s once, "
          f"a later run maps it in {med(builds[1:] or builds):.3f}s")
    ratio = d2 / c2
    print(f"second epoch: the cache is {ratio:.1f}x faster than decoding ({'meets' if ratio >= 5 else 'MISSES'} the 5x target)")


if __name__ == "__main__":
    main()
