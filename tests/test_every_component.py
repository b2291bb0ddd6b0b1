"""Registry-driven: every registered key of every kind (built-ins, presets and installed plugins)
is built from the example declared where it is registered and exercised by its kind's contract
on the tiny open_clip model of :mod:`rdbench.testing`. A new component is tested by registering
it with an example (see ``register`` in rdbench/registry.py and docs/plugins.md).

Tests of a component's specific behaviour (its math, its options) live beside it in the other
test files; this one checks that everything the registry lists builds and works.
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import torch

from rdbench.data.table import COLUMNS, SPLITS
from rdbench.registry import KINDS, REGISTRY, Entry
from rdbench.resolution.spec import resolve
from rdbench.testing import build_module, check_adapter, check_loss_term, snapshot, tiny_clip_config, train_steps

DATA_TESTS = str(Path(__file__).resolve().parent / "data")
if DATA_TESTS not in sys.path:  # pytest puts it there only once it has collected a test in it
    sys.path.insert(0, DATA_TESTS)
from datatrees import WRITERS, content  # noqa: E402  (the writers of the five annotation formats)

#: ``"{example_root}"``, ``"{example_root_b}"``, ...: folders the test writes a caption set into.
PLACEHOLDER = re.compile(r"\{(example_root(?:_[a-z0-9]+)?)\}")
#: The annotation format a dataset's example folders are written in: format A (the Karpathy
#: JSON of the RSICD and RSITMD releases, ``dataset_<name>.json``) unless named here.
TREE_FORMATS = {"dataset/captions": "E"}  # open_clip's CSV, what "any other caption set" most often is


def cmaa(**args: Any):
    """adapter/cmaa with an 8-wide bottleneck, built through resolution as a suite line is."""
    return resolve({"name": "adapter/cmaa", "bottleneck": 8, **args}, "adapter").build()


def write_tree(root: Path, entry: Entry, placeholder: str) -> Path:
    """The shared test content (tests/data/datatrees.py) in ``entry``'s format. Folders other
    than the first get their own image ids (dataset/transfer refuses ids in both datasets)."""
    items = content(train_per_class=2)
    prefix = placeholder.removeprefix("example_root").lstrip("_")
    for item in items:
        item.filename = prefix + item.filename
    writer = WRITERS[TREE_FORMATS.get(entry.key, "A")]
    named = "name" in inspect.signature(writer).parameters
    writer(root, items, **({"name": entry.name} if named else {}))
    return root


def fill(value: Any, entry: Entry, tmp_path: Path) -> Any:
    """``value`` with every ``{example_root...}`` placeholder replaced by a written folder, in
    the format of the component whose spec holds it (dataset/transfer's nested datasets)."""
    if isinstance(value, dict):
        if isinstance(value.get("name"), str) and "/" in value["name"]:
            entry = REGISTRY.get(value["name"])
        return {k: fill(v, entry, tmp_path) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, entry, tmp_path) for v in value]
    if isinstance(value, str):
        def folder(match: re.Match) -> str:
            root = tmp_path / match.group(1)
            if not root.exists():
                write_tree(root, entry, match.group(1))
            return str(root)

        return PLACEHOLDER.sub(folder, value)
    return value


def declared_example(entry: Entry) -> dict[str, Any]:
    """The example declared where ``entry`` is registered: ``@register(example=...)``, a preset's
    ``example:``, or a plugin class's ``example`` attribute."""
    if entry.base is None:
        entry.load()  # a plugin's example is read from its class when it loads
    return entry.example


def example_spec(entry: Entry, tmp_path: Path) -> dict[str, Any]:
    return {"name": entry.key, **fill(declared_example(entry), entry, tmp_path)}


def finite(losses: list[float], steps: int = 2) -> bool:
    return len(losses) == steps and all(torch.isfinite(torch.tensor(losses)))


# -- the contract of each kind ---------------------------------------------------------------
def exercise_backbone(spec):
    tiny_clip_config()  # examples may name the tiny test architecture
    backbone = resolve(spec, "backbone").build()
    model = backbone.build_model()
    tokens = backbone.tokenize(["a port with three boats", "green farmland"])
    assert tokens.dtype == torch.long and tokens.shape[0] == 2
    size = backbone.image_size
    mean, std = torch.tensor(backbone.mean).view(1, 3, 1, 1), torch.tensor(backbone.std).view(1, 3, 1, 1)
    images = (torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0)) - mean) / std
    model.eval()
    with torch.no_grad():
        image_emb, text_emb = model.encode_image(images), model.encode_text(tokens)
    assert image_emb.shape == text_emb.shape and image_emb.shape[0] == 2
    assert torch.isfinite(image_emb).all() and torch.isfinite(text_emb).all()
    assert {"architecture", "pretrained", "checksum"} <= set(backbone.provenance())


