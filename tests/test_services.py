"""Past one machine, against the real servers: a suite as a SLURM job array (one-node SLURM from
Debian's packages) and two ``rdbench tune`` workers on a PostgreSQL study. Each service is
started by its script in tests/services/ and the tests skip with that script's reason where it
cannot run (not root, no apt-get)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from test_tune import SUITE

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ROOT / "tests" / "services"
# one thread per process: SLURM runs two tasks side by side on 2 cores, and the local
# reference must run the same arithmetic (thread count can change float sums)
ENV = {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "RDBENCH_CHECKPOINT_EVERY": "2"}


def rdbench(*args: str, cwd: Path, timeout: float = 1200) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rdbench", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **ENV}, timeout=timeout)


def metrics(results: Path, suite: str) -> dict[str, dict]:
    return {f"{p.parent.parent.name}/{p.parent.name}": json.loads(p.read_text())
            for p in sorted((results / suite).glob("*/seed*/record.json"))}


@pytest.fixture(scope="module")
def slurm():
    pytest.importorskip("submitit", reason="pip install 'rdbench[slurm]'")
    started = time.time()
    done = subprocess.run(["bash", str(SERVICES / "slurm.sh")], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        pytest.skip(f"no SLURM: {(done.stdout + done.stderr).strip().splitlines()[-1]}")
    print(f"SLURM ready in {time.time() - started:.0f} s")


@pytest.mark.slow  # a one-node SLURM and the quickstart suite, twice
def test_the_quickstart_as_a_slurm_array_gives_a_local_runs_records(tmp_path, slurm):
    shutil.copy(ROOT / "suites" / "quickstart.yaml", tmp_path / "quickstart.yaml")
    local = rdbench("run", "quickstart.yaml", "--results", "local", cwd=tmp_path)
    assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]
    done = rdbench("run", "quickstart.yaml", "--launcher", "slurm", "--cpus-per-task", "1", "--time", "30", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "submitted 3 array task(s) as SLURM job" in done.stdout and "3 run(s) done, 0 skipped, 0 failed" in done.stdout
    jobs = [json.loads(line) for line in (tmp_path / "results" / "quickstart" / "slurm" / "jobs.jsonl").read_text().splitlines()]
    assert sorted((j["run"], j["seed"]) for j in jobs) == [("bottleneck", 0), ("full", 0), ("zero-shot", 0)]
    assert len({j["array"] for j in jobs}) == 1  # one array
    on_slurm, here = metrics(tmp_path / "results", "quickstart"), metrics(tmp_path / "local", "quickstart")
    assert set(on_slurm) == set(here) == {"zero-shot/seed0", "full/seed0", "bottleneck/seed0"}
    for name in here:
        assert on_slurm[name]["status"] == "success"
        assert on_slurm[name]["metrics"] == here[name]["metrics"], name
    again = rdbench("run", "quickstart.yaml", "--launcher", "slurm", cwd=tmp_path)
    assert again.returncode == 0 and "3 run(s) done already" in again.stdout and "array task" not in again.stdout


LONG = """\
suite: cancelled
defaults:
  backbone: {name: backbone/tiny-rs, steps: 3, source_images: 32, batch_size: 16}
  dataset: {name: dataset/synthetic-rs, train: 24, val: 30, test: 30}
  adapter: {name: adapter/bottleneck, bottleneck: 4}
  optimizer: {name: optimizer/adamw, lr: 1.0e-3}
  trainer: {max_epochs: 6}
  data: {batch_size: 8, eval_batch_size: 16}
runs:
  a: {}
