"""The one assembler: a resolved run becomes the LightningModule and the data that feed it.

Every path that trains or measures rdbench goes through :func:`assemble`: the runner, the
conformance helpers of :mod:`rdbench.testing` and ``rdbench bench``. It seeds the run, builds the
components in a fixed order (so one seed gives one set of initial weights, whoever assembles),
counts the backbone before an adapter attaches, and hands the module a frozen-feature cache
when the run asks for one and the adapter allows it (docs/performance.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning as L

from rdbench.data.loading.loaders import RetrievalDataModule
from rdbench.resolution.run import ResolvedRun
from rdbench.training.feature_cache import FeatureCache, FeatureCacheData
from rdbench.training.module import RetrievalModule


@dataclass
class Assembly:
    """What :func:`assemble` built for one run."""

    module: RetrievalModule
    data: RetrievalDataModule | FeatureCacheData | None  # None when assembled without data
    backbone: Any  # the built backbone component (tokenizer, provenance)
    dataset: Any | None  # the built dataset component
    table: Any | None  # its caption table (polars)
    backbone_params: int  # the backbone's own parameters, before an adapter adds any

    @property
    def trainable_params(self) -> int:
        return sum(p.numel() for p in self.module.parameters() if p.requires_grad)

    @property
    def adapter_params(self) -> int:
        return sum(p.numel() for _, p in self.module.adapter.trainable_parameters(self.module.model))

    @property
    def total_params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())


def assemble(run: ResolvedRun, *, with_data: bool = True, num_classes: int = 0) -> Assembly:
    """Build ``run``'s module and (unless ``with_data`` is false) its data module.

    Without data (conformance tests, benchmarks on synthetic batches) the dataset is not built
    and the loss terms see ``num_classes`` scene classes.
    """
    L.seed_everything(run.seed, workers=True, verbose=False)
    c = run.components
    backbone = c["backbone"].build()
    model = backbone.build_model()
    backbone_params = sum(p.numel() for p in model.parameters())
    dataset = table = data = None
    if with_data:
        dataset = c["dataset"].build()
        table = dataset.load_table()
        data = RetrievalDataModule(
            table, backbone.tokenize, backbone.image_size, run.data.batch_size, run.data.eval_batch_size,
            run.data.num_workers, run.seed,
            train_transform=c["train_transform"].build() if "train_transform" in c else None,
            eval_transform=c["eval_transform"].build() if "eval_transform" in c else None,
        )
        num_classes = len(data.classes)
    adapter = c["adapter"].build()
    loss = c["loss"].build()
    features = FeatureCache() if run.data.feature_cache and adapter.frozen_towers else None
    module = RetrievalModule(
        model=model, adapter=adapter, loss=loss, optimizer=c["optimizer"].build(),
        mean=backbone.mean, std=backbone.std, num_classes=num_classes, features=features,
    )
    if features is not None and data is not None:  # towers once per split, heads per step
        data = FeatureCacheData(data)
    return Assembly(module, data, backbone, dataset, table, backbone_params)
