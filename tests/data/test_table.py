"""Tests for rdbench.data.table: label parsing, table construction and fingerprints."""

from __future__ import annotations

import random
from pathlib import Path

import polars as pl
import pytest

from rdbench.data.table import (
    COLUMNS, clean_label, label_from_filename, make_source, make_table, table_fingerprint,
)
from rdbench.errors import DataError


def row(image_id, caption, split="train", label=None, path=None, source="caps.json (format A)"):
    return {"image_id": image_id, "path": path or f"/data/images/{image_id}", "caption": caption,
            "split": split, "label": label, "source": source}


@pytest.mark.parametrize("name, expected", [
    ("airport_12.jpg", "airport"),
    ("storage_tanks_0042.png", "storage_tanks"),
    ("denseresidential_3.jpg", "denseresidential"),
    ("00012.jpg", None),
    ("train/bridge_942.tif", "bridge"),        # format C prefixes the split folder
    ("C:\\RSICD\\port_3.jpg", "port"),          # Windows paths in annotation files
    ("Storage Tanks_3.jpg", "storage_tanks"),
    ("baseballfield_0.tif", "baseballfield"),
    ("airport12.jpg", "airport"),
    ("airport_12", "airport"),
    ("P0001.png", None),                        # one letter is not a class
    ("beach.jpg", None),                        # no trailing number: not an RSICD-style name
    ("12_airport.jpg", None),
    ("", None),
])
def test_label_from_filename(name, expected):
    assert label_from_filename(name) == expected


def test_label_from_filename_accepts_paths():
    assert label_from_filename(Path("/x/images/river_7.png")) == "river"


def test_make_table_schema_and_order():
    rows = [
        row("b_2.jpg", "b first", split="test"),
        row("a_1.jpg", "a first", split="train"),
        row("c_3.jpg", "c only", split="val"),
        row("b_2.jpg", "b second", split="test"),
        row("a_0.jpg", "zzz first", split="train"),
        row("a_1.jpg", "a second", split="train"),
        row("a_0.jpg", "aaa second", split="train"),
    ]
    df = make_table(rows)
    assert df.columns == list(COLUMNS)
    assert all(dtype == pl.String for dtype in df.dtypes)
    # Split order is train, val, test (not alphabetical); captions are grouped by image and
    # keep their given order within an image (not sorted by text).
    assert df.select("split", "image_id", "caption").rows() == [
        ("train", "a_0.jpg", "zzz first"),
        ("train", "a_0.jpg", "aaa second"),
        ("train", "a_1.jpg", "a first"),
        ("train", "a_1.jpg", "a second"),
        ("val", "c_3.jpg", "c only"),
        ("test", "b_2.jpg", "b first"),
        ("test", "b_2.jpg", "b second"),
    ]


def test_make_table_normalises_values():
    df = make_table([{"image_id": 17, "path": Path("/d/17.jpg"), "caption": "  padded  ",
                      "split": "test", "label": "", "source": "x.csv (format D)"}])
    assert df.row(0, named=True) == {"image_id": "17", "path": "/d/17.jpg", "caption": "padded",
                                     "split": "test", "label": None, "source": "x.csv (format D)"}


@pytest.mark.parametrize("value, expected", [
    (None, None), ("", None), ("  ", None), (-1, None), ("-1", None), (" -1 ", None), (-1.0, None),
    ("none", None), ("None", None), ("NULL", None), ("unknown", None), ("N/A", None), ("nan", None),
    (float("nan"), None), ("unlabelled", None),
    ("airport", "airport"), (" airport ", "airport"), (3, "3"), ("3", "3"), (0, "0"),
])
def test_clean_label_gives_no_class_for_its_markers(value, expected):
    assert clean_label(value) == expected


def test_make_table_never_makes_a_class_of_no_class():
    df = make_table([row("1234.jpg", "x", label=-1), row("1235.jpg", "y", label="none"),
                     row("a_1.jpg", "z", label="airport")])
    assert df["label"].to_list() == [None, None, "airport"]
    assert df["label"].drop_nulls().n_unique() == 1


