"""dataset/rsicd, dataset/rsitmd, dataset/captions and dataset/transfer: roots, split schemes,
exclusion."""

from __future__ import annotations

from collections import Counter

import polars as pl
import pytest
from datatrees import content, write_a, write_b, write_c

from rdbench.data.datasets import CaptionsDataset, RSICDDataset, RSITMDDataset, TransferDataset
from rdbench.data.loading.overlap import ImageKey, Match, write_overlap_list
from rdbench.data.formats.splits import carve_validation
from rdbench.data.table import table_fingerprint
from rdbench.errors import DataError
from rdbench.resolution.spec import resolve


def images_of(table, split):
    return set(table.filter(pl.col("split") == split)["image_id"].to_list())


@pytest.fixture(scope="module")
def precomp(tmp_path_factory):
    root = tmp_path_factory.mktemp("precomp")
    write_b(root, content(train_per_class=10))
    return root


def test_root_from_the_environment(precomp, monkeypatch):
    monkeypatch.delenv("RDBENCH_RSICD_ROOT", raising=False)
    with pytest.raises(DataError) as error:
        RSICDDataset().load_table()
    message = str(error.value)
    assert message.startswith("dataset/rsicd: no dataset root (pass root: DIR or set $RDBENCH_RSICD_ROOT")
    assert "dataset_rsicd.json" in message and "train_caps.txt" in message and "\n" not in message
    monkeypatch.setenv("RDBENCH_RSICD_ROOT", str(precomp))
    assert RSICDDataset().load_table().height > 0
    monkeypatch.setenv("RDBENCH_RSITMD_ROOT", str(precomp / "missing"))
    with pytest.raises(DataError, match=r"missing: dataset root not found \(expected .*rsitmd_train.json"):
        RSITMDDataset().load_table()


def test_default_scheme_carves_val_when_the_files_have_none(precomp):
    dataset = RSICDDataset(root=str(precomp))
    table = dataset.load_table()
    native = RSICDDataset(root=str(precomp), split_scheme="native").load_table()
    assert images_of(native, "val") == set()
    assert images_of(table, "test") == images_of(native, "test")  # the test split is never touched
    train, val = images_of(native, "train"), images_of(table, "val")
    assert len(val) == round(0.2 * len(train)) and val <= train
    assert dataset.describe()["split_scheme"] == "carve" and dataset.describe()["format"] == "B"


def test_carve_is_stratified_and_seeded(precomp):
    native = RSICDDataset(root=str(precomp), split_scheme="native").load_table()
    labels = dict(native.select("image_id", "label").unique().iter_rows())
    a = carve_validation(native, 0.2, seed=0)
    b = carve_validation(native, 0.2, seed=0)
    c = carve_validation(native, 0.2, seed=1)
    assert images_of(a, "val") == images_of(b, "val") != images_of(c, "val")
    per_class = Counter(labels[i] for i in images_of(a, "val"))
    # 10 train images per class and 20 %: two of each class, whatever the seed.
    assert {k: v for k, v in per_class.items() if k} == {c: 2 for c in ("airport", "beach", "forest", "port", "storage_tanks")}
    # Shuffling the file's rows changes nothing: the carve depends on the ids, not their order.
    shuffled = native.sample(fraction=1.0, shuffle=True, seed=3)
    assert images_of(carve_validation(shuffled, 0.2, seed=0), "val") == images_of(a, "val")
    with pytest.raises(DataError, match="already has a val split"):
        carve_validation(a, 0.2)


def test_pir_scheme_takes_the_splits_of_format_c(tmp_path):
    items = content(train_per_class=2, val=True)
    write_c(tmp_path, items, name="rsitmd")
    # Format A beside it with val folded into train, as RSITMD's original release has it.
    write_a(tmp_path, [type(i)(**{**i.__dict__, "split": "train" if i.split == "val" else i.split}) for i in items],
            name="rsitmd")
    dataset = RSITMDDataset(root=str(tmp_path), format="A", split_scheme="pir")
    table = dataset.load_table()
    pir = RSITMDDataset(root=str(tmp_path), format="C").load_table()
    assert table_fingerprint(table)["sha256"] == table_fingerprint(pir)["sha256"]
    assert dataset.describe()["splits_from"] == ["rsitmd_test.json", "rsitmd_train.json", "rsitmd_val.json"]
    only_a = write_a(tmp_path / "only-a", items, name="rsitmd")
    with pytest.raises(DataError, match=r"split_scheme 'pir' needs the PIR/HarMA files \(rsitmd_train.json"):
        RSITMDDataset(root=str(only_a), split_scheme="pir").load_table()


