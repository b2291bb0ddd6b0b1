"""Readers of formats B-E and layout detection: one content, five formats, one fingerprint."""

from __future__ import annotations

import json

import pytest
from datatrees import CLASSES, WRITERS, Item, content, write_b, write_c, write_d

from rdbench.data.formats.csvfiles import CsvOptions, split_from_name
from rdbench.data.formats.layout import find_annotations, read_annotations
from rdbench.data.table import label_from_filename, table_fingerprint
from rdbench.errors import DataError


def read(root, fmt="auto", name="rsicd", **csv):
    found = find_annotations(root, fmt, name)
    return read_annotations(found, csv=CsvOptions(**csv)), found


def options(fmt):
    return {"encoding": "gb18030"} if fmt == "D" else {}


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """Each format written twice: train/test only (all five), and with a val split (all but B)."""
    out = {}
    for with_val in (False, True):
        items = content(val=with_val)
        for fmt, write in WRITERS.items():
            if fmt == "B" and with_val:
                continue  # format B has no val split
            root = tmp_path_factory.mktemp(f"{fmt}-{'val' if with_val else 'plain'}")
            write(root, items)
            out[fmt, with_val] = root
    return out


@pytest.mark.parametrize("with_val", [False, True])
def test_every_format_gives_the_same_table(trees, with_val):
    prints = {}
    for (fmt, val), root in trees.items():
        if val != with_val:
            continue
        table, found = read(root, **options(fmt))
        assert found.format == fmt
        prints[fmt] = table_fingerprint(table)
    assert len(prints) == (4 if with_val else 5)
    assert len({p["sha256"] for p in prints.values()}) == 1, prints
    splits = next(iter(prints.values()))["splits"]
    assert list(splits) == (["train", "val", "test"] if with_val else ["train", "test"])


def test_table_content_labels_and_paths(trees):
    table, _ = read(trees["C", True])
    by_id = {r["image_id"]: r for r in table.iter_rows(named=True)}
    assert by_id["storage_tanks_17.tif"]["label"] == "storage_tanks"
    assert by_id["00017.jpg"]["label"] is None  # no class in a numeric name
    assert by_id["airport_1.tif"]["path"].endswith("images/train/airport_1.tif")
    assert "A café by the 机场." in table["caption"].to_list()
    # Captions are grouped by image, whatever order the file gave them in (format D scatters them).
    d_table, _ = read(trees["D", True], **options("D"))
    assert d_table.filter(d_table["image_id"] == "beach_5.png")["caption"].to_list() == \
        table.filter(table["image_id"] == "beach_5.png")["caption"].to_list()


def test_explicit_format_overrides_detection(tmp_path):
    items = content(train_per_class=1)
    write_b(tmp_path, items)
    write_c(tmp_path, items)  # both in one folder: C wins detection, B on request
    assert read(tmp_path)[1].format == "C"
    assert read(tmp_path, "B")[1].format == "B"
    with pytest.raises(DataError, match=r"no format-A annotation files \(expected dataset_rsicd.json\)"):
        read(tmp_path, "A")


def test_gb18030_needs_its_encoding(tmp_path):
    write_d(tmp_path, content(train_per_class=1))
    with pytest.raises(DataError, match=r"rsicd_train.csv: not valid UTF-8 at line \d+ .*encoding: gb18030"):
        read(tmp_path)
    assert "A café by the 机场." in read(tmp_path, encoding="gb18030")[0]["caption"].to_list()


def test_missing_root_and_annotations_name_the_expected_files(tmp_path):
    with pytest.raises(DataError) as missing:
        find_annotations(tmp_path / "nope", name="rsitmd")
    message = str(missing.value)
    assert "dataset root not found" in message and "\n" not in message
    for expected in ("dataset_rsitmd.json", "train_caps.txt", "test_filename.txt", "rsitmd_val.json",
                     "rsitmd_test.csv", "open_clip"):
        assert expected in message
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="no annotation files found"):
        find_annotations(tmp_path, name="rsicd")


def test_one_dataset_is_never_read_as_the_other(tmp_path):
    write_c(tmp_path, content(train_per_class=1), name="rsitmd")
    with pytest.raises(DataError, match="no annotation files found"):
        find_annotations(tmp_path, name="rsicd")
    assert read(tmp_path, name="rsitmd")[1].format == "C"


def test_precomp_line_counts_must_fit(tmp_path):
    write_b(tmp_path, content(train_per_class=1))
    caps = tmp_path / "train_caps.txt"
    caps.write_text(caps.read_text() + "one caption too many\n")
    with pytest.raises(DataError, match=r"train_caps.txt: \d+ captions do not fit the \d+ file names"):
        read(tmp_path)


def test_precomp_repeated_train_name_is_an_error(tmp_path):
    write_b(tmp_path, content(train_per_class=1))
    names = tmp_path / "train_filename.txt"
    lines = names.read_text().splitlines()
    lines[1] = lines[0]
    names.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="line 2 repeats the file name of line 1"):
        read(tmp_path)


