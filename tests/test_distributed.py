"""DDP on CPU (gloo): evaluation gathers every rank's embeddings, so metrics do not depend on
the number of processes; a suite runs under `--set trainer.strategy=ddp`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # DDP in subprocesses

ROOT = Path(__file__).resolve().parent.parent


def validate(tmp: Path, devices: int) -> dict:
    out = tmp / f"metrics{devices}.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "scripts" / "ddp_validate.py"), str(out), str(devices), str(tmp / "data")],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_one_and_two_processes_give_identical_metrics(tmp_path):
    one, two = validate(tmp_path, 1), validate(tmp_path, 2)
    assert one["world"] == 1 and two["world"] == 2
    assert one["metrics"]["n_images"] == two["metrics"]["n_images"] == 9  # the whole split, once
    assert one["metrics"]["n_captions"] == two["metrics"]["n_captions"] == 45
    for key, value in one["metrics"].items():
        assert abs(two["metrics"][key] - value) < 1e-9, key


def test_a_suite_trains_under_ddp_with_two_processes(tmp_path):
    (tmp_path / "s.yaml").write_text("""\
suite: ddp
defaults:
  backbone: {name: backbone/tiny-rs, steps: 3, source_images: 32, batch_size: 16}
  dataset: {name: dataset/synthetic-rs, train: 12, val: 6, test: 6}
  trainer: {max_epochs: 1, enable_progress_bar: false}
  data: {batch_size: 4, eval_batch_size: 8}
runs:
  zero: {adapter: adapter/none}
  b: {adapter: {name: adapter/bottleneck, bottleneck: 4}, loss: {name: loss/infonce, gather: true}}
""")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "rdbench", "run", "s.yaml", "--set", "trainer.strategy=ddp", "--set", "trainer.devices=2",
                           "--set", "trainer.accelerator=cpu"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for run in ("zero", "b"):
        rec = json.loads((tmp_path / "results" / "ddp" / run / "seed0" / "record.json").read_text())
        assert rec["status"] == "success" and rec["eval"]["test"]["n_images"] == 6
        assert rec["eval"]["test"]["n_captions"] == 30
    assert proc.stdout.count("val mR") == 2  # rank zero reports; the other rank stays quiet
