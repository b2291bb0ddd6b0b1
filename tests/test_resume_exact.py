"""Resume is exact (docs/reliability.md): a run killed anywhere and resumed equals an
uninterrupted run — its selected checkpoint, its training log and its metrics, bit for bit on
CPU. The kills are real (``rdbench.testing.KillOnce`` sends the process SIGKILL, or SIGTERM, at
a chosen training step); the run augments its images and uses dropout, so the data position,
the augmentation draws and every random state must come back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rdbench.data.loading.order import EpochOrder, augmentation_seed

# 12 training images x 5 captions / batch 8 = 7 optimiser steps per epoch, 3 epochs.
STEPS_PER_EPOCH = 7


def suite(marker: Path, at: int, signal: str = "KILL") -> str:
    return f"""\
suite: exact
defaults:
  backbone: {{name: backbone/tiny-rs, steps: 3, source_images: 32, batch_size: 16}}
  dataset: {{name: dataset/synthetic-rs, train: 12, val: 6, test: 6}}
  adapter: {{name: adapter/bottleneck, bottleneck: 4, dropout: 0.3}}
  loss: {{class_path: rdbench.testing.KillOnce, init_args: {{at: {at}, marker: '{marker}', signal: {signal}}}}}
  optimizer: {{name: optimizer/adamw, lr: 1.0e-2}}
  train_transform: transform/flip
  trainer: {{max_epochs: 3, enable_progress_bar: false, log_every_n_steps: 1}}
  data: {{batch_size: 8, eval_batch_size: 16}}
runs:
  a: {{}}
