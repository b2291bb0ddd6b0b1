"""The frozen-feature cache (per-epoch speed-up) and the data loader (is it off the critical path?).

Both read a real dataset through the real loaders: the embedded synthetic dataset written to a
temporary folder, decoded and resized once to 224 px into the decoded-image cache of
:mod:`rdbench.data.loading.cache` (a temporary ``$RDBENCH_CACHE``, so the user's cache is untouched) and
memory-mapped by :class:`~rdbench.data.loading.loaders.RetrievalDataModule`, as a suite run does.

* Feature cache: CLIP-Adapter on ViT-B-32 trained by a real Lightning Trainer, plain (towers
  every step) and cached (:mod:`rdbench.training.feature_cache`), in interleaved fits of two
  epochs; the second epoch of each fit is timed (``on_train_epoch_start`` to ``_end``), and the
  one-off encoding of the split is timed on its own. Both modules validate before training
  (same weights: the metrics must be identical) and after (reported with the weights' drift).
* Data: samples per second of the train DataLoader (as the runner builds it, no workers)
  iterating whole epochs, against the samples per second of the PEFT (CMAA) training step.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from pathlib import Path

from rdbench.bench.common import Figure, Settings, build_module, clip_model, median, timed


@contextlib.contextmanager
def bench_dataset(train_images: int, val_images: int):
    """A synthetic dataset on disk and a private image cache, for the duration of the block."""
    from rdbench.data.datasets import SyntheticRSDataset

    saved = os.environ.get("RDBENCH_CACHE")
    with tempfile.TemporaryDirectory(prefix="rdbench-bench-data-") as tmp:
        os.environ["RDBENCH_CACHE"] = str(Path(tmp) / "cache")
        try:
            yield SyntheticRSDataset(root=str(Path(tmp) / "data"), train=train_images, val=val_images,
                                     test=val_images, image_size=64).load_table()
        finally:
            if saved is None:
                os.environ.pop("RDBENCH_CACHE", None)
            else:
                os.environ["RDBENCH_CACHE"] = saved


def datamodule(table, settings: Settings):
    from rdbench.data.loading.loaders import RetrievalDataModule
    from rdbench.openclip import open_clip
    from rdbench.transforms import ResizeTransform

    return RetrievalDataModule(table, open_clip.get_tokenizer("ViT-B-32"), settings.image_size, settings.batch,
                               settings.batch, 0, 0, eval_transform=ResizeTransform())


def _trainer(**kwargs):
    import lightning as L

    return L.Trainer(accelerator="cpu", devices=1, precision="32-true", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **kwargs)


def _fit_epochs(module, data, epochs: int) -> list[float]:
    import lightning as L

    times, start = [], []

    class EpochClock(L.Callback):
        def on_train_epoch_start(self, *_args) -> None:
            start.append(time.perf_counter())

        def on_train_epoch_end(self, *_args) -> None:
            times.append(time.perf_counter() - start[-1])

    _trainer(max_epochs=epochs, limit_val_batches=0, callbacks=[EpochClock()]).fit(module, datamodule=data, weights_only=True)
    return times


def feature_agreement(cached, plain_data) -> float:
    """Largest difference, relative to the largest feature, between the towers' outputs on the
    first training batch of the plain path (towers in training mode, as plain training runs
    them) and the cached features that the cached path trains on."""
    import torch

    from rdbench.adapters.base import image_features, text_features
    from rdbench.data.loading.order import split_items

    loader = plain_data.train_dataloader()
    indices = next(iter(loader.batch_sampler))
    batch = loader.dataset.__getitems__(indices)
    feats, model = cached.features.splits["train"], cached.model
    was = cached.training
    cached.train()
    with torch.no_grad():
        image = image_features(model, cached.prepare_images(batch["images"]))
        text = text_features(model, batch["tokens"])
    cached.train(was)
    rel = lambda a, b: float((a - b).abs().max() / b.abs().max())  # noqa: E731
    return max(rel(image, feats.image[batch["image_ids"]]), rel(text, feats.text[split_items(indices)[0]]))


def feature_cache_figure(table, settings: Settings, adapter: str = "adapter/clip-adapter", rounds: int = 2) -> Figure:
    from rdbench.evaluation import METRIC_NAMES
    from rdbench.training.evaluate import evaluate
    from rdbench.training.feature_cache import FeatureCacheData

    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    plain = build_module(adapter, clip_model(seed=0), lr=1e-3)
    cached = build_module(adapter, clip_model(seed=0), feature_cache=True, lr=1e-3)
    plain_data, cached_data = datamodule(table, settings), FeatureCacheData(datamodule(table, settings))
    pairs = (("plain", plain, plain_data), ("cached", cached, cached_data))

    def validate() -> dict[str, dict[str, float]]:
        out = {}
        for name, module, data in pairs:
            result = evaluate(_trainer(), module, data, "val")
            values = {**result.metrics, **result.counts}
            out[name] = {m: values[m] for m in (*METRIC_NAMES, "ties_i2t", "ties_t2i")}
        return out

    before = validate()  # same weights: the two evaluation paths must agree exactly
    samples: dict[str, list[float]] = {"plain": [], "cached": []}
    for _ in range(rounds):  # epoch 1 of each fit warms up; epoch 2 is timed
        samples["plain"].append(_fit_epochs(plain, plain_data, 2)[-1])
        samples["cached"].append(_fit_epochs(cached, cached_data, 2)[-1])
    cached.features.splits.pop("train")
    encode = timed(lambda: cached.features.ensure(cached, "train"))
    after = validate()
    agreement = feature_agreement(cached, plain_data)
    same = before["plain"] == before["cached"]
    drift = max(float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))
                for a, b in zip(cached.trainable_state().values(), plain.trainable_state().values()))
    p, c = median(samples["plain"]), median(samples["cached"])
    train = plain_data.split("train")
    steps = len(train.captions) // settings.batch
    return Figure(
        "Frozen-feature cache, per training epoch (towers every step / cached towers)", p / c, "x faster", ">= 10",
        p / c >= 10 and same and agreement < 1e-4 and after["plain"] == after["cached"],
        [f"{adapter} on ViT-B-32 (random weights), {len(train.image_ids)} train images x 5 captions, batch {settings.batch} "
         f"({steps} steps per epoch), {settings.image_size} px, fp32, real Lightning Trainer",
         f"median of {rounds} interleaved fits, second epoch of each: plain {p:.2f} s, cached {c * 1e3:.1f} ms",
         f"one-off encoding of the train split with the frozen towers: {encode:.2f} s "
         f"({encode / p:.2f} plain epochs), paid once per split and run",
         f"validation metrics before training (same weights, both evaluation paths): "
         f"{'identical' if same else 'DIFFERENT'} (mR {before['plain']['mR']:.2f} and {before['cached']['mR']:.2f})",
         f"training inputs: the cached features equal the towers' outputs on a plain training batch to {agreement:.1e} "
         "(largest difference relative to the largest feature: float rounding of differently composed batches)",
         f"after the {2 * rounds} training epochs of each: validation mR {after['plain']['mR']:.2f} plain, "
         f"{after['cached']['mR']:.2f} cached"
         + ("" if after["plain"] == after["cached"] else
            f" (DIFFERENT; the trained heads differ by up to {drift:.1e} of their largest weight)"),
         "tests/test_feature_cache.py checks identical metrics after training, on the tiny model, for adapter/none, "
         "linear-probe and clip-adapter",
         "turn it on per run with `data: {feature_cache: true}` (off by default: results unchanged)"],
        settings.command, {"plain_s": p, "cached_s": c, "encode_s": encode, "metrics_equal": same, "drift": drift,
                                            "agreement": agreement})


def data_figure(table, settings: Settings, train_step_s: float, min_seconds: float = 3.0) -> Figure:
    data = datamodule(table, settings)
    loader = data.train_dataloader()
    next(iter(loader))  # warm-up: the cache's pages in memory, the first batch built
    samples, epochs, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds or epochs < 3:
        for batch in loader:
            samples += len(batch["image_ids"])
            batch["images"][:, :, ::16, ::16].float().mean()  # touch the batch, cheaply
        epochs += 1
    loader_rate = samples / (time.perf_counter() - start)
    step_rate = settings.batch / train_step_s
    cache = "the decoded-image cache of rdbench.data.loading.cache (memory-mapped uint8 arrays)"
    return Figure(
        "Data loading, train DataLoader throughput / PEFT training step throughput", loader_rate / step_rate, "x",
        ">= 5", loader_rate / step_rate >= 5,
        [f"loader over {cache}, batch {settings.batch}, {settings.image_size} px, no workers (the default), "
         f"{epochs} whole epochs of {len(data.split('train').captions)} captions: {loader_rate:,.0f} samples/s",
         f"training step (CMAA on ViT-B-32, median from the PEFT figure): {step_rate:.2f} samples/s"],
        settings.command, {"loader_samples_s": loader_rate, "step_samples_s": step_rate})


def figures(settings: Settings, train_step_s: float) -> list[Figure]:
    train_images = 4 if settings.quick else 13  # two steps per epoch at batch 8 / 32
    with bench_dataset(train_images, 4) as table:
        return [feature_cache_figure(table, settings), data_figure(table, settings, train_step_s)]