def overlap_file(path, dataset, ids, other="rsitmd"):
    matches = [Match(ImageKey(dataset, i, "train", ""), ImageKey(other, i, "test", ""), "identical pixels") for i in ids]
    return write_overlap_list(path, matches, header=["test"])


def test_exclude_removes_the_overlap_from_train_and_val_only(precomp, tmp_path):
    table = RSICDDataset(root=str(precomp)).load_table()
    train, val, test = (sorted(images_of(table, s)) for s in ("train", "val", "test"))
    listed = [train[0], val[0], test[0]]
    listing = overlap_file(tmp_path / "overlap.tsv", "rsicd", listed)
    dataset = RSICDDataset(root=str(precomp), exclude=str(listing))
    cleaned = dataset.load_table()
    assert train[0] not in images_of(cleaned, "train") | images_of(cleaned, "val")
    assert val[0] not in images_of(cleaned, "train") | images_of(cleaned, "val")
    assert test[0] in images_of(cleaned, "test")
    described = dataset.describe()["exclude"]
    assert described["removed"] == 2 and len(described["sha256"]) == 64

    other = tmp_path / "other.tsv"
    other.write_text("# only the other side\n" + "".join(f"rsitmd\t{i}\ttest\tidentical\trsicd:train:{i}\n" for i in listed))
    with pytest.raises(DataError, match="lists images of rsitmd, none of 'rsicd'"):
        RSICDDataset(root=str(precomp), exclude=str(other)).load_table()
    stale = overlap_file(tmp_path / "stale.tsv", "rsicd", ["nowhere_1.jpg"])
    with pytest.raises(DataError, match="stale.tsv: lists 1 image"):
        RSICDDataset(root=str(precomp), exclude=str(stale)).load_table()
    with pytest.raises(DataError, match="absent.tsv: overlap list not found"):
        RSICDDataset(root=str(precomp), exclude=str(tmp_path / "absent.tsv")).load_table()


def test_transfer_trains_on_one_and_tests_on_the_other(precomp, tmp_path):
    items = content(train_per_class=1)
    for item in items:
        item.filename = "t" + item.filename  # distinct ids (RSITMD's .tif vs RSICD's .jpg)
    write_c(tmp_path, items, name="rsitmd")
    transfer = TransferDataset(RSICDDataset(root=str(precomp)), RSITMDDataset(root=str(tmp_path)))
    table = transfer.load_table()
    assert images_of(table, "test") == {i.filename for i in items if i.split == "test"}
    assert images_of(table, "train") <= images_of(RSICDDataset(root=str(precomp)).load_table(), "train")
    assert transfer.describe()["test"]["name"] == "rsitmd"


def test_components_resolve_with_null_roots_and_captions_options(tmp_path):
    for key in ("dataset/rsicd", "dataset/rsitmd"):
        assert resolve({"name": key, "root": None}, "dataset").build().root is None
    with pytest.raises(Exception, match="split_scheme"):
        resolve({"name": "dataset/rsicd", "split_scheme": "random"}, "dataset")
    (tmp_path / "pairs_train.csv").write_text("file|words\nairport_1.jpg|A plane.\nairport_1.jpg|Planes.\n")
    (tmp_path / "pairs_test.csv").write_text("file|words\nport_2.jpg|A ship.\n")
    dataset = CaptionsDataset(root=str(tmp_path), name="pairs", image_column="file", caption_column="words",
                              separator="|", split_scheme="native")
    table = dataset.load_table()
    assert table_fingerprint(table)["splits"] == {"train": {"images": 1, "captions": 2}, "test": {"images": 1, "captions": 1}}
    assert dataset.describe()["format"] == "E"