def test_pir_records_flat_images_and_bad_records(tmp_path):
    items = content(train_per_class=1)
    write_c(tmp_path, items)
    # Images unpacked flat rather than in split folders are still found.
    for path in (tmp_path / "images" / "train").iterdir():
        path.rename(tmp_path / "images" / path.name)
    table, _ = read(tmp_path)
    assert table.filter(table["image_id"] == "airport_1.tif")["path"][0].endswith("images/airport_1.tif")
    (tmp_path / "rsicd_test.json").write_text(json.dumps([{"image": "test/x_1.tif"}]))
    with pytest.raises(DataError, match=r"rsicd_test.json: record 0 \('test/x_1.tif'\) has no 'caption'"):
        read(tmp_path)


def test_csv_split_from_names_and_columns(tmp_path):
    assert [split_from_name(n) for n in ("rsicd_test.csv", "val.tsv", "train-2.csv", "captions.csv")] == \
        ["test", "val", "train", None]
    (tmp_path / "captions.csv").write_text("img,text\nairport_1.jpg,A plane.\n")
    with pytest.raises(DataError, match="captions.csv: cannot tell its split"):
        read(tmp_path, name=None)
    (tmp_path / "captions.csv").write_text("img,text,split\nairport_1.jpg,A plane.,test\nport_2.jpg,A ship.,train\n")
    table, found = read(tmp_path, name=None)
    assert found.format == "E" and table_fingerprint(table)["splits"]["test"] == {"images": 1, "captions": 1}
    (tmp_path / "captions.csv").write_text("picture;words;split\nairport_1.jpg;A plane.;test\n")
    with pytest.raises(DataError, match="no image column"):
        read(tmp_path, name=None)
    table, _ = read(tmp_path, name=None, image_column="picture", caption_column="words", separator=";")
    assert table["caption"].to_list() == ["A plane."]


# -- images without a class --------------------------------------------------------------------
# RSICD has images whose names carry no class (1234.jpg); PIR/HarMA's format-C train records give
# them `label: -1`. Such an image is unlabelled in every format: a null label, never a class.
UNLABELLED = "1234.jpg"


def unlabelled_items():
    items = [i for i in content(train_per_class=2) if i.filename != "00017.jpg"]
    items.append(Item(UNLABELLED, "train", ["An image without a class.", "Roofs and roads.", "Some trees.",
                                           "A few cars.", "Nothing in particular."], seed=200))
    return items


def patch_json(path, change):
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def write_unlabelled(root, fmt, marker):
    """A tree in ``fmt`` whose image 1234.jpg the annotation marks with ``marker`` (where the
    format has a label field; "absent": no label field for it)."""
    items = unlabelled_items()
    WRITERS[fmt](root, items)
    if fmt == "A" and marker != "absent":
        def mark(doc):
            for entry in doc["images"]:
                if entry["filename"] == UNLABELLED:
                    entry["label"] = marker
        patch_json(root / "dataset_rsicd.json", mark)
    if fmt == "C":
        def mark(records):
            for record in records:
                if record["image"] == f"train/{UNLABELLED}":
                    record["label"] = -1
                    record.pop("label_name", None)
                    if marker != "absent":
                        record["label_name"] = marker
        patch_json(root / "rsicd_train.json", mark)
    if fmt == "E" and marker != "absent":
        for path in root.glob("*.tsv"):  # a label column: the class, or the marker for 1234.jpg
            lines = path.read_text(encoding="utf-8").splitlines()
            out = [lines[0] + "\tlabel"]
            for line in lines[1:]:
                name = line.split("\t")[0].rsplit("/", 1)[-1]
                out.append(f"{line}\t{marker if name == UNLABELLED else label_from_filename(name)}")
            path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return root


@pytest.mark.parametrize("fmt, marker", [
    ("A", "absent"), ("A", -1), ("A", "-1"), ("A", "none"), ("A", "unknown"),
    ("B", "absent"),
    ("C", "absent"), ("C", ""), ("C", "-1"), ("C", "none"), ("C", "unknown"), ("C", "1234"),
    ("D", "absent"),
    ("E", "absent"), ("E", "-1"), ("E", "none"), ("E", "N/A"),
])
def test_an_image_without_a_class_is_unlabelled_in_every_format(tmp_path, fmt, marker):
    from rdbench.commands.verify import split_counts
    from rdbench.data.datasets import RSICDDataset

    root = write_unlabelled(tmp_path, fmt, marker)
    table, found = read(root, **options(fmt))
    assert found.format == fmt
    rows = table.filter(table["image_id"] == UNLABELLED)
    assert rows.height == 5 and rows["label"].to_list() == [None] * 5
    assert sorted(table["label"].drop_nulls().unique().to_list()) == sorted(CLASSES)  # five, not six
    # The same through the dataset a run reads (val carved from train, stratified by class) and
    # in verify's counts.
    run_table = RSICDDataset(root=str(root), encoding=options(fmt).get("encoding")).load_table()
    assert run_table.filter(run_table["image_id"] == UNLABELLED)["label"].to_list() == [None] * 5
    train = next(r for r in split_counts(run_table) if r["split"] == "train")
    assert train["classes"] == len(CLASSES) and train["no class"] == 1
    # ... and its fingerprint is that of the same annotations with no label at all.
    plain = read(write_unlabelled(tmp_path / "plain", "B", "absent"))[0]
    assert table_fingerprint(table)["sha256"] == table_fingerprint(plain)["sha256"]