"""


@pytest.mark.slow  # a one-node SLURM; a task cancelled mid-training
def test_a_cancelled_array_task_resumes_from_its_checkpoint(tmp_path, slurm):
    (tmp_path / "s.yaml").write_text(LONG)
    reference = rdbench("run", "s.yaml", "--results", "local", cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr[-3000:]
    first = rdbench("run", "s.yaml", "--launcher", "slurm", "--no-wait", cwd=tmp_path)
    assert first.returncode == 0 and "not waiting" in first.stdout, first.stdout + first.stderr
    folder = tmp_path / "results" / "cancelled" / "a" / "seed0"
    [job] = [json.loads(line) for line in (tmp_path / "results" / "cancelled" / "slurm" / "jobs.jsonl").read_text().splitlines()]
    twice = rdbench("run", "s.yaml", "--launcher", "slurm", "--no-wait", cwd=tmp_path)
    assert f"queued already as job {job['job_id']}" in twice.stdout and "array task" not in twice.stdout
    deadline = time.time() + 600
    while not (folder / "checkpoints" / "last.ckpt").exists() and time.time() < deadline:
        time.sleep(0.2)
    assert (folder / "checkpoints" / "last.ckpt").exists(), "the task never wrote a resumable checkpoint"
    subprocess.run(["scancel", job["job_id"]], check=True)
    while subprocess.run(["squeue", "--noheader", "--jobs", job["array"]], capture_output=True, text=True).stdout.strip():
        assert time.time() < deadline, "the cancelled task is still listed"
        time.sleep(0.5)
    stopped = json.loads((folder / "record.json").read_text())
    assert stopped["status"] == "interrupted" and "SIGTERM" in stopped["error"], stopped
    second = rdbench("run", "s.yaml", "--launcher", "slurm", cwd=tmp_path)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    record = json.loads((folder / "record.json").read_text())
    resumed = record["resumed_from_step"]
    assert record["status"] == "success" and resumed and 0 < resumed < record["train"]["steps"]
    assert f"resumed from step {resumed}" in second.stdout
    print(f"cancelled task resumed from step {resumed} of {record['train']['steps']}")
    # resume is exact: the interrupted, requeued run equals the uninterrupted local one
    assert record["metrics"] == metrics(tmp_path / "local", "cancelled")["a/seed0"]["metrics"]


@pytest.fixture
def postgres():
    pytest.importorskip("psycopg", reason="pip install 'rdbench[postgres]'")
    folder = Path(tempfile.mkdtemp(prefix="rdbench-pg-"))  # outside pytest's private tmp: the server's user reads it
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = subprocess.run(["bash", str(SERVICES / "postgres.sh"), "start", str(folder), str(port)],
                             capture_output=True, text=True, timeout=300)
    if started.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"no PostgreSQL: {(started.stdout + started.stderr).strip().splitlines()[-1]}")
    yield started.stdout.strip().splitlines()[-1]
    subprocess.run(["bash", str(SERVICES / "postgres.sh"), "stop", str(folder)], capture_output=True, timeout=120)
    shutil.rmtree(folder, ignore_errors=True)


# test_tune's suite with a validation split large enough for the median pruner to tell trials
# apart, three epochs (pruning starts at the second) and a wider learning-rate range
TUNED = (SUITE.replace("val: 6,", "val: 18,").replace("max_epochs: 2", "max_epochs: 3")
         .replace("low: 1.0e-4, high: 1.0e-2", "low: 1.0e-6, high: 1.0e-1"))


@pytest.mark.slow  # a PostgreSQL server and two rdbench workers
def test_two_tune_workers_share_a_postgresql_study(tmp_path, postgres):
    import optuna

    (tmp_path / "t.yaml").write_text(TUNED)
    warm = rdbench("run", "t.yaml", "--results", "warm", cwd=tmp_path)  # the backbone's cache, once
    assert warm.returncode == 0, warm.stderr[-3000:]
    args = [sys.executable, "-m", "rdbench", "tune", "t.yaml", "--run", "b", "--trials", "8", "--storage", postgres, "--study", "pg"]
    procs = [subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, **ENV}) for _ in range(2)]
    outs = [p.communicate(timeout=1200)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum(out.count("[trial ") for out in outs) == 8 and all(out.count("[trial ") > 0 for out in outs), outs
    study = optuna.load_study(study_name="pg", storage=postgres.replace("postgresql://", "postgresql+psycopg://"))
    # exactly the trials asked for: the server's advisory lock leaves no number past --trials
    assert sorted(t.number for t in study.trials) == list(range(8))
    assert all(t.params and t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in study.trials)
    states = {t.number: t.state for t in study.trials}
    for path in (tmp_path / "results" / "t" / "tune-pg").glob("trial*/seed0/record.json"):
        record = json.loads(path.read_text())
        number = int(path.parent.parent.name.removeprefix("trial"))
        expected = "pruned" if states[number] == optuna.trial.TrialState.PRUNED else "success"
        assert record["status"] == expected and record["purpose"] == "trial", (number, record["status"])
    assert len(list((tmp_path / "results" / "t" / "tune-pg").glob("trial*/seed0/record.json"))) == 8
    best = yaml.safe_load((tmp_path / "results" / "t" / "tune-pg" / "best.yaml").read_text())["b-tuned"]
    assert best["optimizer"]["lr"] == pytest.approx(study.best_params["optimizer.lr"])
    print(f"pruned trials: {sum(s == optuna.trial.TrialState.PRUNED for s in states.values())} of 8")


def test_slurm_flags_need_the_slurm_launcher_and_submitit(tmp_path, capsys, monkeypatch):
    from rdbench.cli import main

    (tmp_path / "s.yaml").write_text(LONG)
    assert main(["run", str(tmp_path / "s.yaml"), "--partition", "gpu"]) == 2
    assert capsys.readouterr().err.strip() == "rdbench: --partition goes with --launcher slurm"
    assert main(["run", str(tmp_path / "s.yaml"), "--launcher", "slurm", "--jobs", "2"]) == 2
    assert "--jobs goes with --launcher local" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if not installed
    assert main(["run", str(tmp_path / "s.yaml"), "--launcher", "slurm", "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "rdbench: --launcher slurm needs submitit, which is not installed here: pip install 'rdbench[slurm]'"
    assert not (tmp_path / "r" / "cancelled").exists()  # nothing submitted, nothing written


def test_postgresql_urls_find_a_driver_or_name_the_extra(monkeypatch, tmp_path):
    from rdbench.errors import RdbenchError
    from rdbench.optuna_storage import database_url, trial_lock

    monkeypatch.setitem(sys.modules, "psycopg2", None)
    monkeypatch.setitem(sys.modules, "psycopg", object())  # installed (find_spec sees a module)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if sys.modules.get(name) is None else True)
    assert database_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert database_url("mysql+pymysql://u@h/db") == "mysql+pymysql://u@h/db"
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(RdbenchError, match=r"^--storage postgresql:// needs psycopg, which is not installed here: pip install 'rdbench\[postgres\]'$"):
        database_url("postgresql://u@h/db")
    # the lock every worker takes: a file beside a file storage, none for an unknown server
    lock = trial_lock(None, tmp_path / "optuna.db", "s")
    with lock():
        assert (tmp_path / "optuna.db.trials.lock").exists()
    with trial_lock("sqlite:///:memory:", tmp_path / "x.db", "s")():
        pass


def test_a_requeued_task_resumes_instead_of_starting_over():
    """submitit calls ``checkpoint`` on a time-out or a preemption and submits what it returns:
    the same run and seed, never with ``overwrite`` (which would throw the checkpoint away)."""
    pytest.importorskip("submitit", reason="pip install 'rdbench[slurm]'")
    from rdbench.launch.slurm import SuiteTask

    again = SuiteTask().checkpoint("s.yaml", "results", "a", 3, {"trainer": {"max_epochs": 2}}, False, True)
    assert isinstance(again.function, SuiteTask)
    assert again.args == ("s.yaml", "results", "a", 3, {"trainer": {"max_epochs": 2}}, False, False)