"""


def run(folder: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RDBENCH_CHECKPOINT_EVERY": "2", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "rdbench", "run", "s.yaml"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=600)


def attempt(root: Path, name: str, at: int, signal: str = "KILL", kill: bool = True) -> Path:
    folder = root / name
    folder.mkdir()
    marker = folder / "marker"
    if not kill:
        marker.write_text("a reference run: never killed")
    (folder / "s.yaml").write_text(suite(marker, at, signal))
    return folder


def outcome(folder: Path) -> dict:
    seed = folder / "results" / "exact" / "a" / "seed0"
    record = json.loads((seed / "record.json").read_text())
    best = torch.load(seed / record["selection"]["checkpoint"], weights_only=True)
    return {
        "metrics": record["metrics"], "selection": record["selection"], "diagnostics": record["diagnostics"],
        "train": {k: v for k, v in record["train"].items()}, "log": (seed / "logs" / "metrics.csv").read_text(),
        "checkpoints": sorted(p.name for p in (seed / "checkpoints").iterdir()),
        "best_step": best["global_step"], "best": best["state_dict"], "resumed": record.get("resumed_from_step"),
    }


def same(a: dict, b: dict) -> None:
    for key in ("metrics", "selection", "diagnostics", "train", "checkpoints", "best_step"):
        assert a[key] == b[key], key
    assert a["log"] == b["log"]
    assert a["best"].keys() == b["best"].keys() and all(torch.equal(a["best"][k], b["best"][k]) for k in a["best"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    folder = attempt(tmp_path_factory.mktemp("reference"), "reference", at=1, kill=False)
    done = run(folder)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return outcome(folder)


@pytest.mark.slow  # rdbench subprocesses killed mid-training
@pytest.mark.parametrize("at, resumed, where", [
    (5, 4, "mid-epoch, one step after a periodic checkpoint"),
    (7, 6, "on the last batch of an epoch, before its validation"),
    (8, 7, "just after an epoch boundary (its checkpoint, validation and best)"),
    (19, 18, "mid-epoch in the last epoch, after a new best may have been written"),
])
def test_a_run_killed_anywhere_resumes_to_the_uninterrupted_result(tmp_path, reference, at, resumed, where):
    folder = attempt(tmp_path, "killed", at)
    first = run(folder)
    assert first.returncode == -9, (where, first.stdout[-2000:], first.stderr[-2000:])
    second = run(folder)
    assert second.returncode == 0, (where, second.stdout[-3000:], second.stderr[-3000:])
    assert f"resumed from step {resumed}" in second.stdout, where
    assert "not resumable" not in second.stderr  # Lightning's warning for a loader it cannot resume
    result = outcome(folder)
    assert result["resumed"] == resumed
    same(result, reference)


@pytest.mark.slow  # rdbench subprocesses stopped by a real signal
@pytest.mark.parametrize("at, step", [(7, 7), (10, 10)])
def test_a_stop_signal_on_any_batch_checkpoints_a_step_that_resumes_exactly(tmp_path, reference, at, step):
    """SIGTERM during the last batch of an epoch is held until that epoch's validation and
    end are saved (its checkpoint knows the epoch's best); elsewhere the step itself is saved."""
    folder = attempt(tmp_path, "stopped", at, signal="TERM")
    first = run(folder)
    assert first.returncode == 143, first.stdout[-2000:] + first.stderr[-2000:]
    last = folder / "results" / "exact" / "a" / "seed0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == step
    second = run(folder)
    assert second.returncode == 0 and f"resumed from step {step}" in second.stdout, second.stdout[-3000:]
    same(outcome(folder), reference)


def test_the_order_is_the_shuffled_loader_rdbench_trained_with_before():
    """Records made before the order became resumable stay reproducible: epoch by epoch, the
    batches equal those of a DataLoader(shuffle=True, drop_last=True) with a generator seeded
    by the run seed, iterated for its length each epoch as Lightning does."""
    n, batch, seed = 61, 8, 3
    plain = torch.utils.data.DataLoader(list(range(n)), batch_size=batch, shuffle=True, drop_last=True,
                                        generator=torch.Generator().manual_seed(seed))
    before = []
    for _ in range(4):
        it = iter(plain)
        before.append([next(it).tolist() for _ in range(len(plain))])
    order = EpochOrder(n, batch, seed)
    for epoch in (0, 1, 2, 3, 1):  # in order, and back to an earlier epoch
        order.set_epoch(epoch)
        items = [i for i, e in order if e == epoch]
        assert [items[k:k + batch] for k in range(0, len(plain) * batch, batch)] == before[epoch]


def test_a_restored_position_skips_the_batches_done_and_only_once():
    order = EpochOrder(40, 8, seed=0)
    order.set_epoch(2)
    full = [i for i, _ in order]
    order.position = 3
    state = order.state_dict()
    assert state == {"epoch": 2, "position": 3}
    order = EpochOrder(40, 8, seed=0)
    order.load_state_dict(state)
    assert [i for i, _ in order] == full[24:]
    assert [i for i, _ in order] == full  # the next iteration of the epoch is whole again
    order.position = 5  # every batch of the epoch done: the saved state starts the next epoch
    assert order.state_dict() == {"epoch": 3, "position": 0}


def test_augmentation_is_a_function_of_seed_epoch_and_caption_not_of_workers():
    from torch.utils.data import DataLoader

    from rdbench.data.loading.loaders import CaptionPairs, SplitData, pass_batch
    from rdbench.data.loading.order import ResumableLoader
    from rdbench.transforms import FlipTransform

    g = torch.Generator().manual_seed(0)
    data = SplitData("train", [f"i{k}" for k in range(8)], torch.randint(0, 255, (8, 3, 16, 16), dtype=torch.uint8, generator=g),
                     torch.zeros(8, dtype=torch.long), [f"c{k}" for k in range(16)], torch.zeros(16, 4, dtype=torch.long),
                     torch.arange(16) // 2)
    pairs = CaptionPairs(data, FlipTransform(0.5, 0.5), 16, seed=7)

    def batches(workers: int, epoch: int) -> list[torch.Tensor]:
        order = EpochOrder(16, 4, seed=7)
        order.set_epoch(epoch)
        loader = ResumableLoader(pairs, batch_size=4, sampler=order, drop_last=True, collate_fn=pass_batch,
                                 num_workers=workers)
        torch.manual_seed(123 + workers)  # the process's own stream must not matter
        return [b["images"] for b in loader]

    assert all(torch.equal(a, b) for a, b in zip(batches(0, 1), batches(2, 1)))
    assert not all(torch.equal(a, b) for a, b in zip(batches(0, 1), batches(0, 2)))  # a new epoch, new draws
    assert augmentation_seed(7, 1, 3) != augmentation_seed(7, 1, 4) != augmentation_seed(8, 1, 4)


def test_the_log_of_a_resumed_run_keeps_the_rows_below_its_step(tmp_path):
    from rdbench.training.logs import keep_rows_below

    log = tmp_path / "metrics.csv"
    log.write_text("epoch,step,train/loss,val/mR\n0,0,2.5,\n0,1,2.4,\n0,1,,40.0\n1,2,2.3,\n1,3,2.2\n1,4,2")
    assert keep_rows_below(log, 2) == ["epoch", "step", "train/loss", "val/mR"]
    assert log.read_text() == "epoch,step,train/loss,val/mR\n0,0,2.5,\n0,1,2.4,\n0,1,,40.0\n"


def test_a_run_that_builds_the_backbone_cache_draws_what_a_run_that_finds_it_draws(tmp_path, monkeypatch):
    """The attack behind it: the first run of a fresh clone (which pre-trains tiny-rs) and
    every later run (which loads it) trained different weights from the same seed."""
    from rdbench.backbones.tiny_rs import TinyRSBackbone

    monkeypatch.setenv("RDBENCH_CACHE", str(tmp_path))
    states = []
    for _ in range(2):  # cold, then warm
        torch.manual_seed(0)
        TinyRSBackbone(steps=2, batch_size=8, source_images=16).build_model()
        states.append(torch.get_rng_state())
    assert torch.equal(states[0], states[1])
