"""Reliability promises (docs/reliability.md): kill -9 and resume, concurrent processes, NaN
isolation, determinism, and one clear line for every kind of bad input."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rdbench.cli import main

BACKBONE = "{name: backbone/tiny-rs, steps: 3, source_images: 32, batch_size: 16}"


def suite_text(name: str, runs: str, epochs: int = 1, train: int = 12, extra: str = "") -> str:
    return f"""\
suite: {name}
defaults:
  backbone: {BACKBONE}
  dataset: {{name: dataset/synthetic-rs, train: {train}, val: 6, test: 6}}
  adapter: {{name: adapter/bottleneck, bottleneck: 4}}
  optimizer: {{name: optimizer/adamw, lr: 1.0e-3}}
  trainer: {{max_epochs: {epochs}, enable_progress_bar: false}}
  data: {{batch_size: 8, eval_batch_size: 16}}
{extra}runs:
{runs}"""


def cli(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "rdbench", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def records(results: Path, suite: str) -> dict[str, dict]:
    return {p.parent.parent.name: json.loads(p.read_text()) for p in results.glob(f"{suite}/*/seed0/record.json")}


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 600) -> None:
    """Until ``path`` exists (a run's first resumable checkpoint), or ``proc`` ends."""
    deadline = time.time() + timeout
    while not path.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)


def kill_after_first_checkpoint(tmp_path: Path, suite: str, run: str) -> Path:
    """Start ``rdbench run s.yaml`` in ``tmp_path``, SIGKILL it once ``run`` has written its first
    resumable checkpoint; that checkpoint's path."""
    proc = cli("run", "s.yaml", cwd=tmp_path)
    last = tmp_path / "results" / suite / run / "seed0" / "checkpoints" / "last.ckpt"
    wait_for(last, proc)
    assert last.exists(), f"run {run} never wrote a resumable checkpoint"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return last