def test_make_table_empty_has_schema():
    df = make_table([])
    assert df.height == 0 and df.columns == list(COLUMNS)
    assert table_fingerprint(df)["splits"] == {}


def test_make_table_rejects_missing_or_extra_columns():
    bad = row("a_1.jpg", "x")
    del bad["label"]
    with pytest.raises(ValueError, match="label"):
        make_table([bad])
    with pytest.raises(ValueError, match="keywords"):
        make_table([{**row("a_1.jpg", "x"), "keywords": "k"}])


@pytest.mark.parametrize("rows, fragment", [
    ([row("a_1.jpg", "x", split="restval")], "unknown split 'restval'"),
    ([row("a_1.jpg", "   ")], "empty caption"),
    ([row("", "x")], "empty image id"),
    ([row("a_1.jpg", None)], "no caption"),
    ([row("a_1.jpg", "x", split="train"), row("a_1.jpg", "y", split="test")], "2 different splits"),
    ([row("a_1.jpg", "x", path="/a/a_1.jpg"), row("a_1.jpg", "y", path="/b/a_1.jpg")],
     "2 different paths"),
    ([row("a_1.jpg", "x", label="a"), row("a_1.jpg", "y", label="b")], "2 different labels"),
])
def test_make_table_content_errors_name_the_source(rows, fragment):
    with pytest.raises(DataError) as info:
        make_table(rows)
    message = str(info.value)
    assert message.startswith("caps.json (format A): ")
    assert fragment in message and "\n" not in message


def test_make_source():
    assert make_source("/some/where/dataset_rsicd.json", "A") == "dataset_rsicd.json (format A)"


def _sample_rows(prefix="/machine-a", source="s.json (format A)"):
    return [row(f"{cls}_{i}.jpg", f"caption {j} of {cls} {i}", split=split, label=cls,
                path=f"{prefix}/{cls}_{i}.jpg", source=source)
            for cls, split in (("airport", "train"), ("port", "val"), ("beach", "test"))
            for i in range(3) for j in range(5)]


def test_fingerprint_counts_and_shape():
    fp = table_fingerprint(make_table(_sample_rows()))
    assert set(fp) == {"sha256", "splits"}
    assert len(fp["sha256"]) == 64 and int(fp["sha256"], 16) >= 0
    assert list(fp["splits"]) == ["train", "val", "test"]
    assert fp["splits"]["train"] == {"images": 3, "captions": 15}


def test_fingerprint_ignores_paths_sources_and_row_order():
    base = table_fingerprint(make_table(_sample_rows()))
    moved = table_fingerprint(make_table(_sample_rows(prefix="D:/elsewhere", source="t.csv")))
    shuffled_rows = _sample_rows()
    random.Random(3).shuffle(shuffled_rows)
    shuffled = table_fingerprint(make_table(shuffled_rows))
    assert base == moved == shuffled


@pytest.mark.parametrize("field, value", [
    ("caption", "caption 0 of airport 0!"), ("label", "harbor"), ("split", "test"),
    ("image_id", "airport_0b.jpg"),
])
def test_fingerprint_changes_with_content(field, value):
    rows = _sample_rows()
    base = table_fingerprint(make_table(rows))["sha256"]
    changed = [dict(r) for r in rows]
    for r in changed:  # change every row of one image so the table stays consistent
        if r["image_id"] == "airport_0.jpg":
            if field == "caption" and not r["caption"].startswith("caption 0 "):
                continue
            r[field] = value
    assert table_fingerprint(make_table(changed))["sha256"] != base


def test_fingerprint_distinguishes_field_boundaries():
    # A naive concatenation would hash ("ab", "c") and ("a", "bc") identically.
    one = table_fingerprint(make_table([row("ab", "c")]))["sha256"]
    two = table_fingerprint(make_table([row("a", "bc")]))["sha256"]
    assert one != two
