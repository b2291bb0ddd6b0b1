"""Experiment trackers (the ``logger`` slot): what a run logged, read back by each tracker's own
reader (TensorBoard's event accumulator, the MLflow client, W&B's ``wandb leet inspect`` of the
offline run folder), the record naming each tracker run, and a tracker never changing a run."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rdbench.errors import ConfigError, RdbenchError
from rdbench.resolution.run import plan_suite
from rdbench.training import trackers

TRACKED = """\
suite: tracked
defaults:
  backbone: {name: backbone/tiny-rs, steps: 3, source_images: 32, batch_size: 16}
  dataset: {name: dataset/synthetic-rs, train: 12, val: 6, test: 6}
  adapter: {name: adapter/bottleneck, bottleneck: 4}
  optimizer: {name: optimizer/adamw, lr: 1.0e-3}
  trainer: {max_epochs: 2, log_every_n_steps: 1}
  data: {batch_size: 4, eval_batch_size: 16}
runs:
  tracked:
    logger: [csv, tensorboard, mlflow, {name: wandb, offline: true}]
  plain: {}
"""


def rdbench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([sys.executable, "-m", "rdbench", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done


def csv_column(path: Path, name: str) -> dict[int, float]:
    with open(path, newline="") as f:
        return {int(row["step"]): float(row[name]) for row in csv.DictReader(f) if row.get(name)}


@pytest.mark.slow  # two rdbench processes that import every tracker (about 45 s)
def test_each_tracker_holds_the_run_its_record_names(tmp_path):
    (tmp_path / "s.yaml").write_text(TRACKED)
    rdbench("run", "s.yaml", cwd=tmp_path)
    results = tmp_path / "results" / "tracked"
    folder = results / "tracked" / "seed0"
    record = json.loads((folder / "record.json").read_text())
    plain = json.loads((results / "plain" / "seed0" / "record.json").read_text())
    assert record["status"] == plain["status"] == "success"
    # a tracker observes; the same seed trains the same weights with or without one
    assert record["metrics"] == plain["metrics"]
    assert "trackers" not in plain["provenance"]
    refs = {r["logger"]: r for r in record["provenance"]["trackers"]}
    assert set(refs) == {"logger/tensorboard", "logger/mlflow", "logger/wandb"}  # csv is the run's own log
    val_curve = csv_column(folder / "logs" / "metrics.csv", "val/mR")
    assert len(val_curve) == 2

    # TensorBoard: its own event reader, on the folder the record names
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(refs["logger/tensorboard"]["uri"])
    events.Reload()
    tb_val = {e.step: e.value for e in events.Scalars("val/mR")}
    assert {s: round(v, 4) for s, v in tb_val.items() if s in val_curve} == {s: round(v, 4) for s, v in val_curve.items()}
    assert events.Scalars("test/mR")[-1].value == pytest.approx(record["metrics"]["test/mR"], abs=1e-4)
    assert events.Scalars("test/t2i_R@5")[-1].value == pytest.approx(record["metrics"]["test/t2i_R@5"], abs=1e-4)
    assert not any("@pir" in tag or "@vsepp" in tag for tag in events.Tags()["scalars"])  # other tie rules: the record's

    # MLflow: the client on the SQLite store the record names, the run it names
    from mlflow.tracking import MlflowClient

    ref = refs["logger/mlflow"]
    assert ref["uri"] == f"sqlite:///{tmp_path.resolve() / 'results'}/mlflow.db"
    client = MlflowClient(ref["uri"])
    run = client.get_run(ref["run"])
    assert run.info.run_name == "tracked/seed0" and run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "tracked"
    assert run.data.metrics["test/mR"] == pytest.approx(record["metrics"]["test/mR"])
    assert run.data.metrics["val/i2t_R1"] == pytest.approx(record["metrics"]["val/i2t_R@1"])  # MLflow drops "@"
    assert run.data.metrics["test/i2t_R10"] == pytest.approx(record["metrics"]["test/i2t_R@10"])
    history = {m.step: m.value for m in client.get_metric_history(ref["run"], "val/mR")}
    assert all(history[s] == pytest.approx(v, abs=1e-4) for s, v in val_curve.items())
    assert "components/adapter/key" in run.data.params  # the resolved config, as parameters

    # W&B: the offline run folder the record names, read by W&B's own inspector
    ref = refs["logger/wandb"]
    offline = Path(ref["uri"])
    assert offline.parent == folder / "wandb" and ref["run"] in offline.name
    env = {**os.environ, "WANDB_SILENT": "true"}
    dump = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(offline)],
                          capture_output=True, text=True, timeout=120, env=env)
    if dump.returncode != 0:  # older wandb: the CLI entry point instead of the module
        dump = subprocess.run([str(Path(sys.executable).with_name("wandb")), "leet", "inspect", "--json", str(offline)],
                              capture_output=True, text=True, timeout=120, env=env)
    assert dump.returncode == 0, dump.stderr[-2000:]
    lines = [json.loads(line) for line in dump.stdout.splitlines() if line.startswith("{")]
    runs = [r["run"] for r in lines if r.get("type") == "run"]
    assert runs and runs[0]["run_id"] == ref["run"] and runs[0]["display_name"] == "tracked/seed0"
    assert runs[0]["project"] == "tracked"
    logged = [r["history"]["item"] for r in lines if r.get("type") == "history"]
    finals = [item["test/mR"] for item in logged if "test/mR" in item]
    assert finals and finals[-1] == pytest.approx(record["metrics"]["test/mR"])
    assert [round(i["val/mR"], 4) for i in logged if "val/mR" in i][:2] == [round(v, 4) for _, v in sorted(val_curve.items())]

    # the config records the trackers; adding one to a finished run neither reruns it nor calls it changed
    assert "logger" in (folder / "config.yaml").read_text()
    text = TRACKED.replace("  plain: {}", "  plain:\n    logger: [tensorboard]")
    (tmp_path / "s.yaml").write_text(text)
    again = rdbench("run", "s.yaml", cwd=tmp_path)
    assert again.stdout.count("done already") == 2 and "CHANGED" not in again.stdout, again.stdout


def test_tracker_names_are_checked_before_anything_runs(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(TRACKED.replace("[csv, tensorboard, mlflow, {name: wandb, offline: true}]", "[tensorbord]"))
    with pytest.raises(ConfigError, match=r"s\.yaml: run 'tracked', logger: .*tensorbord.*tensorboard"):
        plan_suite(path)
    path.write_text(TRACKED.replace("{name: wandb, offline: true}", "{name: mlflow, trackin_uri: x}"))
    with pytest.raises(ConfigError, match=r"unknown argument 'trackin_uri'; did you mean 'tracking_uri'"):
        plan_suite(path)
    path.write_text(TRACKED.replace("{name: wandb, offline: true}", "{class_path: os.system}"))
    with pytest.raises(ConfigError, match=r"standard library"):
        plan_suite(path)
    path.write_text(TRACKED.replace("{name: wandb, offline: true}", "{class_path: rdbench.adapters.basic.BottleneckAdapter}"))
    with pytest.raises(ConfigError, match=r"a logger slot takes a subclass of lightning\.pytorch\.loggers\.Logger"):
        plan_suite(path)


def test_a_missing_tracker_package_is_one_line_naming_its_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(trackers.NEEDS, "logger/tensorboard", ("rdbench_absent_module", "tensorboard"))
    path = tmp_path / "s.yaml"
    path.write_text(TRACKED.replace("[csv, tensorboard, mlflow, {name: wandb, offline: true}]", "tensorboard"))
    with pytest.raises(RdbenchError) as caught:  # exit code 2 at the command line
        plan_suite(path)
    message = str(caught.value)
    assert "logger/tensorboard needs rdbench_absent_module" in message and "\n" not in message
    assert message.endswith("pip install 'rdbench[tensorboard]'") and "s.yaml: run 'tracked'" in message


def test_any_lightning_logger_fits_the_slot_and_fills_the_run_placeholders(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    path = tmp_path / "s.yaml"
    other = "{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {save_dir: '{run_dir}/other', name: '{run}-{seed}'}}"
    path.write_text(TRACKED.replace("{name: wandb, offline: true}", other).replace(", tensorboard, mlflow", ""))
    run = next(r for r in plan_suite(path) if r.plan.run == "tracked")
    folder = tmp_path / "results" / "tracked" / "tracked" / "seed0"
    folder.mkdir(parents=True)
    [(label, logger)] = trackers.make_loggers(run.loggers, folder, run.plan, resumed=False, resumed_step=None)
    assert label == "lightning.pytorch.loggers.csv_logs.CSVLogger" and isinstance(logger, CSVLogger)
    assert Path(logger.save_dir) == folder / "other" and logger.name == "tracked-0"
    assert trackers.run_names(folder, run.plan)["results"] == str(tmp_path / "results")


@pytest.mark.slow  # rdbench subprocesses, one killed mid-training
def test_a_resumed_run_continues_its_tracker_runs(tmp_path):
    """Killed at step 10 (resumed from its checkpoint at step 8 of 21), the run goes on in the
    same MLflow run, and TensorBoard shows each step once, as the CSV log does."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from test_resume_exact import attempt, run

    folder = attempt(tmp_path, "killed", at=10)
    text = (folder / "s.yaml").read_text().replace("runs:", "  logger: [tensorboard, mlflow]\nruns:")
    (folder / "s.yaml").write_text(text)
    first = run(folder)
    assert first.returncode == -9, first.stderr[-2000:]
    seed = folder / "results" / "exact" / "a" / "seed0"
    started = json.loads((seed / trackers.TRACKERS_FILE).read_text())["logger/mlflow"]["run"]
    second = run(folder)
    assert second.returncode == 0 and "resumed from step 8" in second.stdout, second.stderr[-3000:]
    record = json.loads((seed / "record.json").read_text())
    refs = {r["logger"]: r for r in record["provenance"]["trackers"]}
    assert refs["logger/mlflow"]["run"] == started
    client = MlflowClient(refs["logger/mlflow"]["uri"])
    assert [r.info.run_id for r in client.search_runs(client.get_experiment_by_name("exact").experiment_id)] == [started]
    assert client.get_run(started).info.status == "FINISHED"
    loss = csv_column(seed / "logs" / "metrics.csv", "train/loss")
    events = EventAccumulator(refs["logger/tensorboard"]["uri"])
    events.Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == sorted(loss) and len(steps) == len(set(steps)) == 21
    assert all(e.value == pytest.approx(loss[e.step], abs=1e-5) for e in events.Scalars("train/loss"))
