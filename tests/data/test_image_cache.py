"""The decoded-image cache and the transforms that run on its tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datatrees import content, image_bytes, write_b

from rdbench.data.loading import cache as cache_module
from rdbench.data.loading.cache import load_or_build
from rdbench.data.datasets import RSICDDataset
from rdbench.data.loading.loaders import RetrievalDataModule, build_split
from rdbench.errors import DataError
from rdbench.testing import tokenize
from rdbench.transforms import FlipTransform, RSAugmentTransform, ResizeTransform, Rotate90Transform


@pytest.fixture()
def tree(tmp_path, monkeypatch):
    monkeypatch.setenv("RDBENCH_CACHE", str(tmp_path / "cache"))
    items = content(train_per_class=2)
    write_b(tmp_path / "data", items)
    table = RSICDDataset(root=str(tmp_path / "data")).load_table()
    return tmp_path, table, items


def cache_files(tmp_path):
    """The cache entries (each written with its checksum beside it, rdbench/cache_files.py)."""
    folder = tmp_path / "cache" / "images"
    names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    entries = [n for n in names if not n.endswith(".sha256")]
    assert sorted(n for n in names if n.endswith(".sha256")) == [f"{n}.sha256" for n in entries]
    return entries


def test_cache_returns_what_decoding_returns_and_is_reused(tree, monkeypatch):
    tmp_path, table, _ = tree
    for split in ("train", "val", "test"):
        cached = build_split(table, split, tokenize, 32, [], cache=True)
        decoded = build_split(table, split, tokenize, 32, [], cache=False)
        assert cached.images.dtype == torch.uint8 and torch.equal(cached.images, decoded.images), split
    assert len(cache_files(tmp_path)) == 3 and all(n.endswith(".npy") for n in cache_files(tmp_path))

    def no_decoding(*args):
        raise AssertionError("decoded again")

    monkeypatch.setattr(cache_module, "decode_into", no_decoding)
    again = build_split(table, "train", tokenize, 32, [], cache=True)  # a later run or seed
    assert torch.equal(again.images, build_split(table, "train", tokenize, 32, [], cache=False).images)


def test_cache_key_follows_size_and_file_changes(tree):
    tmp_path, table, items = tree
    paths = table.filter(table["split"] == "test").unique("image_id", maintain_order=True)["path"].to_list()
    first = load_or_build(paths, 24, fingerprint="f", split="test")
    load_or_build(paths, 16, fingerprint="f", split="test")
    assert len(cache_files(tmp_path)) == 2
    # Replacing an image (same name, other pixels) must not be served the old pixels.
    target = next(i for i in items if paths[0].endswith(i.filename))
    target.seed += 99
    with open(paths[0], "wb") as handle:
        handle.write(image_bytes(target))
    fresh = load_or_build(paths, 24, fingerprint="f", split="test")
    assert len(cache_files(tmp_path)) == 3 and not torch.equal(fresh[0], first[0])
    assert torch.equal(fresh[1:], first[1:])


def test_a_failed_build_leaves_nothing_to_trust(tree):
    tmp_path, table, items = tree
    paths = table.filter(table["split"] == "train").unique("image_id", maintain_order=True)["path"].to_list()
    with open(paths[3], "r+b") as handle:
        handle.truncate(60)
    with pytest.raises(DataError, match=rf"{paths[3]}: image cannot be decoded"):
        load_or_build(paths, 24, fingerprint="f", split="train")
    assert cache_files(tmp_path) == []  # neither a final file nor a temporary one
    with pytest.raises(DataError, match=r"nowhere.jpg: image file not found"):
        load_or_build(paths[:2] + [str(tmp_path / "nowhere.jpg")], 24, fingerprint="f", split="train")


def test_a_damaged_cache_file_is_rebuilt(tree):
    tmp_path, table, _ = tree
    paths = table.filter(table["split"] == "test").unique("image_id", maintain_order=True)["path"].to_list()
    good = load_or_build(paths, 24, fingerprint="f", split="test").clone()
    (path,) = (p for p in (tmp_path / "cache" / "images").iterdir() if p.suffix == ".npy")
    np.save(path, np.zeros((2, 3, 24, 24), np.uint8))  # wrong shape: e.g. written by other code
    assert torch.equal(load_or_build(paths, 24, fingerprint="f", split="test"), good)


def test_transforms_keep_uint8_and_size_and_repeat_under_a_seed():
    image = torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8)
    for transform in (ResizeTransform(), FlipTransform(), Rotate90Transform(), RSAugmentTransform()):
        out = transform(image, 32)
        assert out.dtype == torch.uint8 and out.shape == (3, 32, 32), type(transform).__name__
    same = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    assert ResizeTransform()(same, 32) is same  # no-op at the cached size: results unchanged
    augment = RSAugmentTransform()
    torch.manual_seed(0)
    a = [augment(image, 32) for _ in range(4)]
    torch.manual_seed(0)
    b = [augment(image, 32) for _ in range(4)]
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not all(torch.equal(a[0], x) for x in a[1:])


def test_train_loader_applies_the_transform_reproducibly_with_workers(tree):
    _, table, _ = tree

    def batches(seed):
        module = RetrievalDataModule(table, tokenize, 24, batch_size=8, num_workers=1, seed=seed,
                                     train_transform=RSAugmentTransform())
        return [b["images"] for b in module.train_dataloader()]

    first, again, other = batches(0), batches(0), batches(1)
    assert first[0].shape == (8, 3, 24, 24)
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    assert not all(torch.equal(x, y) for x, y in zip(first, other))
    plain = RetrievalDataModule(table, tokenize, 24, batch_size=8, seed=0)
    batch = next(iter(plain.train_dataloader()))
    assert torch.equal(batch["images"], plain.split("train").images[batch["image_ids"]])
