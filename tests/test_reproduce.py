"""Complete resolution and ``rdbench reproduce``: a written config.yaml alone rebuilds the run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rdbench.cli import main
from rdbench.resolution.run import plan_suite, resolve_config
from tiny import TINY_DEFAULTS

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "suites").glob("*.yaml"))

SUITE = """\
suite: repro
defaults:
""" + TINY_DEFAULTS + """  loss: loss/infonce
runs:
  bottleneck: {{adapter: {{name: adapter/bottleneck, bottleneck: 4}}}}
"""


@pytest.mark.parametrize("suite", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_a_written_config_resolves_to_the_same_run(suite):
    """For every run of every shipped suite: config -> resolve -> config is a fixed point."""
    for run in plan_suite(suite):
        written = yaml.safe_load(yaml.safe_dump(run.config(), sort_keys=False))
        again = resolve_config(written, "config.yaml").config()
        assert yaml.safe_load(yaml.safe_dump(again, sort_keys=False)) == written, run.plan.label


def test_the_config_names_everything_that_runs(tmp_path):
    (tmp_path / "s.yaml").write_text(SUITE.format(root=tmp_path / "data"))
    config = plan_suite(tmp_path / "s.yaml")[0].config()
    loss = config["components"]["loss"]
    assert loss["key"] == "loss/composite"  # a single term runs as a one-term composite
    assert loss["init_args"]["terms"]["infonce"]["key"] == "loss/infonce"
    assert loss["init_args"]["weighting"]["key"] == "weighting/fixed"
    assert config["components"]["eval_transform"]["key"] == "transform/resize"
    assert list(config["components"]["optimizer"]["init_args"]["betas"]) == [0.9, 0.98]  # defaults written out


def test_builder_defaults_are_recorded_by_key():
    config = plan_suite(ROOT / "suites" / "ablation.yaml", only=["rdb"])[0].config()
    adapter = config["components"]["adapter"]["init_args"]
    assert adapter["vision_mixer"]["key"] == "attention/diff"
    assert adapter["text_mixer"]["key"] == "attention/hierarchical"
    assert adapter["interaction"]["key"] == "interaction/shared-mlp"


def test_reproduce_matches_and_names_what_differs(tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE.format(root=tmp_path / "data"))
    assert main(["run", str(suite), "--results", str(tmp_path / "results")]) == 0
    run = tmp_path / "results" / "repro" / "bottleneck" / "seed0"
    capsys.readouterr()
    assert main(["reproduce", str(run), "--results", str(tmp_path / "scratch")]) == 0
    out = capsys.readouterr().out
    assert "test/mR" in out and "identical within tolerance 0" in out
    assert all(line.split()[-1] == "+0.0000" for line in out.splitlines() if line.startswith(("val/", "test/")))

    config = yaml.safe_load((run / "config.yaml").read_text())
    config["components"]["optimizer"]["init_args"]["lr"] = 0.5  # another run altogether
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert main(["reproduce", str(run), "--results", str(tmp_path / "scratch2")]) == 1
    captured = capsys.readouterr()
    assert "DIFFERENT beyond tolerance 0" in captured.out
    assert "metric(s) differ by more than 0" in captured.err and "test/mR" in captured.err


def test_reproduce_refuses_a_folder_without_a_run(tmp_path, capsys):
    assert main(["reproduce", str(tmp_path)]) == 2
    assert "config.yaml: no such file" in capsys.readouterr().err
