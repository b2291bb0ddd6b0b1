"""The plugin's own tests, using rdbench's conformance helpers."""

from rdbench.registry import REGISTRY
from rdbench.testing import build_module, check_adapter, train_steps
from rdbench_plugin_example.adapter import GatedMLPAdapter
from rdbench_plugin_example.loss import CosineMarginLoss


def test_adapter_meets_the_contract():
    counts = check_adapter(lambda: GatedMLPAdapter(bottleneck=4))
    assert counts["trainable"] > 0


def test_loss_trains():
    losses = train_steps(build_module(GatedMLPAdapter(bottleneck=4), loss=CosineMarginLoss()), steps=2)
    assert all(loss == loss for loss in losses)


def test_rdbench_finds_the_plugin():
    entry = REGISTRY.get("adapter/gated-mlp")
    assert entry.source == "plugin:rdbench-plugin-example==0.1.0"
    assert entry.load() is GatedMLPAdapter
