"""What a comparison covers and says it covers: the test split beside published rows, the
backbone's architecture and checkpoint, several results folders, run selection and tuning trials."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl
import pytest
import torch
from compare_records import make_record, write

from rdbench.cli import main
from rdbench.errors import RdbenchError
from rdbench.results.compare import backbone_detail, compare, load_records
from rdbench.results.record import Record
from rdbench.results.references import canonical_test, geometry_note

SHA = "1a2b3c4d" + "0" * 56


def on_split(record, n_images, n_captions):
    record["eval"] = {"test": {"n_images": n_images, "n_captions": n_captions, "ties_i2t": 0, "ties_t2i": 0}}
    return record


def rsitmd_suite(root, n_images=8, n_captions=40, runs=("ours",)):
    """Runs on dataset/rsitmd whose records state a test split of the given size."""
    for i, run in enumerate(runs):
        for seed in (0, 1):
            write(root, on_split(make_record("s", run, i, seed, base=90.0 + seed, dataset="dataset/rsitmd"),
                                 n_images, n_captions))
    return root


# 1. Rows measured on another test split than the published one


def test_canonical_split_sizes_come_from_the_dataset_classes():
    from rdbench.data.datasets import RSICDDataset, RSITMDDataset

    assert canonical_test("rsitmd") == RSITMDDataset.canonical_test == (452, 2260)
    assert canonical_test("dataset/rsicd") == RSICDDataset.canonical_test == (1093, 5465)
    assert canonical_test("dataset/synthetic-rs") is None and canonical_test(None) is None


def test_geometry_note_names_both_splits():
    record = Record.from_json(on_split(make_record("s", "ours", 0, 0, base=1.0, dataset="dataset/rsitmd"), 8, 40))
    assert geometry_note(record) == (
        "test split of dataset/rsitmd has 8 images and 40 captions; the published RSITMD test split has "
        "452 and 2,260: rows of this run are not comparable with published numbers")
    assert geometry_note(Record.from_json(
        on_split(make_record("s", "ours", 0, 0, base=1.0, dataset="dataset/rsicd"), 1093, 5465))) is None
    assert geometry_note(Record.from_json(
        on_split(make_record("s", "ours", 0, 0, base=1.0, dataset="dataset/synthetic-rs"), 8, 40))) is None
    assert geometry_note(Record.from_json(make_record("s", "ours", 0, 0, base=1.0, dataset="dataset/rsitmd"))) is None


def test_references_refuse_rows_of_another_split(tmp_path, capsys):
    """The user's report: an 8-image split printed I2T R@10 = 100.00 right above PE-RSITR's rows."""
    results = rsitmd_suite(tmp_path, runs=("ours", "lora"))
    with pytest.raises(RdbenchError) as info:
        compare(results, references=True)
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert message.startswith("--references: not measured on the published test split")
    assert "s/ours, s/lora (dataset/rsitmd's test split here has 8 images and 40 captions, the published " \
           "RSITMD test split 452 and 2,260)" in message
    assert "--allow-other-splits" in message
    assert main(["compare", str(results), "--references"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rdbench: --references: not measured on the published test split") and len(err) == 1


def test_forced_references_mark_the_rows_and_say_why(tmp_path, capsys):
    results = rsitmd_suite(tmp_path)
    assert main(["compare", str(results), "--references", "pe-rsitr", "--allow-other-splits"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any(ln.startswith("ours⋄ ") for ln in lines)
    assert any(ln.startswith("ours [vsepp eval]⋄ ") for ln in lines)  # the row beside the published ones
    assert any(ln.startswith("Adapter†") for ln in lines)
    assert ("⋄ Not the published test split: dataset/rsitmd's test split here has 8 images and 40 captions, "
            "the published RSITMD test split 452 and 2,260 (ours); not comparable with published numbers.") in lines
    latex = compare(results, fmt="latex", references=["pe-rsitr"], allow_other_splits=True).text
    assert r"ours\textsuperscript{$\diamond$}" in latex
    frame = pl.read_csv(io.StringIO(compare(results, fmt="csv").text))
    assert frame["other_split"].to_list() == [True]
    assert frame["test_images"].to_list() == [8] and frame["test_captions"].to_list() == [40]


def test_other_split_is_marked_without_references_too(tmp_path):
    text = compare(rsitmd_suite(tmp_path)).text
    assert any(ln.startswith("ours⋄ ") for ln in text.splitlines())
    assert "⋄ Not the published test split" in text


def test_published_split_and_unknown_split_are_not_marked(tmp_path):
    rsitmd_suite(tmp_path / "a", 452, 2260)
    result = compare(tmp_path / "a", references=["pe-rsitr"])
    assert "⋄" not in result.text and "Adapter†" in result.text
    for seed in (0, 1):  # no eval counts (older records, early failures): nothing to judge
        write(tmp_path / "b", make_record("s", "ours", 0, seed, base=1.0, dataset="dataset/rsitmd"))
    assert "⋄" not in compare(tmp_path / "b", references=True).text


# 2. What was measured: architecture, checkpoint, checksum


def with_backbone(record, **provenance):
    record["provenance"]["backbone"] = {"key": "backbone/open-clip", **provenance}
    record["components"]["backbone"] = {"key": "backbone/open-clip"}
    return record


def test_notes_name_architecture_checkpoint_and_checksum(tmp_path):
    for seed in (0, 1):
        write(tmp_path, with_backbone(make_record("s", "ours", 0, seed, base=1.0), architecture="ViT-B-32",
                                      pretrained="env:RDBENCH_CHECKPOINT",
                                      checkpoint="/data/weights/RS5M_ViT-B-32.pt", checksum=SHA))
    text = compare(tmp_path).text
    assert ("Measured by rdbench on dataset/synthetic-rs (fingerprint fp-aaaa), backbone/open-clip "
            "(ViT-B-32, RS5M_ViT-B-32.pt, sha256 1a2b3c4d).") in text


def test_backbone_detail_of_older_and_tagged_records():
    assert backbone_detail({"architecture": "ViT-B-32", "pretrained": "env:RDBENCH_CHECKPOINT",
                            "checksum": SHA}) == "ViT-B-32, env:RDBENCH_CHECKPOINT, sha256 1a2b3c4d"
    assert backbone_detail({"architecture": "ViT-B-32", "pretrained": "openai", "checkpoint": "openai",
                            "checksum": "open_clip:ViT-B-32:openai"}) == "ViT-B-32, openai"
    assert backbone_detail({"architecture": "ViT-B-32", "pretrained": None, "checksum": None}) == \
        "ViT-B-32, random weights"
    assert backbone_detail({"key": "backbone/tiny-rs", "checksum": "c"}) is None


def test_open_clip_provenance_names_the_resolved_checkpoint(tmp_path, monkeypatch):
    from rdbench.backbones.base import OpenCLIPBackbone, file_sha256
    from rdbench.testing import TEST_ARCHITECTURE, tiny_clip

    path = tmp_path / "RS5M_test.pt"
    torch.save(tiny_clip().state_dict(), path)
    monkeypatch.setenv("RDBENCH_CHECKPOINT", str(path))
    backbone = OpenCLIPBackbone(TEST_ARCHITECTURE, pretrained="env:RDBENCH_CHECKPOINT")
    backbone.build_model()
    assert backbone.provenance() == {"architecture": TEST_ARCHITECTURE, "pretrained": "env:RDBENCH_CHECKPOINT",
                                     "checkpoint": str(path.resolve()), "checksum": file_sha256(path)}
    assert backbone_detail(backbone.provenance()) == \
        f"{TEST_ARCHITECTURE}, RS5M_test.pt, sha256 {file_sha256(path)[:8]}"
    random = OpenCLIPBackbone(TEST_ARCHITECTURE)
    random.build_model()
    assert random.provenance()["checkpoint"] is None


# 3. Several results folders


def test_several_folders_make_one_table(tmp_path, capsys):
    a, b = tmp_path / "machine-a", tmp_path / "machine-b"
    write(a, make_record("s", "ours", 0, 0, base=10.0))
    write(b, make_record("s", "ours", 0, 1, base=12.0))
    newer = make_record("s", "ours", 0, 1, base=50.0)
    newer["finished_at"] = "2025-02-01T00:00:00+00:00"
    write(a, newer)  # seed 1 on both machines: the newest copy is kept
    df, warnings = load_records([a, b])
    assert sorted(df["seed"].to_list()) == [0, 1]
    assert df.filter(pl.col("seed") == 1)["test/i2t_R@1"].to_list() == [51.0]
    assert len(warnings) == 1 and "duplicate of" in warnings[0] and str(b) in warnings[0]
    assert main(["compare", str(a), str(b)]) == 0  # was: unrecognized arguments
    out, err = capsys.readouterr()
    assert [ln for ln in out.splitlines() if ln.startswith("ours ")][0].split()[1] == "2"
    assert "duplicate of" in err
    assert load_records([a, a])[1] == []  # the same folder twice reads each file once
    assert main(["compare", str(a), str(tmp_path / "absent")]) == 2
    assert capsys.readouterr().err.strip() == f"rdbench: {tmp_path / 'absent'}: results folder does not exist"


# 4. Run selection and tuning trials


def with_trials(root):
    for run, index in (("lora", 0), ("lora-r8", 1), ("full", 2)):
        write(root, make_record("s", run, index, 0, base=10.0 + index))
    for k in range(2):
        trial = make_record("s", f"tune-s-lora/trial{k}", 0, 0, base=30.0 + k)
        trial["purpose"] = "trial"
        write(root, trial)
    # written before records stated their purpose: known by the name rdbench tune gives
    write(root, make_record("s", "tune-s-lora/trial2", 0, 0, base=33.0))
    return root


def shown(text):
    return [ln.split()[0] for ln in text.splitlines()[4:] if ln and not ln[0].isupper()]


def test_trials_are_left_out_unless_asked(tmp_path, capsys):
    results = with_trials(tmp_path)
    result = compare(results)
    assert shown(result.text) == ["lora", "lora-r8", "full"]
    assert "3 tuning trial record(s) left out; --trials shows them" in result.warnings
    assert shown(compare(results, trials=True).text) == ["lora", "tune-s-lora/trial0", "tune-s-lora/trial1",
                                                         "tune-s-lora/trial2", "lora-r8", "full"]
    assert main(["compare", str(results), "--trials", "--runs", "tune-*"]) == 0
    out, err = capsys.readouterr()
    assert shown(out) == ["tune-s-lora/trial0", "tune-s-lora/trial1", "tune-s-lora/trial2"]
    assert "left out" not in err
    assert main(["compare", str(results)]) == 0
    assert "warning: 3 tuning trial record(s) left out; --trials shows them" in capsys.readouterr().err


def test_runs_and_exclude_patterns(tmp_path, capsys):
    results = with_trials(tmp_path)
    assert shown(compare(results, runs=["lora*"]).text) == ["lora", "lora-r8"]
    assert shown(compare(results, runs=["lora*", "full"], exclude=["*-r8"]).text) == ["lora", "full"]
    assert main(["compare", str(results), "--runs", "lora*,full", "--exclude", "*-r8"]) == 0
    assert shown(capsys.readouterr().out) == ["lora", "full"]
    with pytest.raises(RdbenchError, match=r"^--runs: no run matches 'lroa' \(runs: lora, "):
        compare(results, runs=["lroa"])
    with pytest.raises(RdbenchError, match="no record left to compare.*tuning trials are left out unless --trials"):
        compare(results, runs=["tune-*"])
    assert main(["compare", str(results), "--exclude", "*"]) == 2
    assert capsys.readouterr().err.startswith("rdbench: no record left to compare")


def test_documented():
    root = Path(__file__).resolve().parents[2]
    doc = " ".join((root / "docs" / "compare.md").read_text(encoding="utf-8").split())
    for flag in ("--runs", "--exclude", "--trials", "--allow-other-splits", "⋄", "geometry_note"):
        assert flag in doc, flag
    for name in ("rsicd", "rsitmd"):  # the sizes the doc quotes are the ones compare uses
        images, captions = canonical_test(name)
        assert f"{name.upper()} {images:,} images and {captions:,} captions" in doc, name
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert "rdbench compare [DIR ...]" in readme and "--allow-other-splits" in readme
