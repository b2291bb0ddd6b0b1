"""The frozen-feature cache gives what the plain path gives: same heads, same training, same
metrics, with each tower run once per item of a split (rdbench.training.feature_cache)."""

from __future__ import annotations

import json

import pytest
import torch

from rdbench.data.loading.loaders import RetrievalDataModule  # first: importing rdbench makes torchvision importable for lightning
import lightning as L  # noqa: E402  (isort: skip)
from rdbench.adapters.base import image_features, text_features
from rdbench.adapters.basic import BottleneckAdapter, NoAdapter
from rdbench.adapters.competitors import CLIPAdapter, LinearProbeAdapter
from rdbench.data.datasets import SyntheticRSDataset
from rdbench.errors import ConfigError
from rdbench.evaluation import METRIC_NAMES
from rdbench.registry import REGISTRY
from rdbench.testing import build_module, make_batch, tiny_clip, tokenize
from rdbench.training.evaluate import evaluate
from rdbench.training.feature_cache import FeatureBatch, FeatureCacheData

FROZEN = {"none": NoAdapter, "linear-probe": LinearProbeAdapter, "clip-adapter": CLIPAdapter}


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    root = tmp_path_factory.mktemp("fc-data")
    return SyntheticRSDataset(root=str(root), train=8, val=5, test=5, image_size=32).load_table()


def datamodule(table) -> RetrievalDataModule:
    # eval_batch_size 16 splits the 25 captions of a split into two batches (and 5 images into one).
    return RetrievalDataModule(table, tokenize, 32, batch_size=8, eval_batch_size=16, seed=0)


def trainer(epochs: int = 2) -> L.Trainer:
    return L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)


def fit_and_evaluate(make_adapter, table, cached: bool):
    """Two epochs (with validation each epoch) then val and test, plain or cached."""
    torch.manual_seed(0)
    module = build_module(make_adapter(), model=tiny_clip(), feature_cache=cached)
    data = datamodule(table)
    data = FeatureCacheData(data) if cached else data
    t = trainer()
    if any(p.requires_grad for p in module.parameters()):
        t.fit(module, datamodule=data)
    module.evaluations = {split: evaluate(t, module, data, split) for split in ("val", "test")}
    return module


def test_heads_on_cached_features_equal_the_encoders():
    """``head(tower features)`` is the adapter's own encoder, for every adapter that declares it."""
    batch = make_batch()
    from rdbench.resolution.spec import resolve

    built = {e.key: resolve(e.key, "adapter").build() for e in REGISTRY.entries("adapter")}
    declared = {key: adapter for key, adapter in built.items() if adapter.frozen_towers}
    assert set(declared) >= {"adapter/none", "adapter/linear-probe", "adapter/clip-adapter"}
    assert "adapter/full" not in declared and "adapter/cmaa" not in declared
    for key, adapter in declared.items():
        module = build_module(adapter, model=tiny_clip()).eval()
        with torch.no_grad():
            images = module.prepare_images(batch["images"])
            direct = module.adapter.encode_image(module.model, images), module.adapter.encode_text(module.model, batch["tokens"])
            headed = (module.adapter.head_image(module.model, image_features(module.model, images)),
                      module.adapter.head_text(module.model, text_features(module.model, batch["tokens"])))
        for a, b in zip(direct, headed):
            assert torch.equal(a, b), key
        # the towers' projections are back in place afterwards
        assert module.model.visual.proj is not None and module.model.text_projection is not None


@pytest.mark.parametrize("name", sorted(FROZEN))
def test_cached_training_and_metrics_equal_the_plain_path(name, table):
    plain = fit_and_evaluate(FROZEN[name], table, cached=False)
    cached = fit_and_evaluate(FROZEN[name], table, cached=True)
    assert cached.features is not None and plain.features is None
    for split in ("val", "test"):
        for metric in (*METRIC_NAMES, "ties_i2t", "ties_t2i", "n_images", "n_captions"):
            c, p = cached.evaluations[split], plain.evaluations[split]
            assert {**c.metrics, **c.counts}[metric] == {**p.metrics, **p.counts}[metric], (split, metric)
    trained_plain, trained_cached = plain.trainable_state(), cached.trainable_state()
    assert trained_plain.keys() == trained_cached.keys()
    # Equal up to float rounding: the towers ran on batches of 8 (plain training) or 16 (the
    # cached encoding, at eval_batch_size), and matrix kernels round rows of differently shaped
    # batches differently (~1e-7 relative), which a few Adam steps carry to ~1e-5.
    for key, value in trained_plain.items():
        torch.testing.assert_close(trained_cached[key], value, rtol=1e-4, atol=1e-5, msg=key)
    if name != "none":  # it trained: the heads moved away from their initial values
        assert any(not torch.equal(v, build_module(FROZEN[name](), model=tiny_clip()).trainable_state()[k])
                   for k, v in trained_cached.items())


