"""Tests for the embedded synthetic dataset (rdbench.data.synthetic.generator)."""

from __future__ import annotations

import json
import re
import time
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from rdbench.data.synthetic import generator as synthetic
from rdbench.data.formats.karpathy import read_karpathy_json
from rdbench.data.synthetic.generator import CLASSES, COLOURS, generate_pairs, write_synthetic_dataset
from rdbench.data.table import table_fingerprint
from rdbench.errors import DataError

SMALL = {"train": 24, "val": 12, "test": 12}
NUMBER_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
POSITION_RE = re.compile(r"\b(top|bottom|upper|lower|left|right|center|middle)\b")


@pytest.fixture(scope="module")
def target():
    return generate_pairs(120, domain="target", seed=5)


@pytest.fixture(scope="module")
def source():
    return generate_pairs(120, domain="source", seed=5)


def test_shapes_and_balance(target):
    assert target.images.shape == (120, 64, 64, 3) and target.images.dtype == np.uint8
    assert len(target.captions) == len(target.labels) == len(target.attributes) == 120
    assert all(len(group) == 5 for group in target.captions)
    assert len(CLASSES) == 12
    assert Counter(target.labels) == {name: 10 for name in CLASSES}


def test_image_size_argument():
    pairs = generate_pairs(3, domain="source", image_size=32, seed=1)
    assert pairs.images.shape == (3, 32, 32, 3)


def test_deterministic_and_seed_dependent():
    first = generate_pairs(24, domain="target", seed=11)
    again = generate_pairs(24, domain="target", seed=11)
    other = generate_pairs(24, domain="target", seed=12)
    assert first.images.tobytes() == again.images.tobytes()
    assert first.captions == again.captions and first.labels == again.labels
    assert not np.array_equal(first.images, other.images)
    assert first.captions != other.captions


def test_prefix_stable():
    # Drawing more images must not change the earlier ones (each image has its own stream).
    short, long = (generate_pairs(n, domain="target", seed=3) for n in (13, 30))
    assert np.array_equal(short.images, long.images[:13])
    assert short.captions == long.captions[:13]


def test_domains_differ_in_style(target, source):
    t = target.images.astype(np.float64) / 255
    s = source.images.astype(np.float64) / 255
    assert s.mean() - t.mean() > 0.07  # the source domain is brighter
    saturation = lambda x: (x.max(axis=-1) - x.min(axis=-1)).mean()  # noqa: E731
    assert saturation(s) > 1.4 * saturation(t)
    # Target texture has fine grain, source is smooth: compare neighbour differences.
    roughness = lambda x: np.abs(np.diff(x, axis=2)).mean()  # noqa: E731
    assert roughness(t) > 1.3 * roughness(s)
    # Same scene content under both looks would still differ; different draws certainly do.
    assert not np.array_equal(target.images, source.images)


def test_source_captions_are_templated(source):
    for label, attributes, group in zip(source.labels, source.attributes, source.captions):
        for caption in group:
            assert caption == caption.lower() and not caption.endswith(".")
            assert caption.startswith(("a satellite image of ", "an aerial photo of "))
            mentioned = [w for w in list(NUMBER_WORDS) + ["one"] + list(COLOURS)
                         + ["small", "large"] if re.search(rf"\b{w}\b", caption)]
            assert len(mentioned) <= 1, caption


def _fine_captions(pairs):
    """Target captions that are not from the shared scene-only pool, with their attributes."""
    for label, attributes, group in zip(pairs.labels, pairs.attributes, pairs.captions):
        generic = set(synthetic._CLASS_SPECS[label][3])
        for caption in group:
            if caption not in generic:
                yield caption, attributes


