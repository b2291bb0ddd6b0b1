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
from rdbench.tune import OptunaPruning, PrunedRun, format_params, make_pruner

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
    # exactly the requested trials, each run once, and nothing else in the study (no FAIL
    # trial without parameters for a number handed out past --trials)
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3, 4]
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) and t.params for t in study.trials)
    # the two workers' samplers do not propose the same values to both
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 5
    started = sum(out.count("[trial ") for out in outs)
    assert started == 5, outs
    records = sorted((tmp_path / "results" / "t" / "tune-s").glob("trial*/seed0/record.json"))
    assert len(records) == 5
    for path in records:
        rec = json.loads(path.read_text())
        assert rec["run"].startswith("tune-s/trial") and rec["status"] in ("success", "pruned")
        assert rec["purpose"] == "trial" and not any(k.startswith("test") for k in rec["metrics"])
    snippet = yaml.safe_load((tmp_path / "results" / "t" / "tune-s" / "best.yaml").read_text())
    tuned = snippet["b-tuned"]
    assert tuned["optimizer"]["lr"] == pytest.approx(study.best_params["optimizer.lr"])
    assert tuned["adapter"]["bottleneck"] == study.best_params["adapter.bottleneck"]


class _Trainer:
    sanity_checking = False
    max_steps = -1
    global_step = 0

    def __init__(self, value, epoch=1, max_epochs=3):
        self.callback_metrics = {"val/mR": value}
        self.current_epoch, self.max_epochs = epoch, max_epochs


def _study_with_complete_trials(pruner, n, epochs):
    """A study with ``n`` complete trials that reported 50.0 after each of ``epochs`` epochs."""
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for _ in range(n):
        done = study.ask()
        for epoch in range(epochs):
            done.report(50.0, step=epoch)
        study.tell(done, 50.0)
    return study


def test_pruning_callback_reports_and_prunes(tmp_path):
    study = _study_with_complete_trials(optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0), 1, 2)
    trial = study.ask()
    callback = OptunaPruning(trial)
    with pytest.raises(PrunedRun):
        callback.on_validation_end(_Trainer(10.0), None)
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {1: 10.0}


def test_a_fully_trained_trial_is_never_pruned():
    """User report: with one epoch the median pruner discarded a fully trained third trial."""
    # two startup trials done, a worse third trial after its one and only epoch: kept
    study = _study_with_complete_trials(make_pruner(3), 2, 1)
    trial = study.ask()
    OptunaPruning(trial).on_validation_end(_Trainer(10.0, epoch=0, max_epochs=1), None)
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {0: 10.0}
    # the last epoch of a longer run is not judged either, nor its first epoch (warm-up) ...
    study = _study_with_complete_trials(make_pruner(3), 2, 3)
    trial = study.ask()
    OptunaPruning(trial).on_validation_end(_Trainer(10.0, epoch=0, max_epochs=3), None)
    OptunaPruning(trial).on_validation_end(_Trainer(10.0, epoch=2, max_epochs=3), None)
    # ... but a middle epoch is
    trial = study.ask()
    with pytest.raises(PrunedRun, match="after epoch 2"):
        OptunaPruning(trial).on_validation_end(_Trainer(10.0, epoch=1, max_epochs=3), None)
    # and the pruner waits for startup trials before it judges anything
    assert make_pruner(3)._n_startup_trials == 2 and make_pruner(12)._n_startup_trials == 3
    assert make_pruner(100)._n_startup_trials == 5
    study = _study_with_complete_trials(make_pruner(100), 4, 3)
    trial = study.ask()
    OptunaPruning(trial).on_validation_end(_Trainer(10.0, epoch=1, max_epochs=3), None)


def test_tune_trials_never_test_and_the_summary_reads_at_a_glance(tmp_path, capfd):
    """User report: after `rdbench tune`, compare listed trial rows carrying test metrics; the
    study kept a FAIL trial without parameters; Optuna's own log line named the study."""
    (tmp_path / "t.yaml").write_text(SUITE.replace("max_epochs: 2", "max_epochs: 1"))
    results = tmp_path / "results"
    args = ["tune", str(tmp_path / "t.yaml"), "--run", "b", "--trials", "2", "--results", str(results), "--study", "s"]
    assert main(args) == 0
    out, err = capfd.readouterr()
    assert "A new study created" not in out + err
    storage = f"sqlite:///{(results / 't' / 'optuna.db').resolve()}"
    assert f"study s in {storage}: new, 2 trials" in out
    assert "trials train at seed 0 (the run's first seed" in out
    study = optuna.load_study(study_name="s", storage=storage)
    # one epoch: every trial trains fully and is kept; nothing else is in the study
    assert [(t.number, t.state.name) for t in study.trials] == [(0, "COMPLETE"), (1, "COMPLETE")]
    assert all(t.params for t in study.trials)
    for k in range(2):
        folder = results / "t" / "tune-s" / f"trial{k}" / "seed0"
        rec = json.loads((folder / "record.json").read_text())
        assert rec["purpose"] == "trial" and rec["status"] == "success"
        assert "val/mR" in rec["metrics"] and not [m for m in rec["metrics"] if m.startswith("test")]
        assert not (folder / "test_ranks.json").exists()
    best = study.best_trial
    summary = out[out.index("study s: "):].splitlines()
    assert summary == [
        "study s: 2 of 2 trials, 2 complete, 0 pruned, 0 failed (2 run here)",
        "  seed     0",
        f"  best     trial {best.number}: val/mR {best.value:.2f} on validation, {format_params(best.params)}",
        f"  snippet  {results / 't' / 'tune-s' / 'best.yaml'}",
        f"  study    s in {storage}",
    ]
    # a second worker on a finished study runs nothing and adds no trial
    assert main(args) == 0
    out = capfd.readouterr().out
    assert "[trial" not in out and "2 of 2 trials, 2 complete, 0 pruned, 0 failed (0 run here)" in out
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 2


def test_search_seeds_average_the_monitor(tmp_path, capfd):
    (tmp_path / "t.yaml").write_text(SUITE.replace("max_epochs: 2", "max_epochs: 1") + "  seeds: [0, 1]\n")
    results = tmp_path / "results"
    assert main(["tune", str(tmp_path / "t.yaml"), "--run", "b", "--trials", "1", "--results", str(results)]) == 0
    out = capfd.readouterr().out
    assert "trials train at seeds 0, 1, the monitor averaged\n" in out and "  seeds    0, 1 (val/mR averaged over them)" in out
    scores = [json.loads((results / "t" / "tune-t-b" / "trial0" / f"seed{s}" / "record.json").read_text())["metrics"]["val/mR"]
              for s in (0, 1)]
    study = optuna.load_study(study_name="t-b", storage=f"sqlite:///{results / 't' / 'optuna.db'}")
    assert study.best_value == pytest.approx(sum(scores) / 2)


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
    (tmp_path / "t.yaml").write_text(SUITE + "  seeds: [0, x]\n")
    assert main(["validate", str(tmp_path / "t.yaml")]) == 2
    assert "search.seeds: needs a non-empty list of distinct integers" in capsys.readouterr().err
    (tmp_path / "t.yaml").write_text(SUITE + "  seeds: [0, 1]\n")
    assert main(["validate", str(tmp_path / "t.yaml")]) == 0
