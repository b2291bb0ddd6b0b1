"""Atomic writes (rdbench.atomic) and atomic checkpoints (AtomicCheckpointIO) with a real Trainer."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest
import yaml

from rdbench import atomic
from rdbench.atomic import atomic_path, replace_file, write_atomic, write_json, write_yaml


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp") or ".tmp" in p.name)


def test_write_atomic_bytes_and_text_create_folders_and_replace(tmp_path):
    target = tmp_path / "a" / "b" / "out.bin"
    write_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    write_atomic(target, "ünïcode\n")
    assert target.read_text(encoding="utf-8") == "ünïcode\n"
    assert leftovers(tmp_path) == []
    # Usual permissions (umask applied), not mkstemp's owner-only 0o600.
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_write_json_and_yaml(tmp_path):
    write_json(tmp_path / "r.json", {"b": 1, "a": [1.5, None], "p": tmp_path})
    text = (tmp_path / "r.json").read_text()
    assert list(json.loads(text)) == ["b", "a", "p"] and text.endswith("\n") and str(tmp_path) in text
    write_yaml(tmp_path / "c.yaml", {"z": "ω", "a": 1})
    text = (tmp_path / "c.yaml").read_text(encoding="utf-8")
    assert text == "z: ω\na: 1\n" and yaml.safe_load(text) == {"z": "ω", "a": 1}


def test_every_step_runs_in_order(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append(("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file"))
        real_fsync(fd)

    def replace(src, dst):
        assert Path(src).parent == Path(dst).parent and Path(src).name.startswith(f".{Path(dst).name}.")
        calls.append("replace")
        real_replace(src, dst)

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc to tell a folder's descriptor from a file's")
    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    write_atomic(tmp_path / "x", "1")
    assert calls == ["fsync-file", "replace", "fsync-dir"]
    calls.clear()
    with atomic_path(tmp_path / "y") as temp:
        temp.write_text("2")
    assert calls == ["fsync-file", "replace", "fsync-dir"] and (tmp_path / "y").read_text() == "2"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "record.json"
    write_atomic(target, "old")

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", broken)
    with pytest.raises(OSError, match="No space"):
        write_atomic(target, "new")
    with pytest.raises(OSError, match="No space"):
        with atomic_path(target) as temp:
            temp.write_text("new")
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_path(target) as temp:
            temp.write_text("half")
            raise RuntimeError("writer failed")
    assert target.read_text() == "old" and leftovers(tmp_path) == []


def test_a_folder_fsync_that_the_platform_refuses_is_ignored(tmp_path, monkeypatch):
    real = os.fsync

    def picky(fd):
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(22, "Invalid argument")
        real(fd)

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc to tell a folder's descriptor from a file's")
    monkeypatch.setattr(atomic.os, "fsync", picky)
    write_atomic(tmp_path / "x", "ok")
    assert (tmp_path / "x").read_text() == "ok"


def test_replace_file_moves_a_finished_file(tmp_path):
    temp = tmp_path / ".last.ckpt.tmp"
    temp.write_bytes(b"state")
    replace_file(temp, tmp_path / "last.ckpt")
    assert (tmp_path / "last.ckpt").read_bytes() == b"state" and not temp.exists()


def test_atomic_is_a_leaf_module():
    tree = ast.parse(Path(atomic.__file__).read_text(encoding="utf-8"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in imported if m == "rdbench" or m.startswith("rdbench.")}


def test_no_other_module_renames_files_itself():
    """Every os.replace / fsync in rdbench is rdbench.atomic's (one recipe, one place)."""
    root = Path(atomic.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        if path == Path(atomic.__file__):
            continue
        text = path.read_text(encoding="utf-8")
        if "os.replace(" in text or "os.fsync(" in text or "os.rename(" in text:
            offenders.append(str(path.relative_to(root)))
    assert offenders == []


# --- checkpoints -------------------------------------------------------------------------------


def _tiny_module():
    import lightning as L
    import torch

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            (x,) = batch
            loss = self.layer(x).pow(2).mean()
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Tiny()


def test_trainer_checkpoints_go_through_atomic_checkpoint_io(tmp_path, monkeypatch):
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader, TensorDataset

    from rdbench.training.checkpoint_io import AtomicCheckpointIO

    renamed = []
    real_replace = os.replace
    monkeypatch.setattr(atomic.os, "replace", lambda src, dst: (renamed.append(Path(dst)), real_replace(src, dst)))
    folder = tmp_path / "checkpoints"
    checkpoint = ModelCheckpoint(dirpath=folder, filename="best", monitor="train_loss", mode="min",
                                 save_top_k=1, save_weights_only=True, every_n_train_steps=1)
    trainer = L.Trainer(max_steps=1, accelerator="cpu", devices=1, plugins=[AtomicCheckpointIO()],
                        callbacks=[checkpoint], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    data = DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=4)
    trainer.fit(_tiny_module(), train_dataloaders=data)
    best = folder / "best.ckpt"
    assert Path(checkpoint.best_model_path) == best and best in renamed
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt"]  # no temporary file left
    state = torch.load(best, map_location="cpu", weights_only=True)
    assert set(state["state_dict"]) == {"layer.weight", "layer.bias"} and state["global_step"] == 1
    # A second save over the same name replaces it whole (ModelCheckpoint does this on improvement).
    trainer.save_checkpoint(best, weights_only=False)
    assert "optimizer_states" in torch.load(best, map_location="cpu", weights_only=True)
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt"]


def test_a_failed_checkpoint_save_keeps_the_previous_one(tmp_path, monkeypatch):
    import torch

    from rdbench.training.checkpoint_io import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    path = tmp_path / "best.ckpt"
    io.save_checkpoint({"step": 1}, path)

    def dies_midway(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04 trunc")
        raise KeyboardInterrupt  # e.g. Ctrl-C, or any error while serialising

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert io.load_checkpoint(path) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt"]
    with pytest.raises(TypeError, match="storage_options"):
        io.save_checkpoint({"step": 3}, path, storage_options={"x": 1})
