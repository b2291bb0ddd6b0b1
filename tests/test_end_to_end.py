"""A whole suite through the real command: tiny backbone, real Lightning Trainer, real records."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from rdbench.cli import main
from rdbench.evaluation import METRIC_NAMES
from tiny import TINY_DEFAULTS

SUITE = """\
# A few steps of each foundation adapter on the tiny components.
suite: e2e
defaults:
""" + TINY_DEFAULTS + """runs:
  zero-shot: {{adapter: adapter/none}}
  full: {{adapter: adapter/full}}
  bottleneck: {{adapter: {{name: adapter/bottleneck, bottleneck: 4}}}}
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    suite = tmp / "e2e.yaml"
    suite.write_text(SUITE.format(root=tmp / "data"))
    results = tmp / "results"
    cwd = os.getcwd()
    os.chdir(tmp)  # a relative results folder, as a user types it
    try:
        code = main(["run", str(suite), "--results", "results"])
    finally:
        os.chdir(cwd)
    return suite, results, code


def records(results: Path) -> dict[str, dict]:
    return {p.parent.parent.name: json.loads(p.read_text()) for p in sorted(results.glob("e2e/*/seed0/record.json"))}


def test_every_run_succeeds_with_a_complete_record(finished):
    _, results, code = finished
    assert code == 0
    recs = records(results)
    assert set(recs) == {"zero-shot", "full", "bottleneck"}
    for name, rec in recs.items():
        assert rec["schema_version"] == 2 and rec["status"] == "success" and rec["error"] is None, name
        for split in ("val", "test"):
            for metric in METRIC_NAMES:
                assert 0.0 <= rec["metrics"][f"{split}/{metric}"] <= 100.0
        # the test recalls under each public evaluation code, never below the strict ones
        for rule in ("vsepp", "pir", "clip_benchmark"):
            for metric in METRIC_NAMES:
                assert rec["metrics"][f"test@{rule}/{metric}"] >= rec["metrics"][f"test/{metric}"] - 1e-9, (name, rule)
        assert rec["eval"]["test"]["n_images"] == 6 and rec["eval"]["test"]["n_captions"] == 30
        assert set(rec["components"]) >= {"backbone", "dataset", "adapter", "loss", "optimizer"}
        assert rec["components"]["adapter"]["source"] == "builtin"
        prov = rec["provenance"]
        assert prov["dataset"]["fingerprint"] and len(prov["backbone"]["checksum"]) == 64
        assert prov["packages"]["torch"] and prov["code_version"]
        assert {"trainable_params", "total_params", "train_time_s", "peak_mem_bytes"} <= set(rec["cost"])
        assert (results / "e2e" / name / "seed0" / "config.yaml").is_file()


def test_parameter_accounting(finished):
    recs = records(finished[1])
    total = recs["zero-shot"]["cost"]["total_params"]
    assert recs["zero-shot"]["cost"]["trainable_params"] == 0
    assert all(r["cost"]["backbone_params"] == total for r in recs.values())  # counted before any adapter
    assert recs["full"]["cost"]["trainable_params"] == total
    # 4 blocks x 2 towers of width 128: down (128*4 + 4) + up (4*128 + 128)
    assert recs["bottleneck"]["cost"]["trainable_params"] == 8 * (128 * 4 + 4 + 4 * 128 + 128)


def test_checkpoint_holds_only_what_trains(finished):
    ckpt = finished[1] / "e2e" / "bottleneck" / "seed0" / "checkpoints" / "best.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert state and all(k.startswith("adapter.") for k in state)


def test_config_is_resolved_before_training(finished):
    config = yaml.safe_load((finished[1] / "e2e" / "bottleneck" / "seed0" / "config.yaml").read_text())
    adapter = config["components"]["adapter"]
    assert adapter["key"] == "adapter/bottleneck" and adapter["init_args"]["bottleneck"] == 4
    assert adapter["class_path"] == "rdbench.adapters.basic.BottleneckAdapter"


def test_rerun_skips_and_compare_prints_every_run(finished, capsys):
    suite, results, _ = finished
    before = {k: r["finished_at"] for k, r in records(results).items()}
    capsys.readouterr()
    assert main(["run", str(suite), "--results", str(results)]) == 0
    assert "3 skipped" in capsys.readouterr().out
    assert {k: r["finished_at"] for k, r in records(results).items()} == before
    assert main(["compare", str(results)]) == 0
    table = capsys.readouterr().out
    for run in ("zero-shot", "full", "bottleneck"):
        assert run in table