def test_target_captions_mention_attributes_correctly(target):
    fine = list(_fine_captions(target))
    all_captions = [c for group in target.captions for c in group]
    assert len(fine) > 0.5 * len(all_captions)
    with_count = with_colour = with_position = 0
    for caption, attributes in fine:
        words = caption.lower().rstrip(".").replace(",", "").split()
        numbers = [NUMBER_WORDS[w] for w in words if w in NUMBER_WORDS]
        if numbers:
            with_count += 1
            assert numbers == [attributes["count"]], caption
        colours = [w for w in words if w in COLOURS]
        if colours:
            with_colour += 1
            assert colours == [attributes["colour"]], caption
        if POSITION_RE.search(caption.lower()):
            with_position += 1
    assert with_count > 0.15 * len(fine)
    assert with_colour > 0.25 * len(fine)
    assert with_position > 0.25 * len(fine)
    # Several attributes in one caption is what makes target captions fine-grained.
    assert any(len({w for w in caption.lower().split() if w in COLOURS or w in NUMBER_WORDS}) >= 2
               for caption, _ in fine)


def test_target_captions_repeat_like_rsicd(target):
    counts = Counter(c for group in target.captions for c in group)
    assert max(counts.values()) >= 3  # scene-only captions recur across images
    assert any(len(set(group)) < 5 for group in target.captions)  # and within an image
    assert len(counts) > 0.5 * 5 * len(target.captions)  # but most captions are distinct


def test_generation_is_fast_enough():
    start = time.perf_counter()
    generate_pairs(600, domain="target", seed=9)
    assert time.perf_counter() - start < 10  # 5,000 images take about 9 s on a slow core


