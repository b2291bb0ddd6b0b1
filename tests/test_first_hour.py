"""What a new user ran into in the first hour, reproduced: each test performs what they did."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from rdbench.cli import main
from rdbench.resolution.run import plan_suite
from rdbench.training.runner import RunTimes, config_changes
from tiny import TINY_DEFAULTS

SUITE = """\
suite: first
defaults:
""" + TINY_DEFAULTS + """runs:
  bottleneck: {{adapter: {{name: adapter/bottleneck, bottleneck: 4}}}}
  diff:
    adapter:
      name: adapter/cmaa
      bottleneck: 4
      vision_mixer: {{name: attention/diff, second_map: false}}
"""


def write_suite(tmp_path: Path) -> Path:
    path = tmp_path / "first.yaml"
    path.write_text(SUITE.format(root=tmp_path / "data"))
    return path


def test_booleans_keep_their_type(tmp_path):
    """``second_map: false`` and ``--set adapter.learnable_scale=true`` stay booleans in the config."""
    suite = write_suite(tmp_path)
    runs = {r.plan.run: r for r in plan_suite(suite, overrides=[(["adapter", "learnable_scale"], True)])}
    diff = yaml.safe_load(yaml.safe_dump(runs["diff"].config()))["components"]["adapter"]["init_args"]
    assert diff["vision_mixer"]["init_args"]["second_map"] is False
    assert diff["learnable_scale"] is True
    assert main(["validate", str(suite), "--set", "adapter.learnable_scale=true"]) == 0


def test_a_changed_config_is_reported_not_skipped(tmp_path, capsys, recwarn):
    suite = write_suite(tmp_path)
    results = tmp_path / "results"
    assert main(["run", str(suite), "--only", "bottleneck", "--results", str(results)]) == 0
    # what a user cannot act on stays out of the console (Lightning's srun notice, its pytree deprecation)
    assert not [w for w in recwarn if "LeafSpec" in str(w.message) or "srun" in str(w.message)]
    record = json.loads((results / "first/bottleneck/seed0/record.json").read_text())
    capsys.readouterr()
    # the user edits the learning rate and runs again
    code = main(["run", str(suite), "--only", "bottleneck", "--results", str(results),
                 "--set", "optimizer.lr=0.01"])
    captured = capsys.readouterr()
    assert code == 2
    assert "CHANGED since its record (components.optimizer.init_args.lr)" in captured.out
    assert "1 changed since their records (not rerun)" in captured.out
    assert "--overwrite reruns them" in captured.err
    # neither silently skipped nor silently overwritten: the record is the one it was
    assert json.loads((results / "first/bottleneck/seed0/record.json").read_text()) == record
    # an unchanged rerun is a plain skip
    assert main(["run", str(suite), "--only", "bottleneck", "--results", str(results)]) == 0
    assert "done already" in capsys.readouterr().out


def test_config_changes_name_nested_keys(tmp_path):
    suite = write_suite(tmp_path)
    run = plan_suite(suite, only=["bottleneck"])[0]
    folder = tmp_path / "run"
    folder.mkdir()
    config = yaml.safe_load(yaml.safe_dump(run.config()))
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    assert config_changes(folder, run) == []
    config["trainer"]["max_epochs"] = 7
    config["components"]["adapter"]["init_args"]["bottleneck"] = 9
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    assert config_changes(folder, run) == ["components.adapter.init_args.bottleneck", "trainer.max_epochs"]


def test_eta_comes_from_comparable_runs():
    times = RunTimes()
    assert times.estimate(["a", "b"]) == ""  # nothing timed yet: no number at all
    times.add("cheap", 10.0)
    times.add("costly", 100.0)
    # two seeds of the costly run left: 200 s, not the 2 x 55 s a plain mean would say
    assert times.estimate(["costly", "costly"]) == ", ETA 3m20s (from the same runs' other seeds)"
    assert "rough" in times.estimate(["new"])


def test_a_missing_checkpoint_is_found_before_any_run(tmp_path, capsys, monkeypatch):
    """Offline with an empty hub cache: validate passes with a warning naming the checkpoint;
    run stops before the first run, writing nothing, in one line naming the file to fetch and
    the setting that points to a copy."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    data = tmp_path / "rsitmd"
    data.mkdir()
    suite = Path(__file__).resolve().parent.parent / "suites" / "paper-rsitmd.yaml"
    assert main(["validate", str(suite), "--set", f"dataset.root={data}"]) == 0
    err = capsys.readouterr().err
    assert "warning: paper-rsitmd/zero-shot: backbone.hub_file is Zilun/GeoRSCLIP/ckpt/RS5M_ViT-B-32.pt but it is " \
           "not in the Hugging Face cache" in err
    results = tmp_path / "results"
    assert main(["run", str(suite), "--set", f"dataset.root={data}", "--results", str(results)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["rdbench: no run can start, an input is missing: backbone.hub_file is Zilun/GeoRSCLIP/ckpt/RS5M_ViT-B-32.pt "
                   "but it is not in the Hugging Face cache and HF_HUB_OFFLINE is set (fetch it with `hf download "
                   "Zilun/GeoRSCLIP ckpt/RS5M_ViT-B-32.pt`, or pass --set backbone.pretrained=PATH) (every run)"]
    assert not list(results.rglob("record.json"))


def test_an_input_missing_for_some_runs_is_said_once_and_the_rest_run(tmp_path, capsys):
    suite = write_suite(tmp_path)
    text = suite.read_text().replace("  bottleneck: {adapter:", "  lost:\n    backbone: {name: backbone/open-clip, architecture: ViT-B-32, pretrained: /nowhere/weights.pt}\n  bottleneck: {adapter:")
    suite.write_text(text)
    code = main(["run", str(suite), "--only", "lost,bottleneck", "--results", str(tmp_path / "results")])
    out = capsys.readouterr().out
    assert code == 1  # the run that lacks its checkpoint fails with its own record; the other succeeds
    assert out.count("warning: backbone.pretrained") == 1 and "(lost)" in out
