"""Suites: loading, expansion into runs x seeds, merging and overrides, resolution errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from rdbench.cli import main
from rdbench.errors import ConfigError
from rdbench.suite import expand, load_suite, merge, parse_set
from rdbench.resolution.run import plan_suite

ROOT = Path(__file__).resolve().parent.parent
SUITE = """\
suite: demo
defaults:
  backbone: backbone/tiny-rs
  dataset: {name: dataset/synthetic-rs, train: 8}
  adapter: adapter/none
  optimizer: {name: optimizer/adamw, lr: 1.0e-3}
  seeds: [0, 1]
runs:
  zero:
  narrow:
    adapter: {name: bottleneck, bottleneck: 8}
  wide:
    adapter: {name: adapter/bottleneck, bottleneck: 64}
    optimizer: {lr: 1.0e-4}
    seeds: [3]
"""


def write(tmp_path: Path, text: str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_expansion_order_seeds_and_merge(tmp_path):
    plans = expand(load_suite(write(tmp_path, SUITE)))
    assert [(p.run, p.seed) for p in plans] == [("zero", 0), ("zero", 1), ("narrow", 0), ("narrow", 1), ("wide", 3)]
    wide = plans[-1].config
    assert wide["optimizer"] == {"name": "optimizer/adamw", "lr": 1.0e-4}  # args merged, name kept
    assert wide["dataset"] == {"name": "dataset/synthetic-rs", "train": 8}


def test_only_seeds_and_set_overrides(tmp_path):
    suite = load_suite(write(tmp_path, SUITE))
    overrides = parse_set(["adapter.bottleneck=16", "runs.zero.trainer.max_epochs=2", "trainer.max_steps=3"])
    plans = expand(suite, only=["narrow", "zero"], seeds=[7], overrides=overrides)
    assert [(p.run, p.seed) for p in plans] == [("zero", 7), ("narrow", 7)]
    assert plans[0].config["trainer"] == {"max_epochs": 2, "max_steps": 3}
    assert plans[1].config["adapter"] == {"name": "bottleneck", "bottleneck": 16}
    # a bare key string patched by arguments keeps the component
    assert plans[0].config["adapter"] == {"name": "adapter/none", "bottleneck": 16}


def test_naming_another_component_replaces_it():
    assert merge({"name": "adapter/bottleneck", "bottleneck": 8}, {"name": "adapter/full"}) == {"name": "adapter/full"}
    assert merge("adapter/bottleneck", {"name": "bottleneck", "scale": 1.0}) == {"name": "bottleneck", "scale": 1.0}
    assert merge({"class_path": "a.B", "init_args": {"x": 1}}, {"init_args": {"y": 2}}) == {
        "class_path": "a.B", "init_args": {"x": 1, "y": 2}}


def test_resolution_checks_every_argument(tmp_path):
    runs = plan_suite(write(tmp_path, SUITE))
    narrow = runs[2].components["adapter"]
    assert narrow.key == "adapter/bottleneck" and narrow.args["bottleneck"] == 8
    assert narrow.record()["init_args"]["scale"] == 0.1  # defaults are recorded too


def test_class_path_form(tmp_path):
    text = SUITE.replace("adapter: adapter/none", "adapter: {class_path: rdbench.adapters.basic.BottleneckAdapter, init_args: {bottleneck: 4}}")
    runs = plan_suite(write(tmp_path, text), only=["zero"])
    assert runs[0].components["adapter"].key == "adapter/bottleneck"
    assert runs[0].components["adapter"].args == {"bottleneck": 4}


@pytest.mark.parametrize(
    "text, message",
    [
        ("suite: demo\nruns: {a: {adapter: none\n", r"malformed YAML at line \d+, column \d+"),
        ("suite: demo\nrnus: {a: {}}\n", r"unknown suite key\(s\) rnus"),
        (SUITE.replace("adapter: adapter/none", "adapter: adapter/botleneck"), r"did you mean adapter/bottleneck"),
        (SUITE.replace("bottleneck: 8", "bottleneck: eight"), r"adapter/bottleneck: argument bottleneck: Not of type PositiveInt"),
        (SUITE.replace("bottleneck: 8", "botleneck: 8"), r"unknown argument 'botleneck'; did you mean 'bottleneck'"),
        (SUITE.replace("seeds: [3]", "seeds: [x]"), r"`seeds` must be a list of integers"),
        (SUITE.replace("    seeds: [3]", "    adaptr: adapter/none"), r"unknown slot 'adaptr'; did you mean 'adapter'"),
        (SUITE + "    trainer: {max_epoch: 2}\n", r"unknown Lightning Trainer argument 'max_epoch'; did you mean 'max_epochs'"),
        (SUITE + "    selection: {monitor: test/mR}\n", r"model selection must use the validation split"),
        (SUITE + "    loss: adapter/full\n", r"adapter/full is a adapter component; this slot takes a loss"),
    ],
)
def test_bad_suites_give_one_line(tmp_path, capsys, text, message):
    path = write(tmp_path, text)
    code = main(["validate", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith(f"rdbench: {path}"), err
    import re

    assert re.search(message, err), err


def test_missing_suite_file(capsys, tmp_path):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err.strip() == f"rdbench: {tmp_path / 'nope.yaml'}: no such file"


def test_only_unknown_run(capsys, tmp_path):
    assert main(["validate", str(write(tmp_path, SUITE)), "--only", "zero,nope"]) == 2
    assert "--only names unknown run(s) nope; runs are zero, narrow, wide" in capsys.readouterr().err


@pytest.mark.parametrize("suite", sorted((ROOT / "suites").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_suite_validates(suite):
    assert plan_suite(suite), suite