def exercise_dataset(spec):
    dataset = resolve(spec, "dataset").build()
    table = dataset.load_table()
    assert tuple(table.columns) == COLUMNS and table.height > 0
    splits = set(table["split"].unique().to_list())
    assert splits <= set(SPLITS) and {"train", "test"} <= splits, splits
    assert table.drop("label").null_count().sum_horizontal().item() == 0
    assert table.group_by("image_id").agg(pl.col("split").n_unique())["split"].max() == 1  # one split per image
    assert all(Path(p).is_file() for p in table["path"].unique().to_list())
    assert isinstance(dataset.describe(), dict)


def exercise_transform(spec):
    transform = resolve(spec, "transform").build()
    image = torch.randint(0, 256, (3, 40, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    original = image.clone()
    torch.manual_seed(0)
    for _ in range(3):  # random transforms take different paths
        out = transform(image, 32)
        assert out.dtype == torch.uint8 and tuple(out.shape) == (3, 32, 32)
    assert torch.equal(image, original)  # the cached image is never changed in place


def exercise_adapter(spec):
    check_adapter(lambda: resolve(spec, "adapter").build())


def exercise_attention(spec):
    check_adapter(lambda: cmaa(vision_mixer=spec, text_mixer=spec))


def exercise_interaction(spec):
    check_adapter(lambda: cmaa(interaction=spec))


def exercise_loss(spec):
    check_loss_term(lambda: resolve(spec, "loss").build(), adapter=cmaa())


def exercise_weighting(spec):
    loss = resolve({"name": "loss/composite", "terms": {"contrastive": "loss/infonce", "classification": "loss/classification"},
                    "weighting": spec}, "loss").build()
    module = build_module(cmaa(), loss=loss)
    assert finite(train_steps(module, 2))


def exercise_optimizer(spec):
    module = build_module(cmaa(), optimizer=resolve(spec, "optimizer").build())
    start = snapshot(module)
    assert finite(train_steps(module, 2))
    trainable = [n for n, p in module.named_parameters() if p.requires_grad]
    assert any(not torch.equal(module.get_parameter(n).detach(), start[n]) for n in trainable)
    assert all(torch.equal(p.detach(), start[n]) for n, p in module.named_parameters() if not p.requires_grad)


def exercise_logger(spec):
    """A tracker opens a run in the run's folder, takes metrics and the config, and closes."""
    import tempfile

    from rdbench.suite import RunPlan
    from rdbench.training import trackers

    resolved = resolve(spec, "logger")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "results" / "suite" / "run" / "seed0"
        folder.mkdir(parents=True)
        plan = RunPlan("suite", "run", 0, 0, {})
        made = trackers.make_loggers([resolved], folder, plan, resumed=False, resumed_step=None)
        if resolved.key == trackers.CSV_KEY:  # the run's own log, built by the run itself
            assert made == [] and resolved.cls(**trackers.fill(resolved.args, trackers.run_names(folder, plan))).log_dir.startswith(str(folder))
            return
        [(label, logger)] = made
        [ref] = trackers.start(made, folder, {"suite": "suite", "seed": 0, "components": {"adapter": {"key": "adapter/none"}}})
        assert ref["logger"] == label and ref.get("uri")
        logger.log_metrics({"train/loss": 1.0}, step=1)
        trackers.finish(made, {"test/mR": 50.0, "test@pir/mR": 50.0}, 2, "success")
        assert (folder / trackers.TRACKERS_FILE).is_file()


EXERCISE = {
    "backbone": exercise_backbone,
    "dataset": exercise_dataset,
    "transform": exercise_transform,
    "adapter": exercise_adapter,
    "attention": exercise_attention,
    "interaction": exercise_interaction,
    "loss": exercise_loss,
    "weighting": exercise_weighting,
    "optimizer": exercise_optimizer,
    "logger": exercise_logger,
}


def case(entry: Entry):
    return pytest.param(entry.kind, entry.key, id=entry.key)


def test_every_kind_has_a_contract_check():
    assert tuple(EXERCISE) == KINDS


@pytest.mark.parametrize("kind, key", [case(e) for e in REGISTRY.entries()])
def test_every_component_works_from_its_example(kind, key, tmp_path):
    EXERCISE[kind](example_spec(REGISTRY.get(key), tmp_path))