def test_every_record_carries_its_diagnostics(finished):
    recs = records(finished[1])
    for name, rec in recs.items():
        diag = rec["diagnostics"]
        for split in ("val", "test"):
            geometry = diag[split]
            assert 0.0 <= geometry["modality_gap"] <= 2.0 and 0.0 <= geometry["alignment"] <= 4.0, name
            assert geometry["uniformity"] <= 0.0, name
        assert set(diag["test"]["per_class"]) <= {"airport", "beach", "bridge", "farmland", "forest", "industrial",
                                                  "parking", "playground", "port", "residential", "river", "storage_tanks"}
        assert sum(c["n_images"] for c in diag["test"]["per_class"].values()) == 6
        assert "per_class" not in diag["val"]
    assert "train" not in recs["zero-shot"]["diagnostics"]  # nothing trained
    for name in ("full", "bottleneck"):
        train = recs[name]["diagnostics"]["train"]
        assert train["grad_ratio_text_image"] > 0 and train["grad_norm_image"] > 0 and train["grad_norm_text"] > 0
        assert train["update_image"] > 0 and train["update_text"] > 0
        assert train["steps_measured"] == int(recs[name]["train"]["steps"])
    # the curves the plots read (per step every log_every_n_steps = 10 steps; this run has 7, so
    # per epoch only) and the validation geometry per epoch
    header = (finished[1] / "e2e" / "bottleneck" / "seed0" / "logs" / "metrics.csv").read_text().splitlines()[0]
    assert "diag/grad_ratio_text_image_epoch" in header and "diag/val_modality_gap" in header


def test_compare_shows_diagnostics_and_plots_them(finished, tmp_path, capsys):
    results = finished[1]
    capsys.readouterr()
    assert main(["compare", str(results), "--columns", "mR,diagnostics", "--plot", str(tmp_path / "fig")]) == 0
    table = capsys.readouterr().out
    for header in ("grad text/image", "update image", "gap", "alignment", "uniformity"):
        assert header in table
    written = {p.name for p in (tmp_path / "fig").iterdir()}
    assert {"e2e-gradient-ratio.png", "e2e-gap-mR.png"} <= written


def test_final_validation_is_the_selected_epochs_and_equals_encoding_the_split_again(tmp_path):
    """The record's val metrics come from the validation loop's evaluation of the selected
    checkpoint (nothing encodes val a second time); encoding val again from that checkpoint, in a
    fresh model and Trainer, gives exactly the same numbers."""
    import lightning as L

    from rdbench.resolution.run import resolve_config
    from rdbench.training import execute as execute_module
    from rdbench.training.assemble import assemble
    from rdbench.training.evaluate import evaluate

    suite = tmp_path / "v.yaml"
    suite.write_text(("suite: v\ndefaults:\n" + TINY_DEFAULTS + "  seeds: [0]\nruns:\n"
                      "  b: {{adapter: {{name: adapter/bottleneck, bottleneck: 4}}, trainer: {{max_epochs: 3}}}}\n"
                      ).format(root=tmp_path / "data"))
    encoded: list[str] = []
    real = execute_module.evaluate

    def counting(trainer, module, data, split, **kw):
        encoded.append(split)
        return real(trainer, module, data, split, **kw)

    execute_module.evaluate = counting
    try:
        assert main(["run", str(suite), "--results", str(tmp_path / "r")]) == 0
    finally:
        execute_module.evaluate = real
    assert encoded == ["test"]
    folder = tmp_path / "r" / "v" / "b" / "seed0"
    record = json.loads((folder / "record.json").read_text())
    run = resolve_config(yaml.safe_load((folder / "config.yaml").read_text()), folder / "config.yaml")
    parts = assemble(run)
    state = torch.load(folder / record["selection"]["checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    parts.module.load_state_dict(state, strict=False)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    again = evaluate(trainer, parts.module, parts.data, "val")
    assert {f"val/{k}": v for k, v in again.metrics.items()} == {k: v for k, v in record["metrics"].items() if k.startswith("val/")}
    assert record["metrics"]["val/mR"] == pytest.approx(record["selection"]["best_score"])