def test_argument_checks():
    with pytest.raises(ValueError, match="domain"):
        generate_pairs(2, domain="other")
    with pytest.raises(ValueError, match="seed"):
        generate_pairs(2, domain="target", seed=-1)
    with pytest.raises(ValueError, match="unknown split"):
        write_synthetic_dataset("/nonexistent", splits={"dev": 3})


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return write_synthetic_dataset(root, splits=SMALL, image_size=48, seed=4)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_written_dataset_reads_back(written):
    assert written.name == "dataset_synthetic_rs.json"
    df = read_karpathy_json(written)
    fp = table_fingerprint(df)
    assert fp["splits"] == {name: {"images": n, "captions": 5 * n} for name, n in SMALL.items()}
    assert df.group_by("image_id").len()["len"].to_list() == [5] * 48
    for image_id, label, path in df.select("image_id", "label", "path").unique().rows():
        assert re.fullmatch(r"[a-z_]+_\d{4}\.png", image_id)
        assert label in CLASSES and image_id.startswith(label + "_")
        with Image.open(path) as image:
            assert image.size == (48, 48) and image.mode == "RGB"
    for split, n in SMALL.items():
        labels = df.filter(df["split"] == split).unique("image_id")["label"].value_counts()
        assert labels.height == min(n, 12) and labels["count"].max() == -(-n // 12)


def test_written_json_has_header_and_no_labels(written):
    document = json.loads(written.read_text(encoding="utf-8"))
    assert document["rdbench_generator"] == {
        "name": "rdbench.data.synthetic", "version": synthetic.GENERATOR_VERSION,
        "domain": "target", "splits": SMALL, "image_size": 48, "seed": 4}
    assert all("label" not in entry for entry in document["images"])


def test_byte_identical_and_skips_second_call(written, tmp_path, monkeypatch):
    again = write_synthetic_dataset(tmp_path, splits=SMALL, image_size=48, seed=4)
    assert _files(tmp_path) == _files(written.parent)
    # Second call with the same arguments must not draw anything.
    monkeypatch.setattr(synthetic, "_generate", lambda *a, **k: pytest.fail("regenerated"))
    assert write_synthetic_dataset(tmp_path, splits=SMALL, image_size=48, seed=4) == again


def test_regenerates_when_arguments_change_or_images_vanish(tmp_path):
    path = write_synthetic_dataset(tmp_path, splits={"train": 12, "test": 12}, seed=1)
    before = _files(tmp_path)
    write_synthetic_dataset(tmp_path, splits={"train": 12, "test": 12}, seed=2)
    assert json.loads(path.read_text())["rdbench_generator"]["seed"] == 2
    assert _files(tmp_path) != before
    victim = sorted((tmp_path / "images").iterdir())[0]
    victim.unlink()
    write_synthetic_dataset(tmp_path, splits={"train": 12, "test": 12}, seed=2)
    assert victim.exists()


def test_test_size_does_not_change_train(tmp_path):
    small = write_synthetic_dataset(tmp_path / "a", splits={"train": 24, "test": 12}, seed=7)
    large = write_synthetic_dataset(tmp_path / "b", splits={"train": 24, "test": 36}, seed=7)
    train = lambda p: read_karpathy_json(p).filter(  # noqa: E731
        read_karpathy_json(p)["split"] == "train").select("image_id", "caption")
    assert train(small).equals(train(large))
    for name in train(small)["image_id"].unique():
        assert (small.parent / "images" / name).read_bytes() == \
            (large.parent / "images" / name).read_bytes()


def test_refuses_to_overwrite_foreign_json(tmp_path):
    foreign = tmp_path / "dataset_synthetic_rs.json"
    foreign.write_text('{"images": []}', encoding="utf-8")
    with pytest.raises(DataError) as info:
        write_synthetic_dataset(tmp_path, splits={"train": 1})
    assert str(info.value).startswith(f"{foreign}: ")
    assert foreign.read_text(encoding="utf-8") == '{"images": []}'


# -- the premise dial (docs/premise.md) ----------------------------------------------------------
from rdbench.data.synthetic.scenes import _CLASS_SPECS, DEFAULT_DETAIL  # noqa: E402


def _generic(label: str) -> set[str]:
    return set(_CLASS_SPECS[label][3])


def _dialled(detail):
    return synthetic._generate(120, domain="target", image_size=16, seed=3, stream="train", detail=detail)


def test_the_dial_left_out_is_the_embedded_mix_and_changes_captions_only():
    default, same = _dialled(None), _dialled(DEFAULT_DETAIL)
    assert default.captions == same.captions and 0.80 < DEFAULT_DETAIL < 0.81
    for detail in (0.0, 0.5, 1.0):
        other = _dialled(detail)
        assert np.array_equal(other.images, default.images) and other.labels == default.labels
        assert all(c[0] in _generic(label) for c, label in zip(other.captions, other.labels))  # first: scene-only


def test_the_dial_sets_the_share_of_fine_grained_captions():
    def fine_share(detail) -> float:
        pairs = _dialled(detail)
        later = [c for caps, label in zip(pairs.captions, pairs.labels) for c in caps[1:] if c not in _generic(label)]
        return len(later) / (4 * len(pairs.labels))

    shares = [fine_share(d) for d in (0.0, 0.5, DEFAULT_DETAIL, 1.0)]
    assert shares[0] == 0.0  # every caption is matched by scene words alone
    assert shares[0] < shares[1] < shares[2] < shares[3]
    assert shares[3] > 0.85  # all fresh captions are fine-grained; only repeats of the first remain


@pytest.mark.parametrize("bad", [-0.1, 1.5, True, "half", float("nan")])
def test_the_dial_refuses_what_is_not_a_share(bad):
    with pytest.raises(ValueError, match="detail must be a number from 0 to 1"):
        synthetic._generate(2, domain="target", image_size=16, seed=0, stream="train", detail=bad)


def test_a_dialled_dataset_is_its_own_cache_and_the_default_keeps_its_folder(tmp_path, monkeypatch):
    from rdbench.data.datasets import SyntheticRSDataset

    monkeypatch.setenv("RDBENCH_CACHE", str(tmp_path))
    plain, dialled = SyntheticRSDataset(train=4, val=2, test=2), SyntheticRSDataset(train=4, val=2, test=2, detail=1.0)
    assert plain._root() != dialled._root()
    assert SyntheticRSDataset(train=4, val=2, test=2, detail=None)._root() == plain._root()
    header = json.loads(write_synthetic_dataset(tmp_path / "d", splits={"train": 2}, detail=0.5).read_text())["rdbench_generator"]
    assert header["detail"] == 0.5
    assert "detail" not in json.loads(write_synthetic_dataset(tmp_path / "p", splits={"train": 2}).read_text())["rdbench_generator"]