@pytest.mark.slow  # rdbench subprocesses
def test_kill_9_then_rerun_resumes_and_redoes_nothing(tmp_path):
    (tmp_path / "s.yaml").write_text(suite_text("killed", "  a: {}\n  b: {}\n  c: {}\n", epochs=6, train=24))
    results = tmp_path / "results"
    kill_after_first_checkpoint(tmp_path, "killed", "b")
    before = records(results, "killed")
    assert before["a"]["status"] == "success" and "b" not in before
    rerun = cli("run", "s.yaml", cwd=tmp_path)
    out, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, out[-3000:]
    after = records(results, "killed")
    assert set(after) == {"a", "b", "c"} and all(r["status"] == "success" for r in after.values())
    assert after["a"]["finished_at"] == before["a"]["finished_at"]  # not done twice
    assert "a/seed0: done already" in out
    assert after["b"]["resumed_from_step"] > 0 and "resumed from step" in out
    assert after["b"]["train"]["steps"] == 6 * (24 * 5 // 8)  # the schedule finished where it would have
    assert not (results / "killed" / "b" / "seed0" / "checkpoints" / "last.ckpt").exists()
    ckpt = torch.load(results / "killed" / "b" / "seed0" / "checkpoints" / "best.ckpt", weights_only=True)
    assert all(k.startswith("adapter.") for k in ckpt["state_dict"])  # no frozen backbone copy


@pytest.mark.slow  # rdbench subprocesses
def test_two_processes_share_a_suite_and_run_each_run_once(tmp_path):
    runs = "".join(f"  r{i}: {{}}\n" for i in range(4))
    (tmp_path / "s.yaml").write_text(suite_text("shared", runs))
    # build the cached backbone and data once, so the two processes start on equal terms
    assert main(["run", str(tmp_path / "s.yaml"), "--only", "r0", "--results", str(tmp_path / "warm")]) == 0
    procs = [cli("run", "s.yaml", cwd=tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    executed = sum(len(re.findall(r"val mR [\d.]+, test mR", out)) for out in outs)
    assert executed == 4, outs
    assert sum(o.count("running in another process") + o.count("done already") for o in outs) == 4
    recs = records(tmp_path / "results", "shared")
    assert len(recs) == 4 and all(r["status"] == "success" for r in recs.values())


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    from rdbench.results.lock import RunLock

    folder = tmp_path / "run"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder.mkdir()
    (folder / ".lock").write_text(json.dumps({"pid": dead.pid, "host": "here"}))
    lock = RunLock(folder)
    assert lock.acquire() and lock.took_over_stale and lock.previous["pid"] == dead.pid
    other = RunLock(folder)
    assert not other.acquire()  # held by us, a live process
    lock.release()
    assert other.acquire()
    other.release()


def test_nan_loss_fails_the_run_and_the_suite_goes_on(tmp_path, capsys):
    runs = "  nan:\n    loss: {class_path: rdbench.testing.NaNAfterLoss, init_args: {after: 2}}\n  fine: {}\n"
    (tmp_path / "s.yaml").write_text(suite_text("nan", runs))
    code = main(["run", str(tmp_path / "s.yaml"), "--results", str(tmp_path / "results")])
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == "rdbench: 1 run(s) failed; their record.json says why"
    recs = records(tmp_path / "results", "nan")
    assert recs["fine"]["status"] == "success"
    assert recs["nan"]["status"] == "failed" and recs["nan"]["error"] == "FloatingPointError: loss is nan at step 2"
    assert recs["nan"]["failed_at_step"] == 2


def test_same_run_and_seed_give_identical_metrics(tmp_path):
    (tmp_path / "s.yaml").write_text(suite_text("det", "  a: {}\n"))
    metrics = []
    for attempt in range(2):
        assert main(["run", str(tmp_path / "s.yaml"), "--results", str(tmp_path / f"r{attempt}")]) == 0
        metrics.append(records(tmp_path / f"r{attempt}", "det")["a"]["metrics"])
    assert metrics[0] == metrics[1]


GOOD = suite_text("bad", "  a: {}\n")


def bad_inputs(tmp: Path) -> list[tuple[str, list[str], str, int]]:
    """(what, arguments, expected message pattern, exit code)."""
    corrupt = tmp / "corrupt"
    (corrupt / "images").mkdir(parents=True)
    from rdbench.data.formats.karpathy import write_karpathy_json

    for split in ("train", "val", "test"):
        for i in range(2):
            from PIL import Image

            name = f"port_{split}{i}.png"
            Image.new("RGB", (8, 8), (i * 50, 0, 0)).save(corrupt / "images" / name)
    (corrupt / "images" / "port_val1.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    write_karpathy_json(corrupt / "dataset_corrupt.json", [
        {"filename": f"port_{s}{i}.png", "split": s, "captions": [f"a port {s} {i}"]} for s in ("train", "val", "test") for i in range(2)
    ])
    ckpt = tmp / "tiny.pt"
    from rdbench.testing import tiny_clip

    torch.save(tiny_clip().state_dict(), ckpt)
    (tmp / "afile").write_text("")
    torch.save([1, 2, 3], tmp / "list.pt")
    cases = {
        "malformed YAML": ("suite: bad\nruns: [a\n", r"malformed YAML at line \d+, column \d+", 2),
        "unknown suite key": (GOOD + "extra: 1\n", r"unknown suite key\(s\) extra", 2),
        "unknown component key": (GOOD.replace("adapter/bottleneck", "adapter/bottlenek"), r"did you mean adapter/bottleneck", 2),
        "wrong type": (GOOD.replace("bottleneck: 4", "bottleneck: four"), r"argument bottleneck: Not of type PositiveInt: invalid literal", 2),
        "out of range": (GOOD.replace("bottleneck: 4", "bottleneck: 0"), r"argument bottleneck: .*restriction v>0", 2),
        "pretrained file holding a list": (GOOD.replace(BACKBONE, f"{{name: backbone/open-clip, architecture: ViT-B-32, pretrained: {tmp / 'list.pt'}}}"), r"list.pt: holds a list, not a state dict of named tensors", 1),
        "batch larger than the training split": (GOOD.replace("batch_size: 8,", "batch_size: 100000,"), r"fewer than data.batch_size 100000: no optimiser step would run", 1),
        "undecodable image": (GOOD.replace("batch_size: 8,", "batch_size: 2,").replace("{name: dataset/synthetic-rs, train: 12, val: 6, test: 6}", f"{{name: dataset/captions, root: {corrupt}}}"), r"port_val1.png", 1),
        "checkpoint of another architecture": (GOOD.replace(BACKBONE, f"{{name: backbone/open-clip, architecture: ViT-B-32, pretrained: {ckpt}}}"), r"tiny.pt: checkpoint is not a ViT-B-32 state dict", 1),
    }
    out = []
    for what, (text, pattern, code) in cases.items():
        path = tmp / f"{what.replace(' ', '-')}.yaml"
        path.write_text(text)
        out.append((what, ["run", str(path), "--results", str(tmp / "results")], pattern, code))
    out.append(("missing suite file", ["run", str(tmp / "nope.yaml")], r"nope.yaml: no such file", 2))
    (tmp / "good.yaml").write_text(GOOD)
    out.append(("--only an unknown run", ["run", str(tmp / "good.yaml"), "--only", "zz"], r"--only names unknown run\(s\) zz", 2))
    # Empty selections and suites whose values no run could use (docs/reliability.md).
    out.append(("--only names nothing", ["run", str(tmp / "good.yaml"), "--only", ""], r"--only: names no run", 2))
    out.append(("--seeds names nothing", ["run", str(tmp / "good.yaml"), "--seeds", ","], r"--seeds: names no seed", 2))
    for what, text, pattern in (
        ("duplicated run key", GOOD + "  a: {adapter: adapter/none}\n", r"line \d+: duplicate key 'a'"),
        ("run name with a newline", GOOD.replace("  a: {}", '  "a\\n": {}'), r"run name"),
        ("negative seed", GOOD.replace("runs:", "  seeds: [-1]\nruns:"), r"seed -1 is out of range"),
        ("seed beyond 2**32", GOOD.replace("runs:", "  seeds: [4294967296]\nruns:"), r"seed 4294967296 is out of range"),
        ("negative max_epochs", GOOD.replace("max_epochs: 1,", "max_epochs: -5,"), r"max_epochs must be at least -1, got -5"),
        ("unknown accelerator", GOOD.replace("enable_progress_bar: false", "enable_progress_bar: false, accelerator: qpu"), r"unknown accelerator 'qpu'"),
    ):
        path = tmp / f"{what.replace(' ', '-')}.yaml"
        path.write_text(text)
        out.append((what, ["validate", str(path)], pattern, 2))
    out.append(("results folder not writable", ["run", str(tmp / "good.yaml"), "--results", str(tmp / "afile" / "results")], r"results folder cannot be created", 2))
    return out


#: Cases that build ViT-B-32 (to find that the checkpoint does not fit it): slow on a CPU.
VIT_B_32_CASES = ("checkpoint of another architecture", "pretrained file holding a list")


def test_bad_input_gets_one_clear_line(tmp_path, capsys):
    for what, args, pattern, code in bad_inputs(tmp_path):
        if what not in VIT_B_32_CASES:
            one_clear_line(what, args, pattern, code, capsys)


@pytest.mark.slow  # builds ViT-B-32
def test_a_checkpoint_of_another_architecture_gets_one_clear_line(tmp_path, capsys):
    cases = [case for case in bad_inputs(tmp_path) if case[0] in VIT_B_32_CASES]
    assert len(cases) == len(VIT_B_32_CASES)
    for what, args, pattern, code in cases:
        one_clear_line(what, args, pattern, code, capsys)


def one_clear_line(what: str, args: list[str], pattern: str, code: int, capsys) -> None:
    """Run the CLI with ``args``: exit ``code`` and one line matching ``pattern``, no traceback."""
    got = main(args)
    captured = capsys.readouterr()
    assert got == code, (what, captured.err)
    if code == 2:
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("rdbench: "), (what, captured.err)
        assert re.search(pattern, lines[0]), (what, lines[0])
    else:  # the run failed: its one-line reason is printed and kept in its record
        failed = [ln for ln in captured.out.splitlines() if "FAILED:" in ln]
        assert len(failed) == 1 and re.search(pattern, failed[0]), (what, captured.out[-2000:])
    assert "Traceback" not in captured.err + captured.out, what


def test_a_class_path_must_name_a_component_class(tmp_path, capsys):
    """The attack: a suite that puts ``os.system`` in the adapter slot. It must be refused at
    validate (and run) time with one line, and the command must never run."""
    marker = tmp_path / "pwned"
    cases = {
        "os.system": (f"{{class_path: os.system, init_args: {{command: 'touch {marker}'}}}}", r"names Python's standard library"),
        "a module attribute": ("{class_path: this.s}", r"names Python's standard library"),
        "a function": ("{class_path: rdbench.cli.main}", r"is a function, not a class; an adapter slot takes a subclass of rdbench.adapters.base.Adapter"),
        "another kind": ("{class_path: rdbench.losses.contrastive.InfoNCELoss}", r"an adapter slot takes a subclass of rdbench.adapters.base.Adapter"),
    }
    for what, (spec, pattern) in cases.items():
        path = tmp_path / f"{what.replace(' ', '-')}.yaml"
        path.write_text(GOOD.replace("adapter: {name: adapter/bottleneck, bottleneck: 4}", f"adapter: {spec}"))
        for command in (["validate", str(path)], ["run", str(path), "--results", str(tmp_path / "r")]):
            one_clear_line(what, command, pattern, 2, capsys)
        assert not marker.exists(), what


def test_a_checkpoint_missing_a_trained_tensor_is_refused_by_name():
    """A plugin whose saved tensor names differ from its loaded ones (a parametrization renames
    ``weight`` to ``parametrizations.weight.original``) would keep untrained values after the
    selected checkpoint is reloaded, silently: reloading must restore every trained tensor."""
    from rdbench.bench.common import build_module
    from rdbench.errors import RdbenchError
    from rdbench.testing import tiny_clip

    module = build_module("adapter/bottleneck", tiny_clip())
    trained = {k: v.clone() + 1.0 for k, v in module.trainable_state().items()}
    renamed = dict(trained)
    first = sorted(renamed)[0]
    renamed[first + ".original"] = renamed.pop(first)  # as a parametrization renames a weight
    with pytest.raises(RdbenchError, match=rf"best.ckpt: lacks 1 trained tensor\(s\) of this run \({re.escape(first)}\)"):
        module.load_trained(renamed, "best.ckpt")
    module.load_trained(trained, "best.ckpt")
    assert all(torch.equal(module.trainable_state()[k], v) for k, v in trained.items())


@pytest.mark.slow  # rdbench subprocesses
def test_a_corrupt_last_checkpoint_is_set_aside_and_the_run_starts_fresh(tmp_path):
    """The attack: kill a run (a real SIGKILL), then cut its last.ckpt in half. The rerun must
    not fail forever on that file: it is set aside with one warning naming it, and the run
    trains from the start to a successful record."""
    (tmp_path / "s.yaml").write_text(suite_text("corrupt", "  a: {}\n", epochs=6, train=24))
    results = tmp_path / "results"
    last = kill_after_first_checkpoint(tmp_path, "corrupt", "a")
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    rerun = cli("run", "s.yaml", cwd=tmp_path)
    out, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, out[-3000:]
    warned = [line for line in out.splitlines() if line.startswith("warning:") and "last.ckpt" in line]
    assert len(warned) == 1 and "set aside as last.ckpt.corrupt, training from the start" in warned[0], out[-3000:]
    assert (last.parent / "last.ckpt.corrupt").exists()
    record = records(results, "corrupt")["a"]
    assert record["status"] == "success" and not record.get("resumed_from_step")


@pytest.mark.slow  # rdbench subprocesses and real signals
@pytest.mark.parametrize("signum, code, group", [(signal.SIGTERM, 143, False), (signal.SIGINT, 130, True)])
def test_a_stop_signal_checkpoints_records_interrupted_and_the_rerun_resumes(tmp_path, signum, code, group):
    """The attack: SIGTERM (a scheduler stopping the job) made ``rdbench run`` exit 0 with no
    record; Ctrl-C (SIGINT to the process group) exited 1 like a failed run. Wanted: a checkpoint
    at the step the signal came in, an ``interrupted`` record, one line, exit 128 + signal, and a
    rerun that resumes and finishes the suite."""
    (tmp_path / "s.yaml").write_text(suite_text("sig", "  a: {}\n  b: {}\n", epochs=30, train=24))
    results = tmp_path / "results"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rdbench", "run", "s.yaml"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=group)
    last = results / "sig" / "a" / "seed0" / "checkpoints" / "last.ckpt"
    wait_for(last, proc)
    assert last.exists(), "run a never started training"
    if group:
        os.killpg(proc.pid, signum)  # what Ctrl-C in a terminal does
    else:
        proc.send_signal(signum)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == code, out[-3000:]
    said = [line for line in out.splitlines() if line.startswith("rdbench:")]
    assert len(said) == 1 and re.fullmatch(
        rf"rdbench: interrupted by {signal.Signals(signum).name} during sig/a/seed0 \(step (\d+), checkpointed\); "
        r"the same command resumes", said[0]), out[-3000:]
    step = int(re.search(r"step (\d+)", said[0]).group(1))
    record = json.loads((results / "sig" / "a" / "seed0" / "record.json").read_text())
    assert record["status"] == "interrupted" and record["error"] == f"interrupted by {signal.Signals(signum).name} at step {step}"
    assert torch.load(last, weights_only=True)["global_step"] == step  # the checkpoint is that step's
    assert not (results / "sig" / "b").exists()  # the suite stopped
    rerun = cli("run", "s.yaml", cwd=tmp_path)
    out, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, out[-3000:]
    assert f"resumed from step {step}" in out
    after = records(results, "sig")
    assert after["a"]["status"] == after["b"]["status"] == "success" and after["a"]["resumed_from_step"] == step


def test_obstructed_run_folders_fail_their_runs_in_one_line_and_the_suite_goes_on(tmp_path, capsys):
    """The attack: a file where a run folder should be, and a folder named ``.lock`` in a seed
    folder, aborted the whole suite with tracebacks."""
    (tmp_path / "s.yaml").write_text(suite_text("obs", "  a: {}\n  b: {}\n  c: {}\n"))
    results = tmp_path / "results"
    (results / "obs").mkdir(parents=True)
    (results / "obs" / "a").write_text("not a folder")
    (results / "obs" / "b" / "seed0" / ".lock").mkdir(parents=True)
    assert main(["run", str(tmp_path / "s.yaml"), "--results", str(results)]) == 1
    out, err = capsys.readouterr()
    failed = [line for line in out.splitlines() if "FAILED:" in line]
    assert len(failed) == 2 and all("cannot hold the run's files" in line for line in failed), out
    assert "obs/a" in failed[0] and ".lock" in failed[1]
    assert "Traceback" not in out + err
    assert records(results, "obs")["c"]["status"] == "success"


def test_damaged_caches_are_rebuilt_with_one_warning_never_used(tmp_path, monkeypatch, capsys):
    """The attack: zeroing bytes in the middle of the cached tiny-rs weights, and overwriting the
    decoded test images with noise, gave wrong metrics marked success; a truncated backbone
    failed every later run. Each damaged entry must be rebuilt, with one warning naming it, and
    the run must give the metrics of the clean caches."""
    import numpy as np

    monkeypatch.setenv("RDBENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "s.yaml").write_text(suite_text("cache", "  a: {}\n"))

    def run() -> tuple[dict, str]:
        assert main(["run", str(tmp_path / "s.yaml"), "--results", str(tmp_path / "r"), "--overwrite"]) == 0
        return records(tmp_path / "r", "cache")["a"]["metrics"], capsys.readouterr().err

    clean, err = run()
    assert "warning" not in err
    weights = next((tmp_path / "cache" / "backbones").glob("tiny-rs-*.pt"))
    images = next((tmp_path / "cache" / "images").glob("test-*.npy"))
    data = bytearray(weights.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 2048] = bytes(2048)
    weights.write_bytes(bytes(data))
    array = np.load(images, mmap_mode="r+")
    array[:] = np.random.default_rng(0).integers(0, 256, array.shape, dtype=np.uint8)
    array.flush()
    del array
    again, err = run()
    warned = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warned) == 2, err
    assert any(str(weights) in line and "does not match its checksum" in line for line in warned)
    assert any(str(images) in line and "does not match its checksum" in line for line in warned)
    assert again == clean
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated: rebuilt too, not a failure forever
    third, err = run()
    assert third == clean and sum(line.startswith("warning:") for line in err.splitlines()) == 1