def test_cached_loaders_draw_the_plain_batches(table):
    """Epoch after epoch, the cached loaders yield the plain loaders' batches, as indices."""
    plain, cached = datamodule(table), FeatureCacheData(datamodule(table))
    plain_train, cached_train = plain.train_dataloader(), cached.train_dataloader()
    tokens = plain.split("train").tokens
    for _ in range(3):
        plain_batches, cached_batches = list(plain_train), list(cached_train)
        assert [b["image_ids"].tolist() for b in plain_batches] == [b["image_ids"].tolist() for b in cached_batches]
        for p, c in zip(plain_batches, cached_batches):
            assert torch.equal(p["tokens"], tokens[c["caption_index"]]) and torch.equal(p["labels"], c["labels"])
    for split in ("val", "test"):
        plain_eval, cached_eval = list(plain.eval_dataloader(split)), list(cached.eval_dataloader(split))
        assert [b["index"].tolist() for b in plain_eval] == \
            [b.get("image_index", b.get("caption_index")).tolist() for b in cached_eval]
        assert ["images" in b for b in plain_eval] == ["image_index" in b for b in cached_eval]


def test_towers_run_once_per_item_of_each_split(table):
    """Two epochs, validation each epoch, then val and test again: each split encoded once."""
    torch.manual_seed(0)
    module = build_module(LinearProbeAdapter(), model=tiny_clip(), feature_cache=True)
    calls = {"visual": 0, "text": 0}
    module.model.visual.register_forward_hook(lambda *_: calls.__setitem__("visual", calls["visual"] + 1))
    module.model.transformer.register_forward_hook(lambda *_: calls.__setitem__("text", calls["text"] + 1))
    data = FeatureCacheData(datamodule(table))
    t = trainer(epochs=2)
    t.fit(module, datamodule=data)
    for split in ("val", "test"):
        evaluate(t, module, data, split)
    n_images = sum(len(data.split(s).image_ids) for s in ("train", "val", "test"))
    n_captions = sum(len(data.split(s).captions) for s in ("train", "val", "test"))
    assert module.features.encoded == {"images": n_images, "captions": n_captions}
    batches = lambda n: -(-n // data.eval_batch_size)  # noqa: E731
    assert calls == {  # one tower call per evaluation-sized batch of each split, over the whole run
        "visual": sum(batches(len(data.split(s).image_ids)) for s in ("train", "val", "test")),
        "text": sum(batches(len(data.split(s).captions)) for s in ("train", "val", "test")),
    }
    assert calls["text"] == 3 + 2 + 2  # 40, 25 and 25 captions in batches of 16
    assert set(module.features.splits) == {"train", "val", "test"}


def test_only_declared_adapters_take_the_cached_path():
    assert build_module(BottleneckAdapter(bottleneck=2), feature_cache=True).features is None
    assert build_module(LinearProbeAdapter()).features is None  # off unless asked for
    assert build_module(LinearProbeAdapter(), feature_cache=True).features is not None


def test_a_loss_that_reads_raw_inputs_fails_with_one_clear_line():
    batch = FeatureBatch(caption_index=torch.arange(2))
    with pytest.raises(ConfigError, match="feature_cache"):
        batch["images"]
    with pytest.raises(KeyError):
        batch["other"]


def test_the_runner_opt_in_gives_the_same_record(tmp_path):
    """``data: {feature_cache: true}`` through `rdbench run`: same metrics, flagged in the record."""
    from rdbench.cli import main

    tiny_clip()  # registers the rdbench-test architecture with open_clip
    suite = tmp_path / "fc.yaml"
    suite.write_text(f"""\
suite: fc
defaults:
  backbone: {{name: backbone/open-clip, architecture: rdbench-test}}
  dataset: {{name: dataset/synthetic-rs, train: 8, val: 5, test: 5, image_size: 32, root: {tmp_path / 'data'}}}
  adapter: adapter/clip-adapter
  optimizer: {{name: optimizer/adamw, lr: 1.0e-2}}
  trainer: {{max_epochs: 2, enable_progress_bar: false}}
  data: {{batch_size: 8, eval_batch_size: 16}}
runs:
  plain: {{}}
  cached: {{data: {{batch_size: 8, eval_batch_size: 16, feature_cache: true}}}}
""")
    assert main(["run", str(suite), "--results", str(tmp_path / "results")]) == 0
    recs = {name: json.loads((tmp_path / "results" / "fc" / name / "seed0" / "record.json").read_text())
            for name in ("plain", "cached")}
    assert recs["cached"]["cost"].get("feature_cache") is True and "feature_cache" not in recs["plain"]["cost"]
    assert recs["cached"]["metrics"] == recs["plain"]["metrics"]
    assert recs["cached"]["train"]["steps"] == recs["plain"]["train"]["steps"] > 0
