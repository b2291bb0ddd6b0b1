"""Evaluate one fixed tiny model on a synthetic split with N processes; write the metrics.

Run as ``python ddp_validate.py OUT.json DEVICES DATA_ROOT``; with DEVICES > 1 Lightning's DDP
launcher re-executes this script once per extra rank, as it does for ``rdbench run``.
"""

import json
import sys

import rdbench  # noqa: F401,I001  (first: torchvision compatibility before Lightning imports it)
import lightning as L
import torch
from rdbench.resolution.spec import resolve
from rdbench.data.datasets import SyntheticRSDataset
from rdbench.data.loading.loaders import RetrievalDataModule
from rdbench.testing import build_module, tokenize
from rdbench.training.evaluate import evaluate

out, devices, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
torch.manual_seed(0)
module = build_module(resolve({"name": "adapter/cmaa", "bottleneck": 8}, "adapter").build())
for p in module.adapter.parameters():  # a fixed, non-trivial adapter: same seed, same weights
    torch.nn.init.normal_(p, std=0.05, generator=torch.Generator().manual_seed(p.numel()))
table = SyntheticRSDataset(root=root, train=4, val=9, test=4, image_size=32).load_table()
data = RetrievalDataModule(table, tokenize, 32, batch_size=4, eval_batch_size=4, seed=0)
trainer = L.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                    use_distributed_sampler=False, logger=False, enable_progress_bar=False, enable_model_summary=False)
result = evaluate(trainer, module, data, "val")
if trainer.is_global_zero:
    with open(out, "w") as handle:
        json.dump({"metrics": {**result.metrics, **result.counts}, "world": trainer.world_size}, handle)
