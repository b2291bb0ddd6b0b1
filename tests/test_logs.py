"""What ``rdbench run`` prints where its output is not a terminal (a job log, CI, a file): no
progress-bar redraws, one line per epoch with its metrics and the run's remaining time."""

from __future__ import annotations

import os
import re
import subprocess
import sys


def test_a_run_logged_to_a_file_has_one_line_per_epoch_and_no_redraws(tmp_path):
    (tmp_path / "s.yaml").write_text("""\
suite: logged
defaults:
  backbone: {name: backbone/tiny-rs, steps: 3, source_images: 32, batch_size: 16}
  dataset: {name: dataset/synthetic-rs, train: 12, val: 6, test: 6}
  adapter: {name: adapter/bottleneck, bottleneck: 4}
  optimizer: {name: optimizer/adamw, lr: 1.0e-3}
  trainer: {max_epochs: 3}
  data: {batch_size: 8, eval_batch_size: 16}
runs:
  a: {}
""")
    with open(tmp_path / "log.txt", "w") as log:  # a file, as a scheduler's job log is
        done = subprocess.run([sys.executable, "-m", "rdbench", "run", "s.yaml"], cwd=tmp_path, stdout=log,
                              stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=600)
    text = (tmp_path / "log.txt").read_text()
    assert done.returncode == 0, text[-3000:]
    assert "\r" not in text and "it/s" not in text, text[-2000:]
    epochs = re.findall(r"^    epoch (\d)/3: train/loss [\d.]+, val/mR [\d.]+ \(.+\)$", text, flags=re.M)
    assert epochs == ["1", "2", "3"], text
    assert "run ETA" in text.splitlines()[[i for i, line in enumerate(text.splitlines()) if "epoch 1/3" in line][0]]
    assert len(text) < 4000, len(text)  # the quickstart's log was 141 KB of frames
