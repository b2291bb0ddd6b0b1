"""``rdbench list KEY``: every argument of a component with its type, default and description;
``rdbench list --markdown``: the same as docs/components.md, which must be current."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from rdbench.cli import main
from rdbench.components_reference import markdown_reference, project_entries
from rdbench.describe import UNDOCUMENTED, describe
from rdbench.registry import REGISTRY

ROOT = Path(__file__).resolve().parent.parent


def listing(capsys, *argv: str) -> str:
    assert main(["list", *argv]) == 0
    return capsys.readouterr().out


def argument_line(out: str, name: str) -> str:
    """The line of argument ``name`` in the arguments section (a preset's values come before it)."""
    section = out[out.index("\narguments"):]
    return next(line for line in section.splitlines() if line.startswith(f"  {name}:"))


def test_a_key_shows_every_argument_with_type_default_and_help(capsys):
    out = listing(capsys, "adapter/cmaa")
    assert out.startswith("adapter/cmaa  (builtin)")
    assert "class: rdbench.adapters.cmaa.CMAAdapter" in out
    cls = REGISTRY.get("adapter/cmaa").load()
    for name in list(inspect.signature(cls.__init__).parameters)[1:]:
        assert argument_line(out, name)
    # a component-typed argument: its annotation, its kind, and its default as a key
    assert argument_line(out, "vision_mixer") == "  vision_mixer: Builder[Attention] = attention/diff"
    assert argument_line(out, "text_mixer") == "  text_mixer: Builder[Attention] = attention/hierarchical"
    assert "`rdbench list attention/` lists them" in out
    assert argument_line(out, "bottleneck") == "  bottleneck: PositiveInt = 64"
    assert argument_line(out, "position") == "  position: Literal['parallel', 'sequential'] = parallel"
    assert argument_line(out, "layers") == "  layers: list[int] | None = null"
    assert "The image tower's token mixer" in out  # from the docstring's Args section
    assert UNDOCUMENTED not in out


def test_second_map_is_listed_where_it_lives(capsys):
    out = listing(capsys, "attention/diff")
    assert argument_line(out, "second_map") == "  second_map: bool = true"
    assert "Subtract the second softmax map" in out
    # arguments the host adapter passes are marked as such
    assert argument_line(out, "dim") == "  dim: int = required  (passed by the host)"


def test_a_preset_shows_its_base_and_its_values(capsys):
    out = listing(capsys, "adapter/adaptformer")
    assert "adapter/adaptformer is a preset of adapter/bottleneck (builtin)" in out
    assert "class: rdbench.adapters.basic.BottleneckAdapter" in out
    assert "values of adapter/adaptformer" in out and "\n  bottleneck: 5\n" in out
    assert argument_line(out, "bottleneck") == "  bottleneck: PositiveInt = 5  (set by adapter/adaptformer; class default 64)"
    assert argument_line(out, "dropout") == "  dropout: float = 0.0"  # not set by the preset


def test_registered_defaults_and_nested_preset_values_are_shown(capsys):
    out = listing(capsys, "loss/composite")
    assert argument_line(out, "weighting") == (
        "  weighting: Weighting | None = weighting/fixed  (registered default; class default null)")
    assert argument_line(out, "terms") == "  terms: dict[str, LossTerm] = required"
    out = listing(capsys, "loss/dtcl")
    assert "loss/dtcl is a preset of loss/composite" in out
    assert argument_line(out, "weighting").startswith("  weighting: Weighting | None = weighting/uncertainty  (set by loss/dtcl")
    assert "consistency: loss/ema-consistency" in argument_line(out, "terms")


def test_an_argument_without_a_description_says_so():
    class Undocumented:
        """A class whose docstring describes no argument."""

        def __init__(self, width: int = 3):
            self.width = width

    from rdbench.describe import argument_help, render_text

    helps, note = argument_help(Undocumented)
    assert "width" not in helps and note is None
    desc = describe("adapter/none")
    assert desc.arguments == [] and "arguments: none" in render_text(desc)


def test_an_unknown_key_is_one_line_with_suggestions(capsys):
    assert main(["list", "adapter/cmma"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "unknown component key 'adapter/cmma'" in err and "did you mean adapter/cmaa" in err


def test_patterns_keep_the_table(capsys):
    out = listing(capsys, "adapter/")
    assert out.splitlines()[0].split() == ["key", "source", "description"]
    assert "adapter/cmaa" in out and "vision_mixer" not in out
    out = listing(capsys, "attention/hier")  # a filter, not a key: both hierarchical readings
    assert "attention/hierarchical-local-global" in out and "arguments" not in out


def test_every_builtin_argument_has_a_description():
    """The built-ins document their arguments."""
    missing = [
        f"{entry.key}.{arg.name}"
        for entry in project_entries()
        for arg in describe(entry.key).arguments if not arg.help
    ]
    assert not missing, missing


def test_components_doc_is_current():
    committed = (ROOT / "docs" / "components.md").read_text()
    generated = markdown_reference(project_entries())
    assert committed == generated, (
        "docs/components.md is out of date: RDBENCH_DISABLE_PLUGINS=1 rdbench list --markdown > docs/components.md")


def test_markdown_of_one_key(capsys):
    out = listing(capsys, "--markdown", "attention/diff")
    assert "### `attention/diff`" in out and "| `second_map` | `bool` | `true` |" in out
    assert "### `attention/mhsa`" not in out


@pytest.mark.parametrize("key", ["adapter/cmaa", "loss/dtcl", "transform/compose"])
def test_markdown_lists_component_arguments(key):
    text = markdown_reference([REGISTRY.get(key)])
    assert f"### `{key}`" in text and "| argument | type | default | description |" in text


@pytest.fixture
def plugin_entry():
    """A plugin entry registered for one test, as entry-point discovery would add it."""
    from rdbench.adapters.base import Adapter
    from rdbench.registry import Entry

    class ScaledBottleneckAdapter(Adapter):
        """A bottleneck MLP parallel to every block's MLP.

        Args:
            bottleneck: Hidden width of each branch.
        """

        def __init__(self, bottleneck: int = 16, gain: float = 1.0):
            super().__init__()
            self.bottleneck, self.gain = bottleneck, gain

    def broken():
        raise ImportError("No module named 'missing_dep'")

    added = [
        REGISTRY.add(Entry(key="adapter/scaled-test", source="plugin:my-adapter==0.1.0", description="plugin my_adapter:X",
                           tags=("plugin",), loader=lambda: ScaledBottleneckAdapter)),
        REGISTRY.add(Entry(key="adapter/broken-test", source="plugin:broken==0.1", description="plugin broken:X",
                           tags=("plugin",), loader=broken)),
    ]
    yield added
    for entry in added:
        REGISTRY._entries.pop(entry.key, None)


def test_a_plugin_key_shows_its_arguments(capsys, plugin_entry):
    out = listing(capsys, "adapter/scaled-test")
    assert out.startswith("adapter/scaled-test  (plugin:my-adapter==0.1.0)  [plugin]")
    assert argument_line(out, "bottleneck") == "  bottleneck: int = 16"
    assert "Hidden width of each branch." in out
    assert argument_line(out, "gain") == "  gain: float = 1.0"
    assert f"      {UNDOCUMENTED}" in out  # gain has no description: said, not invented
    assert main(["list", "adapter/broken-test"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "plugin adapter/broken-test from broken==0.1 failed to import" in err


def baselines_arguments() -> dict[str, str]:
    rows = {}
    for line in (ROOT / "docs" / "baselines.md").read_text().splitlines():
        parts = [p.strip() for p in line.strip().strip("|").split("|")]
        if len(parts) == 2 and parts[0].startswith("`adapter/"):
            rows[parts[0].strip("`")] = parts[1]
    return rows


def test_baselines_doc_lists_each_methods_arguments():
    rows = baselines_arguments()
    assert {"adapter/lora", "adapter/cmaa", "adapter/adaptformer", "adapter/none"} <= set(rows)
    for key, text in rows.items():
        expected = ", ".join(f"`{a.name}: {a.default}`" for a in describe(key).arguments) or "none"
        assert text == expected, key


def test_params_on_the_embedded_architecture(capsys):
    """``--params tiny-rs`` must make the embedded architecture known before building it (it
    once failed with "Model config for 'tiny-rs' not found")."""
    from rdbench.cli import main

    assert main(["list", "adapter/symmetric", "--params", "tiny-rs"]) == 0
    out = capsys.readouterr().out
    assert "132,608" in out  # two towers x 4 blocks x (128 x 64 x 2 + 64 + 128), r = 64 default
