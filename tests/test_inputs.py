"""rdbench.resolution.inputs: the inputs a resolved run needs that are missing on this machine,
seen from its arguments alone, with real files and environment variables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hub_cache import place_in_hub_cache

from rdbench.resolution.inputs import missing_inputs
from rdbench.resolution.run import plan_suite

ROOT = Path(__file__).resolve().parent.parent
VARIABLES = ("RDBENCH_CHECKPOINT", "RDBENCH_RSICD_ROOT", "RDBENCH_RSITMD_ROOT")


@pytest.fixture(autouse=True)
def _no_variables(monkeypatch):
    for var in VARIABLES:
        monkeypatch.delenv(var, raising=False)


def runs(tmp_path, defaults: str, runs_yaml: str = "  only: {}\n") -> dict[str, object]:
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"suite: inputs\ndefaults:\n{defaults}runs:\n{runs_yaml}")
    return {run.plan.run: run for run in plan_suite(suite)}


HUB_LINE = ("paper-rsitmd/{run}: backbone.hub_file is Zilun/GeoRSCLIP/ckpt/RS5M_ViT-B-32.pt but it is not in the "
            "Hugging Face cache and HF_HUB_OFFLINE is set (fetch it with `hf download Zilun/GeoRSCLIP "
            "ckpt/RS5M_ViT-B-32.pt`, or pass --set backbone.pretrained=PATH)")


def test_paper_suite_offline_without_its_checkpoint_or_data_names_both(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    by_run = {run.plan.run: run for run in plan_suite(ROOT / "suites" / "paper-rsitmd.yaml", seeds=[0])}
    assert missing_inputs(by_run["zero-shot"]) == [
        HUB_LINE.format(run="zero-shot"),
        "paper-rsitmd/zero-shot: dataset.root is null but $RDBENCH_RSITMD_ROOT is not set "
        "(dataset/rsitmd reads its root from it; or set root)",
    ]
    monkeypatch.setenv("RDBENCH_RSITMD_ROOT", str(tmp_path / "no-rsitmd"))
    assert missing_inputs(by_run["lora"])[1] == (
        f"paper-rsitmd/lora: dataset.root is null, so $RDBENCH_RSITMD_ROOT = {tmp_path / 'no-rsitmd'} is read, "
        f"but {tmp_path / 'no-rsitmd'} does not exist")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # online: the run fetches the checkpoint, nothing to say
    assert len(missing_inputs(by_run["lora"])) == 1
    # Everything there: the checkpoint in the hub cache, the data folder; nothing missing offline.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    place_in_hub_cache(tmp_path / "hub", "Zilun/GeoRSCLIP", "ckpt/RS5M_ViT-B-32.pt")
    (tmp_path / "rsitmd").mkdir()
    monkeypatch.setenv("RDBENCH_RSITMD_ROOT", str(tmp_path / "rsitmd"))
    assert all(missing_inputs(run) == [] for run in by_run.values())


def test_an_env_checkpoint_unset_empty_or_absent_is_named(monkeypatch, tmp_path):
    by_run = runs(tmp_path, "  backbone: {name: backbone/open-clip, architecture: rdbench-test, pretrained: 'env:RDBENCH_CHECKPOINT'}\n"
                            f"  dataset: {{name: dataset/synthetic-rs, root: {tmp_path / 'data'}}}\n")
    assert missing_inputs(by_run["only"]) == [
        "inputs/only: backbone.pretrained is env:RDBENCH_CHECKPOINT but $RDBENCH_CHECKPOINT is not set"]
    monkeypatch.setenv("RDBENCH_CHECKPOINT", "")
    assert missing_inputs(by_run["only"]) == [
        "inputs/only: backbone.pretrained is env:RDBENCH_CHECKPOINT but $RDBENCH_CHECKPOINT is empty"]
    monkeypatch.setenv("RDBENCH_CHECKPOINT", str(tmp_path / "RS5M_ViT-B-32.pt"))
    assert missing_inputs(by_run["only"]) == [
        f"inputs/only: backbone.pretrained is env:RDBENCH_CHECKPOINT ($RDBENCH_CHECKPOINT = "
        f"{tmp_path / 'RS5M_ViT-B-32.pt'}) but {tmp_path / 'RS5M_ViT-B-32.pt'} does not exist"]
    (tmp_path / "RS5M_ViT-B-32.pt").write_bytes(b"weights")
    assert missing_inputs(by_run["only"]) == []


def test_environment_can_be_passed_instead_of_read(tmp_path):
    run = {r.plan.run: r for r in plan_suite(ROOT / "suites" / "paper-rsicd.yaml", seeds=[0])}["rdb"]
    place_in_hub_cache(tmp_path / "hub", "Zilun/GeoRSCLIP", "ckpt/RS5M_ViT-B-32.pt")
    (tmp_path / "rsicd").mkdir()
    assert missing_inputs(run, {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"),
                                "RDBENCH_RSICD_ROOT": str(tmp_path / "rsicd")}) == []
    assert len(missing_inputs(run, {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty")})) == 2


def test_plain_paths_that_do_not_exist(tmp_path):
    (tmp_path / "rsicd").mkdir()
    (tmp_path / "a-file.txt").write_text("x")
    by_run = runs(tmp_path, (
        "  backbone: {name: backbone/open-clip, architecture: rdbench-test, pretrained: weights/ckpt.bin}\n"
        f"  dataset: {{name: dataset/rsicd, root: {tmp_path / 'rsicd'}, image_dir: {tmp_path / 'a-file.txt'}, "
        f"exclude: {tmp_path / 'overlap.tsv'}}}\n"
    ), "  only: {}\n  tagged: {backbone: {pretrained: openai}}\n  checkpoint: {backbone: {pretrained: model.safetensors}}\n")
    assert missing_inputs(by_run["only"]) == [
        f"inputs/only: backbone.pretrained is weights/ckpt.bin but {Path('weights/ckpt.bin')} does not exist",
        f"inputs/only: dataset.image_dir is {tmp_path / 'a-file.txt'} but {tmp_path / 'a-file.txt'} is a file, not a folder",
        f"inputs/only: dataset.exclude is {tmp_path / 'overlap.tsv'} but {tmp_path / 'overlap.tsv'} does not exist",
    ]
    # An open_clip tag is not a path; a checkpoint suffix makes one without a '/'.
    assert [line.split(": ", 1)[1].split(" is ")[0] for line in missing_inputs(by_run["tagged"])] == \
        ["dataset.image_dir", "dataset.exclude"]
    assert missing_inputs(by_run["checkpoint"])[0] == \
        "inputs/checkpoint: backbone.pretrained is model.safetensors but model.safetensors does not exist"
    # Once the files are there, nothing is missing; a root given explicitly needs no variable.
    (tmp_path / "images").mkdir()
    (tmp_path / "overlap.tsv").write_text("")
    fixed = runs(tmp_path, (
        "  backbone: {name: backbone/open-clip, architecture: rdbench-test, pretrained: openai}\n"
        f"  dataset: {{name: dataset/rsicd, root: {tmp_path / 'rsicd'}, image_dir: {tmp_path / 'images'}, "
        f"exclude: {tmp_path / 'overlap.tsv'}}}\n"
    ))
    assert missing_inputs(fixed["only"]) == []


def test_relative_paths_are_taken_from_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    by_run = runs(tmp_path, "  backbone: {name: backbone/tiny-rs}\n  dataset: {name: dataset/captions, root: data/mine}\n")
    assert missing_inputs(by_run["only"]) == ["inputs/only: dataset.root is data/mine but data/mine does not exist"]
    (tmp_path / "data" / "mine").mkdir(parents=True)
    assert missing_inputs(by_run["only"]) == []


def test_nested_datasets_and_any_env_argument(tmp_path, monkeypatch):
    by_run = runs(tmp_path, (
        "  backbone: {name: backbone/tiny-rs}\n"
        "  dataset: {name: dataset/transfer, train: {name: dataset/rsicd, exclude: 'env:RDBENCH_OVERLAP'}, test: dataset/rsitmd}\n"
    ))
    monkeypatch.delenv("RDBENCH_OVERLAP", raising=False)
    assert missing_inputs(by_run["only"]) == [
        "inputs/only: dataset.train.exclude is env:RDBENCH_OVERLAP but $RDBENCH_OVERLAP is not set",
        "inputs/only: dataset.train.root is null but $RDBENCH_RSICD_ROOT is not set "
        "(dataset/rsicd reads its root from it; or set root)",
        "inputs/only: dataset.test.root is null but $RDBENCH_RSITMD_ROOT is not set "
        "(dataset/rsitmd reads its root from it; or set root)",
    ]
    for name in ("rsicd", "rsitmd"):
        (tmp_path / name).mkdir()
    (tmp_path / "overlap.tsv").write_text("")
    monkeypatch.setenv("RDBENCH_RSICD_ROOT", str(tmp_path / "rsicd"))
    monkeypatch.setenv("RDBENCH_RSITMD_ROOT", str(tmp_path / "rsitmd"))
    monkeypatch.setenv("RDBENCH_OVERLAP", str(tmp_path / "overlap.tsv"))
    assert missing_inputs(by_run["only"]) == []


def test_what_a_run_writes_itself_is_not_an_input(tmp_path):
    # The synthetic dataset generates its files into `root`; the embedded suites need nothing.
    by_run = runs(tmp_path, f"  backbone: {{name: backbone/tiny-rs}}\n  dataset: {{name: dataset/synthetic-rs, root: {tmp_path / 'new'}}}\n")
    assert missing_inputs(by_run["only"]) == []
    for run in plan_suite(ROOT / "suites" / "quickstart.yaml"):
        assert missing_inputs(run) == []


def test_lines_are_not_repeated_within_a_run(tmp_path):
    by_run = runs(tmp_path, (
        "  backbone: {name: backbone/open-clip, architecture: rdbench-test, pretrained: 'env:RDBENCH_CHECKPOINT'}\n"
        "  dataset: {name: dataset/rsicd, root: null}\n"
    ))
    lines = missing_inputs(by_run["only"])
    assert len(lines) == len(set(lines)) == 2


def test_the_module_imports_nothing_heavy():
    code = ("import sys, rdbench; before = set(sys.modules); import rdbench.resolution.inputs; "
            "print(sorted(m for m in set(sys.modules) - before if not m.startswith('rdbench.resolution')))")
    new = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    for heavy in ("lightning", "open_clip", "polars", "torch", "rdbench.data", "rdbench.training", "jsonargparse"):
        assert f"'{heavy}" not in new, new
