"""A suite on a format-B folder through the real command, with the decoded-image cache, and the
paper suites' one-line failures when the data or the checkpoint is not there."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from datatrees import content, write_b

from rdbench.cli import main
from rdbench.data.loading import cache as cache_module

ROOT = Path(__file__).resolve().parent.parent.parent

SUITE = """\
# A format-B folder (RSICD's precomp layout) on the tiny backbone, with and without augmentation.
suite: real-e2e
defaults:
  backbone: {{name: backbone/tiny-rs, steps: 3, source_images: 32, batch_size: 16}}
  dataset: {{name: dataset/rsicd, root: {root}}}
  optimizer: {{name: optimizer/adamw, lr: 1.0e-3}}
  trainer: {{max_epochs: 1, enable_progress_bar: false}}
  data: {{batch_size: 8, eval_batch_size: 16}}
runs:
  bottleneck: {{adapter: {{name: adapter/bottleneck, bottleneck: 4}}}}
  augmented:
    adapter: {{name: adapter/bottleneck, bottleneck: 4}}
    train_transform: transform/rs-augment
"""


def record(results: Path, suite: str, run: str, seed: int = 0) -> dict:
    return json.loads((results / suite / run / f"seed{seed}" / "record.json").read_text())


def test_suite_on_a_precomp_folder_trains_with_the_cache(tmp_path, monkeypatch, capsys):
    write_b(tmp_path / "rsicd", content(train_per_class=3))
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE.format(root=tmp_path / "rsicd"))
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results", str(results)]) == 0
    # the 11-image test split is not RSICD's published one: said once for the suite, not per run
    out = capsys.readouterr().out
    assert out.count("not comparable with published numbers") == 1
    assert "test split of dataset/rsicd has 11 images and 55 captions; the published RSICD test split has 1,093" in out
    for run in ("bottleneck", "augmented"):
        rec = record(results, "real-e2e", run)
        assert rec["status"] == "success", rec["error"]
        dataset = rec["provenance"]["dataset"]
        assert dataset["format"] == "B" and dataset["split_scheme"] == "carve"
        assert dataset["splits"]["val"] == {"images": 3, "captions": 15}  # 20 % of 17 train images
        assert rec["eval"]["test"] == {**rec["eval"]["test"], "n_images": 11, "n_captions": 55}
    # `rdbench data verify` prints the fingerprint the records carry, for the folder with the
    # dataset's defaults as for the suite file itself.
    fingerprint = rec["provenance"]["dataset"]["fingerprint"]
    for command in (["data", "verify", "rsicd", "--root", str(tmp_path / "rsicd")], ["data", "verify", str(suite)]):
        capsys.readouterr()
        assert main(command) == 0
        assert f"fingerprint: {fingerprint} " in capsys.readouterr().out
    assert rec["components"]["train_transform"]["key"] == "transform/rs-augment"
    assert rec["components"]["eval_transform"]["key"] == "transform/resize"  # the default, written out
    cached = sorted(p.name for p in (Path(os.environ["RDBENCH_CACHE"]) / "images").glob("*-64px-*.npy"))
    assert {name.split("-")[0] for name in cached} >= {"train", "val", "test"}

    # Another seed reads the same cache: decoding again would fail the run.
    def no_decoding(*args):
        raise AssertionError("the cache was not reused")

    monkeypatch.setattr(cache_module, "decode_into", no_decoding)
    assert main(["run", str(suite), "--results", str(results), "--only", "bottleneck", "--seeds", "1"]) == 0
    assert record(results, "real-e2e", "bottleneck", seed=1)["status"] == "success"


def test_missing_dataset_root_stops_the_run_before_it_starts(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("RDBENCH_RSICD_ROOT", raising=False)
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE.format(root="null"))
    assert main(["validate", str(suite)]) == 0  # nothing is built: valid without the data, with a warning
    assert "dataset.root is null but $RDBENCH_RSICD_ROOT is not set" in capsys.readouterr().err
    assert main(["run", str(suite), "--results", str(tmp_path / "results"), "--only", "bottleneck"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rdbench: no run can start, an input is missing: dataset.root is null")
    assert not list((tmp_path / "results").rglob("record.json"))


def test_a_root_without_a_dataset_fails_the_run_with_the_expected_layout(tmp_path):
    suite = tmp_path / "suite.yaml"
    empty = tmp_path / "empty"
    empty.mkdir()
    suite.write_text(SUITE.format(root=empty))
    assert main(["run", str(suite), "--results", str(tmp_path / "results"), "--only", "bottleneck"]) == 1
    error = record(tmp_path / "results", "real-e2e", "bottleneck")["error"]
    assert error.startswith("DataError:") and "train_caps.txt" in error and "rsicd_val.json" in error


@pytest.mark.parametrize("name", ["paper-rsicd", "paper-rsitmd"])
def test_paper_suites_validate_without_data_and_stop_in_one_line(name, tmp_path, monkeypatch, capsys):
    for var in ("RDBENCH_RSICD_ROOT", "RDBENCH_RSITMD_ROOT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # empty: the checkpoint was never fetched
    suite = ROOT / "suites" / f"{name}.yaml"
    assert main(["validate", str(suite)]) == 0
    assert "Zilun/GeoRSCLIP/ckpt/RS5M_ViT-B-32.pt but it is not in the Hugging Face cache" in capsys.readouterr().err
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results", str(results), "--only", "lora", "--seeds", "0"]) == 2
    assert "hf download Zilun/GeoRSCLIP ckpt/RS5M_ViT-B-32.pt" in capsys.readouterr().err
    absent = tmp_path / "RS5M_ViT-B-32.pt"  # a copy of one's own, named by path instead: it must exist
    assert main(["run", str(suite), "--results", str(results), "--only", "lora", "--seeds", "0",
                 "--set", f"backbone.pretrained={absent}"]) == 2
    assert "RS5M_ViT-B-32.pt does not exist" in capsys.readouterr().err and not list(results.rglob("record.json"))
