"""Tests for rdbench.data.formats.karpathy (format A): round trips and one-line errors for bad files."""

from __future__ import annotations

import json
import os

import pytest

from rdbench.data.formats.karpathy import read_karpathy_json, tokenize, write_karpathy_json
from rdbench.data.table import make_table
from rdbench.errors import DataError

ENTRIES = [
    {"filename": "port_2.jpg", "split": "test",
     "captions": ["Two ships are in the port.", "A port.", "A port."]},
    {"filename": "airport_10.jpg", "split": "train",
     "captions": ["Many planes, parked near a building!", "  An airport.  "]},
    {"filename": "00017.jpg", "split": "val", "captions": ["A numeric file name."]},
    {"filename": "bridge_3.tif", "split": "train", "label": "viaduct",
     "captions": ["A bridge over the river."]},
]


def write_raw(tmp_path, document, name="dataset_rsicd.json"):
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document),
                    encoding="utf-8")
    return path


def valid_document():
    return {"images": [
        {"filename": "airport_1.jpg", "split": "train", "imgid": 0, "sentids": [0],
         "sentences": [{"raw": "A plane.", "tokens": ["a", "plane"], "imgid": 0, "sentid": 0}]},
        {"filename": "port_1.jpg", "split": "test", "imgid": 1, "sentids": [1],
         "sentences": [{"raw": "A ship.", "tokens": ["a", "ship"], "imgid": 1, "sentid": 1}]},
    ], "dataset": "rsicd"}


def test_round_trip_gives_expected_table(tmp_path):
    path = write_karpathy_json(tmp_path / "ann" / "dataset_x.json", ENTRIES, dataset="x")
    df = read_karpathy_json(path)
    folder = os.path.abspath(tmp_path / "ann" / "images")
    source = "dataset_x.json (format A)"
    expected = make_table([
        {"image_id": e["filename"], "path": os.path.join(folder, e["filename"]),
         "caption": c.strip(), "split": e["split"], "label": label, "source": source}
        for e, label in zip(ENTRIES, ["port", "airport", None, "viaduct"])
        for c in e["captions"]])
    assert df.equals(expected)
    assert df["image_id"].to_list()[:2] == ["airport_10.jpg", "airport_10.jpg"]
    assert df.filter(df["image_id"] == "port_2.jpg")["caption"].to_list() == [
        "Two ships are in the port.", "A port.", "A port."]  # duplicates kept, order kept


def test_written_file_has_release_layout(tmp_path):
    path = write_karpathy_json(tmp_path / "d.json", ENTRIES, dataset="rsicd",
                               header={"note": {"k": 1}})
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["dataset"] == "rsicd" and document["note"] == {"k": 1}
    first, second = document["images"][:2]
    assert first["imgid"] == 0 and first["sentids"] == [0, 1, 2]
    assert second["imgid"] == 1 and second["sentids"] == [3, 4]
    sentence = second["sentences"][0]
    assert sentence == {"tokens": ["many", "planes", "parked", "near", "a", "building"],
                        "raw": "Many planes, parked near a building!", "imgid": 1, "sentid": 3}
    assert "label" not in first and document["images"][3]["label"] == "viaduct"


def test_write_is_deterministic_and_atomic(tmp_path):
    path = tmp_path / "d.json"
    path.write_text("old content", encoding="utf-8")
    write_karpathy_json(path, ENTRIES)
    first = path.read_bytes()
    write_karpathy_json(path, ENTRIES)
    assert path.read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json"]  # no temporary left over


def test_write_rejects_bad_entries(tmp_path):
    with pytest.raises(DataError, match="unknown split"):
        write_karpathy_json(tmp_path / "d.json", [{"filename": "a_1.jpg", "split": "dev",
                                                   "captions": ["x"]}])
    with pytest.raises(DataError, match="no captions"):
        write_karpathy_json(tmp_path / "d.json", [{"filename": "a_1.jpg", "split": "train",
                                                   "captions": []}])
    assert not (tmp_path / "d.json").exists()


def test_tokenize():
    assert tokenize("There are 3 planes, parked near the terminal's gate.") == [
        "there", "are", "3", "planes", "parked", "near", "the", "terminal", "s", "gate"]


def test_image_dir_and_labels(tmp_path):
    path = write_raw(tmp_path, valid_document())
    df = read_karpathy_json(path, image_dir=tmp_path / "RSICD_images")
    assert df["path"].to_list() == [os.path.abspath(tmp_path / "RSICD_images" / "airport_1.jpg"),
                                    os.path.abspath(tmp_path / "RSICD_images" / "port_1.jpg")]
    assert df["label"].to_list() == ["airport", "port"]
    assert df["split"].to_list() == ["train", "test"]


def _mutate(change):
    document = valid_document()
    change(document)
    return document


@pytest.mark.parametrize("document, fragment", [
    (["not", "an", "object"], "no top-level 'images' list"),
    ({"annotations": []}, "no top-level 'images' list"),
    ({"images": {"a": 1}}, "no top-level 'images' list"),
    (_mutate(lambda d: d["images"][1].pop("sentences")), "images[1] ('port_1.jpg') has no 'sentences'"),
    (_mutate(lambda d: d["images"][1].pop("filename")), "images[1] has no 'filename'"),
    (_mutate(lambda d: d["images"][0].pop("split")), "images[0] ('airport_1.jpg') has no 'split'"),
    (_mutate(lambda d: d["images"][1].update(split="restval")), "unknown split 'restval'"),
    (_mutate(lambda d: d["images"][1].update(sentences=[])), "images[1] ('port_1.jpg') has no sentences"),
    (_mutate(lambda d: d["images"][1]["sentences"][0].pop("raw")), "sentences[0] has no 'raw'"),
    (_mutate(lambda d: d["images"][1]["sentences"][0].update(raw="  ")), "empty 'raw'"),
    (_mutate(lambda d: d["images"][1].update(filename="airport_1.jpg")),
     "repeats the filename of images[0]"),
    (_mutate(lambda d: d["images"].append(7)), "images[2] is a int"),
])
def test_malformed_files_raise_one_line_naming_the_file(tmp_path, document, fragment):
    path = write_raw(tmp_path, document)
    with pytest.raises(DataError) as info:
        read_karpathy_json(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert fragment in message
    assert "\n" not in message


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere" / "dataset_rsicd.json"
    with pytest.raises(DataError) as info:
        read_karpathy_json(path)
    assert str(info.value) == f"{path}: file not found"


def test_invalid_json_reports_line_and_column(tmp_path):
    text = '{\n  "images": [\n    {"filename": "a_1.jpg",, "split": "train"}\n  ]\n}\n'
    # The second comma on line 3 is character 28 of that line.
    path = write_raw(tmp_path, text)
    with pytest.raises(DataError) as info:
        read_karpathy_json(path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid JSON at line 3, column 28")
    assert "\n" not in message


def test_not_utf8(tmp_path):
    path = tmp_path / "d.json"
    path.write_bytes('{"images": ["\u00e9"]}'.encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_karpathy_json(path)
