"""The registry: three sources, collisions, near-miss messages, listing."""

from __future__ import annotations

import pytest

from rdbench.cli import main
from rdbench.errors import RegistryError
from rdbench.registry import REGISTRY, Entry, Registry


def test_builtins_presets_and_kinds_are_listed():
    keys = {e.key for e in REGISTRY.entries()}
    assert {"adapter/none", "adapter/full", "adapter/bottleneck", "loss/infonce", "backbone/tiny-rs", "dataset/synthetic-rs"} <= keys
    assert all(e.source == "builtin" for e in REGISTRY.entries() if e.key == "adapter/full")


def test_unknown_key_suggests_the_nearest_name():
    with pytest.raises(RegistryError, match=r"did you mean adapter/bottleneck"):
        REGISTRY.get("adapter/botleneck")
    with pytest.raises(RegistryError, match=r"did you mean adapter/bottleneck"):
        REGISTRY.get("botleneck", kind="adapter")
    with pytest.raises(RegistryError, match="kind must be one of"):
        REGISTRY.get("adaptor/none")


def test_duplicate_key_names_both_sources():
    reg = Registry()
    reg.add(Entry(key="adapter/x", source="builtin", target=int))
    with pytest.raises(RegistryError, match=r"adapter/x is registered twice: by builtin and by plugin:pkg==1.0"):
        reg.add(Entry(key="adapter/x", source="plugin:pkg==1.0", loader=lambda: int))


def test_preset_files_register_with_their_path_and_description(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "tiny-bottleneck.yaml").write_text(
        "# a preset\nbase: adapter/bottleneck\ndescription: A narrow bottleneck.\ntags: [test]\nargs: {bottleneck: 4}\n"
    )
    reg = Registry()
    reg._loaded_external = True  # only this folder, not the built-ins
    reg.load_presets(tmp_path)
    entry = reg.get("adapter/tiny-bottleneck")
    assert entry.is_preset and entry.base == "adapter/bottleneck" and entry.args == {"bottleneck": 4}
    assert entry.source.startswith("preset:") and entry.source.endswith("tiny-bottleneck.yaml")
    assert entry.description == "A narrow bottleneck." and entry.tags == ("test",)


def test_malformed_preset_names_the_file(tmp_path):
    folder = tmp_path / "loss"
    folder.mkdir()
    (folder / "bad.yaml").write_text("base: loss/infonce\nargs: [1, 2]\n")
    reg = Registry()
    reg._loaded_external = True
    with pytest.raises(RegistryError, match=r"bad.yaml: `args` must be a mapping"):
        reg.load_presets(tmp_path)


def test_plugin_import_failure_is_one_line_naming_the_plugin():
    def boom():
        raise ImportError("No module named 'missing_dep'")

    entry = Entry(key="adapter/broken", source="plugin:broken-pkg==0.1", loader=boom)
    with pytest.raises(RegistryError, match=r"plugin adapter/broken from broken-pkg==0.1 failed to import: ImportError"):
        entry.load()


def test_list_command_filters(capsys):
    assert main(["list", "adapter/"]) == 0
    out = capsys.readouterr().out
    assert "adapter/bottleneck" in out and "builtin" in out and "loss/infonce" not in out
    assert main(["list", "no-such-thing"]) == 2
    assert "no component key matches" in capsys.readouterr().err
