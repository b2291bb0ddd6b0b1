"""rdbench run --jobs N: independent runs in parallel processes, the same records as serially."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rdbench.cli import main

SUITE = """\
suite: j
defaults:
  backbone: {name: backbone/tiny-rs, steps: 3, source_images: 32, batch_size: 16}
  dataset: {name: dataset/synthetic-rs, train: 12, val: 6, test: 6}
  trainer: {max_epochs: 1, enable_progress_bar: false}
  data: {batch_size: 8, eval_batch_size: 16}
runs:
  a: {adapter: {name: adapter/bottleneck, bottleneck: 4}}
  b: {adapter: {name: adapter/bottleneck, bottleneck: 8}}
  c: {adapter: adapter/linear-probe}
"""


def metrics(results: Path) -> dict[str, dict]:
    out = {}
    for path in results.glob("j/*/seed0/record.json"):
        rec = json.loads(path.read_text())
        assert rec["status"] == "success"
        out[rec["run"]] = rec["metrics"]
    return out


@pytest.mark.slow  # --jobs 2 starts an rdbench subprocess
def test_jobs_2_gives_the_records_of_jobs_1(tmp_path):
    (tmp_path / "j.yaml").write_text(SUITE)
    assert main(["run", str(tmp_path / "j.yaml"), "--results", str(tmp_path / "serial")]) == 0
    assert main(["run", str(tmp_path / "j.yaml"), "--results", str(tmp_path / "parallel"), "--jobs", "2"]) == 0
    serial, parallel = metrics(tmp_path / "serial"), metrics(tmp_path / "parallel")
    assert set(serial) == set(parallel) == {"a", "b", "c"}
    for run in serial:
        for key, value in serial[run].items():
            assert parallel[run][key] == pytest.approx(value, abs=1e-6), (run, key)
    # and a rerun with --jobs skips everything, as a serial rerun does
    assert main(["run", str(tmp_path / "j.yaml"), "--results", str(tmp_path / "parallel"), "--jobs", "2"]) == 0
