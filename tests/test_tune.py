"""rdbench tune: Optuna studies over a suite's search space, shared by concurrent workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from rdbench.cli import main
from rdbench.tune import OptunaPruning, PrunedRun

SUITE = """\
suite: t
defaults:
  backbone: {name: backbone/tiny-rs, steps: 3, source_images: 32, batch_size: 16}
  dataset: {name: dataset/synthetic-rs, train: 12, val: 6, test: 6}
  adapter: {name: adapter/bottleneck, bottleneck: 4}
  trainer: {max_epochs: 2, enable_progress_bar: false}
  data: {batch_size: 8, eval_batch_size: 16}
runs:
  b: {}
search:
  optimizer.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  adapter.bottleneck: {type: int, low: 2, high: 8, step: 2}
"""


@pytest.mark.slow  # two rdbench subprocesses
def test_two_workers_share_one_sqlite_study(tmp_path):
    (tmp_path / "t.yaml").write_text(SUITE)
    assert main(["run", str(tmp_path / "t.yaml"), "--results", str(tmp_path / "warm")]) == 0  # cache the backbone
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = [sys.executable, "-m", "rdbench", "tune", "t.yaml", "--run", "b", "--trials", "5", "--storage", storage, "--study", "s"]
    procs = [subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    study = optuna.load_study(study_name="s", storage=storage)
    ran = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert sorted(t.number for t in ran) == [0, 1, 2, 3, 4]  # exactly the requested trials, each once
    assert all(t.user_attrs.get("rdbench") == "over budget, never run" for t in study.trials if t.number >= 5)
    started = sum(out.count("[trial ") for out in outs)
    assert started == 5, outs
    records = sorted((tmp_path / "results" / "t" / "tune-s").glob("trial*/seed0/record.json"))
    assert len(records) == 5
    for path in records:
        rec = json.loads(path.read_text())
        assert rec["run"].startswith("tune-s/trial") and rec["status"] in ("success", "pruned")
    snippet = yaml.safe_load((tmp_path / "results" / "t" / "tune-s" / "best.yaml").read_text())
    tuned = snippet["b-tuned"]
    assert tuned["optimizer"]["lr"] == pytest.approx(study.best_params["optimizer.lr"])
    assert tuned["adapter"]["bottleneck"] == study.best_params["adapter.bottleneck"]


class _Trainer:
    sanity_checking = False
    current_epoch = 1

    def __init__(self, value):
        self.callback_metrics = {"val/mR": value}


def test_pruning_callback_reports_and_prunes(tmp_path):
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    first = study.ask()
    first.report(50.0, step=1)
    study.tell(first, 50.0)
    trial = study.ask()
    callback = OptunaPruning(trial)
    with pytest.raises(PrunedRun):
        callback.on_validation_end(_Trainer(10.0), None)
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {1: 10.0}


def test_a_pruned_trial_is_recorded_as_pruned(tmp_path):
    from rdbench.suite import expand, load_suite
    from rdbench.training.execute import execute
    from rdbench.resolution.run import resolve_plan

    (tmp_path / "t.yaml").write_text(SUITE)
    suite = load_suite(tmp_path / "t.yaml")
    run = resolve_plan(expand(suite)[0], suite.path)

    class AlwaysPrune(OptunaPruning):
        def on_validation_end(self, trainer, pl_module):
            raise PrunedRun("pruned by the median pruner after epoch 0")

    record = execute(run, tmp_path / "run", extra_callbacks=[AlwaysPrune(None)])
    assert record.status == "pruned" and "median pruner" in record.error
    assert json.loads((tmp_path / "run" / "record.json").read_text())["status"] == "pruned"


def test_search_space_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "t.yaml").write_text(SUITE.replace("low: 2, high: 8", "low: 8, high: 2"))
    assert main(["validate", str(tmp_path / "t.yaml")]) == 2
    assert "search.adapter.bottleneck: needs numbers `low` < `high`" in capsys.readouterr().err
