"""The fast paths that `rdbench bench` measures give the plain paths' results (no timing here):
the vectorised metric equals the argsort loop, a frozen backbone gets no gradient and no optimiser
slot, evaluation encodes every item once; plus the report and rdbench.bench.gpu plumbing."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rdbench.data.loading.loaders import RetrievalDataModule  # first: importing rdbench makes torchvision importable for lightning
import lightning as L  # noqa: E402  (isort: skip)
from rdbench.bench import report  # noqa: E402
from rdbench.bench.common import Figure, Settings, build_module  # noqa: E402
from rdbench.bench.peft import frozen_check, train_step  # noqa: E402
from rdbench.bench.retrieval import argsort_recalls  # noqa: E402
from rdbench.evaluation import METRIC_NAMES, retrieval_metrics  # noqa: E402
from rdbench.testing import make_batch, tiny_clip, tokenize  # noqa: E402
from rdbench.training.evaluate import evaluate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _trainer(**kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, **kwargs)


# -- evaluation --------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_metric_equals_the_argsort_loop(seed):
    """On scores without ties: same recalls and same ranks, whatever the captions per image."""
    g = torch.Generator().manual_seed(seed)
    n = 40
    per = torch.randint(1, 7, (n,), generator=g)  # 1 to 6 captions per image
    owner = torch.repeat_interleave(torch.arange(n), per)[torch.randperm(int(per.sum()), generator=g)]
    images = torch.randn(n, 16, generator=g)
    texts = images[owner] + 2.0 * torch.randn(len(owner), 16, generator=g)
    sim = images @ texts.t()
    ranks: dict[str, torch.Tensor] = {}
    ours = retrieval_metrics(similarity=sim, text_to_image=owner, ranks=ranks)
    assert ours["ties_i2t"] == 0 and ours["ties_t2i"] == 0
    classic, r_i2t, r_t2i = argsort_recalls(sim.numpy(), owner.numpy())
    assert 0 < classic["mR"] < 100
    assert {k: ours[k] for k in METRIC_NAMES} == classic
    assert np.array_equal(ranks["i2t"].numpy(), r_i2t) and np.array_equal(ranks["t2i"].numpy(), r_t2i)
    accelerator_ranks: dict[str, torch.Tensor] = {}
    accelerator = retrieval_metrics(similarity=sim, text_to_image=owner, ranks=accelerator_ranks, backend="torch")
    assert {k: accelerator[k] for k in METRIC_NAMES} == classic
    assert np.array_equal(accelerator_ranks["i2t"].numpy(), r_i2t) and np.array_equal(accelerator_ranks["t2i"].numpy(), r_t2i)


def test_evaluation_encodes_each_item_once(tmp_path):
    """A real trainer.validate: one image-tower call per image batch, one text-tower call per
    caption batch, every image and every distinct caption through its tower exactly once, each
    text batch cut at its longest caption; the metrics equal those of every caption encoded
    padded, in table order."""
    from rdbench.adapters.basic import NoAdapter
    from rdbench.data.datasets import SyntheticRSDataset
    from rdbench.testing import build_module as tiny_module

    table = SyntheticRSDataset(root=str(tmp_path / "data"), train=4, val=7, test=3, image_size=32).load_table()
    data = RetrievalDataModule(table, tokenize, 32, batch_size=4, eval_batch_size=4, seed=0)
    module = tiny_module(NoAdapter(), model=tiny_clip())
    seen = {"visual_calls": 0, "text_calls": 0, "images": 0, "captions": 0, "tokens": 0}

    def count(calls: str, items: str):
        def hook(_module, inputs, _output):
            seen[calls] += 1
            seen[items] += len(inputs[0])
            if items == "captions":
                seen["tokens"] += inputs[0].numel()
        return hook

    module.model.visual.register_forward_hook(count("visual_calls", "images"))
    module.model.token_embedding.register_forward_hook(count("text_calls", "captions"))
    result = evaluate(_trainer(), module, data, "val")
    split = data.split("val")
    n_images, n_captions = len(split.image_ids), len(split.captions)
    distinct = len(set(map(tuple, split.tokens.tolist())))
    assert (n_images, n_captions) == (7, 35) and 0 < distinct < n_captions  # the synthetic captions repeat
    assert sorted(split.caption_order) == sorted(set(split.same_caption.tolist()))
    assert seen == {"visual_calls": 2, "text_calls": -(-distinct // 4), "images": n_images, "captions": distinct,
                    "tokens": seen["tokens"]}
    order = split.caption_order
    cut = sum(len(b) * int(split.tokens[b].ne(0).any(0).nonzero().max() + 1) for b in (order[k : k + 4] for k in range(0, distinct, 4)))
    assert seen["tokens"] == cut < distinct * split.tokens.shape[1]  # each batch cut at its longest caption
    assert result.counts["n_images"] == n_images and result.counts["n_captions"] == n_captions
    # the plain path: every caption, padded, in table order
    module.trim_text = False
    plain = RetrievalDataModule(table, tokenize, 32, batch_size=4, eval_batch_size=4, seed=0)
    plain.split("val").__dict__["caption_order"] = list(range(n_captions))
    plain.split("val").__dict__["same_caption"] = torch.arange(n_captions)
    reference = evaluate(_trainer(), module, plain, "val")
    assert reference.metrics == result.metrics and reference.counts == result.counts


# -- a frozen backbone -------------------------------------------------------------------------
def test_frozen_backbone_has_no_grad_and_is_not_optimised():
    """CMAA in a real Lightning fit: right after each backward no frozen backbone tensor holds a
    gradient, and the Trainer's optimiser holds exactly the declared parameters."""
    module = build_module("adapter/cmaa", tiny_clip())
    declared = {id(p) for _, p in module.adapter.trainable_parameters(module.model)}
    frozen = [p for p in module.model.parameters() if id(p) not in declared]
    assert frozen and declared
    after_backward: list[int] = []

    class Watch(L.Callback):
        def on_after_backward(self, trainer, pl_module) -> None:
            after_backward.append(sum(p.grad is not None for p in frozen))
            assert any(p.grad is not None for p in pl_module.adapter.parameters())

    batch = make_batch(8)
    loader = torch.utils.data.DataLoader([batch] * 2, batch_size=None)
    trainer = _trainer(max_steps=2, callbacks=[Watch()])
    trainer.fit(module, train_dataloaders=loader)
    assert after_backward == [0, 0]
    optimised = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimised == declared | {id(p) for p in module.loss.parameters() if p.requires_grad}
    assert not optimised & {id(p) for p in frozen}
    # the bench's own check agrees (used for the reported figure)
    optimizer, _ = module.optimizer_factory.build([p for p in module.parameters() if p.requires_grad], 2)
    train_step(module, optimizer, batch)
    check = frozen_check(module, optimizer)
    assert check["frozen_with_grad"] == check["frozen_in_optimizer"] == check["frozen_requires_grad"] == 0
    assert check["trainable_params"] == sum(p.numel() for p in module.adapter.parameters())


def test_full_fine_tuning_is_not_frozen():
    module = build_module("adapter/full", tiny_clip())
    optimizer, _ = module.optimizer_factory.build([p for p in module.parameters() if p.requires_grad], 2)
    train_step(module, optimizer, make_batch(8))
    check = frozen_check(module, optimizer)
    assert check["backbone_params"] == 0 and check["trainable_params"] == sum(p.numel() for p in module.model.parameters())


# -- the report --------------------------------------------------------------------------------
def _figures() -> list[Figure]:
    return [Figure("A ratio", 0.5, "x", "<= 0.65", True, ["detail one"]),
            Figure("Another", 3.0, "x faster", ">= 20", False, ["detail two"], "rdbench bench --quick")]


def test_fold_friendly_attention_is_exact_for_full_fine_tuning_and_lays_out_frozen_inputs():
    """The layout hook every rdbench model carries: with trainable weights (full fine-tuning)
    outputs and gradients are bitwise those of the plain open_clip model; with a frozen backbone
    the self-attention input reaches nn.MultiheadAttention sequence-first in memory (so its
    in-projection is one folded product) and the embeddings agree to float rounding."""
    from rdbench.openclip import open_clip
    from rdbench.testing import TEST_ARCHITECTURE

    hooked = tiny_clip()  # every model rdbench creates carries the hook
    plain = open_clip.create_model(TEST_ARCHITECTURE, pretrained=None)  # open_clip's own, without it
    plain.load_state_dict(hooked.state_dict())
    images, tokens = torch.randn(3, 3, 32, 32), tokenize(["a plane", "two white buildings", "a river"])
    a, b = plain.encode_image(images) + plain.encode_text(tokens).sum(), hooked.encode_image(images) + hooked.encode_text(tokens).sum()
    assert torch.equal(a, b)
    a.sum().backward()
    b.sum().backward()
    for (name, p), q in zip(plain.named_parameters(), hooked.parameters()):
        assert (p.grad is None and q.grad is None) or torch.equal(p.grad, q.grad), name

    seen = []
    attn = next(m for m in hooked.modules() if isinstance(m, torch.nn.MultiheadAttention))
    attn.register_forward_pre_hook(lambda m, args: seen.append(args[0].transpose(0, 1).is_contiguous()))
    for module in (plain, hooked):
        module.requires_grad_(False)
    x = images.clone().requires_grad_(True)  # as after a trainable adapter: the input needs a gradient
    frozen_plain, frozen_hooked = plain.encode_image(x), hooked.encode_image(x)
    assert seen == [True]
    torch.testing.assert_close(frozen_hooked, frozen_plain, rtol=1e-5, atol=1e-6)


def test_report_renders_targets_and_keeps_the_gpu_section(tmp_path):
    context = {"started": "today", "elapsed_s": 60.0, "machine": "a CPU", "load_start": "1.0", "load_end": "2.0"}
    settings = Settings.make(quick=False)
    text = report.render(_figures(), context, settings)
    assert text.startswith("# Performance") and "side by side in one process" in text
    assert "| A ratio | 0.5 x | <= 0.65 | yes |" in text and "| Another | 3 x faster | >= 20 | **no** |" in text
    assert "does not hold here: measured 3 x faster" in text
    assert "Reproduce: `rdbench bench --quick`." in text
    assert "Not yet measured on a GPU" in text
    path = tmp_path / "performance.md"
    report.write(path, text)
    assert report.existing_gpu_section(path) is None  # the placeholder is regenerated, not kept
    gpu = load_gpu_script()
    gpu.append(path, "### NVIDIA H100 80GB HBM3 (today)\n\n| variant | images/s |\n")
    appended = path.read_text()
    assert "Not yet measured on a GPU" not in appended and "### NVIDIA H100 80GB HBM3" in appended
    kept = report.existing_gpu_section(path)
    assert kept.startswith("## Accelerators") and "H100" in kept
    again = report.render(_figures(), context, settings, kept)
    assert again.count("## Accelerators") == 1 and "### NVIDIA H100 80GB HBM3" in again
    assert settings.command == "rdbench bench" and Settings.make(True, threads=1).command == "rdbench bench --quick --threads 1"


def test_bench_command_rejects_unknown_figures(capsys):
    from rdbench.cli import main

    assert main(["bench", "--only", "nonsense"]) == 2
    assert "unknown figure" in capsys.readouterr().err


# -- rdbench.bench.gpu -------------------------------------------------------------------------
def load_gpu_script():
    return importlib.import_module("rdbench.bench.gpu")


@pytest.mark.slow  # a subprocess that imports torch
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_gpu_bench_fails_clearly_without_cuda(tmp_path):
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n")
    done = subprocess.run([sys.executable, "-m", "rdbench.bench.gpu", "--append", str(doc)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 2
    assert "no CUDA device" in done.stderr and "Traceback" not in done.stderr
    assert doc.read_text() == "# Performance\n"


def test_gpu_bench_peak_lookup_and_flop_count():
    gpu = load_gpu_script()
    assert gpu.peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert gpu.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu.peak_tflops("NVIDIA H200") == 989.4
    assert gpu.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert gpu.peak_tflops("Some Other Card") is None
    # FLOPs of one step, counted on CPU with the tiny model (the counter is device independent)
    module = build_module("adapter/cmaa", tiny_clip())
    optimizer, _ = module.optimizer_factory.build([p for p in module.parameters() if p.requires_grad], 2)
    flops = gpu.count_flops(module, optimizer, make_batch(8), "cpu")
    assert flops > 0
    results = {"CMAA (PEFT)": {"flops": flops, "step_s": 0.5, "images_s": 16.0},
               "full fine-tuning": {"flops": 2 * flops, "step_s": 1.0, "images_s": 8.0}}
    text = gpu.section(results, "NVIDIA H100 80GB HBM3", 989.4, 8, "python -m rdbench.bench.gpu")
    assert text.startswith("### NVIDIA H100 80GB HBM3") and "| CMAA (PEFT) |" in text and "step time 0.50x" in text


@pytest.mark.slow
def test_quick_bench_writes_every_figure(tmp_path):
    """`rdbench bench --quick` end to end (ViT-B-32: several minutes on 2 CPU cores)."""
    from rdbench.cli import main

    out = tmp_path / "performance.md"
    assert main(["bench", "--quick", "--output", str(out)]) == 0
    text = out.read_text()
    for name in ("PEFT step time", "RDB step time", "PEFT peak training memory", "Frozen backbone",
                 "Framework overhead, ViT-B-32", "Diagnostics cost, ViT-B-32", "Evaluation metric", "Frozen-feature cache",
                 "Data loading", "Evaluation cost growth"):
        assert name in text, name
    assert "Not yet measured on a GPU" in text


def test_the_committed_report_is_the_generated_one():
    """docs/performance.md carries the method header of rdbench.bench.report, every figure, and
    says plainly when no GPU has measured it yet."""
    text = (ROOT / "docs" / "performance.md").read_text()
    assert text.startswith(report.HEADER)
    for name in ("PEFT step time", "RDB step time", "PEFT peak training memory", "Frozen backbone under CMAA",
                 "Framework overhead, ViT-B-32", "Diagnostics cost, ViT-B-32", "Evaluation metric, RSICD test geometry", "Frozen-feature cache",
                 "Data loading", "Evaluation cost growth"):
        assert f"### {name}" in text, name
    gpu = text[text.index(report.GPU_HEADING):]
    assert "Not yet measured on a GPU" in gpu or "\n### " in gpu


def test_the_peft_bound_counts_the_models_own_products():
    """bound.py on the tiny model, against the products counted by hand: 2 blocks per tower of
    width 32, 17 image tokens (4 x 4 patches and the class token), text tokens up to the longest
    caption, batch 6."""
    from rdbench.bench.bound import peft_bound, product_flops, step_products
    from rdbench.openclip import trim_text_padding
    from rdbench.testing import make_batch, tiny_clip

    batch = make_batch(6)
    flops = product_flops(tiny_clip(), batch)
    length = trim_text_padding(batch["tokens"]).shape[1]  # the text tower runs up to the longest caption
    assert length < 16
    rows = {"image": 6 * 17, "text": 6 * length}
    per_token = 2 * (3 + 1 + 4 + 4) * 32 * 32  # in-projection, out-projection, MLP up and down
    assert flops["linear"] == 2 * per_token * (rows["image"] + rows["text"])
    assert flops["attention"] == 2 * 4 * 32 * (rows["image"] * 17 + rows["text"] * length)
    assert flops["patch"] == 2 * (6 * 32 * 4 * 4) * (3 * 8 * 8)
    products = step_products(flops)
    assert products["full"] == 3 * flops["linear"] + 3 * flops["attention"] + 2 * flops["patch"]
    assert products["peft"] == 2 * flops["linear"] + 3 * flops["attention"] + flops["patch"]
    assert peft_bound(flops, 0.1) == pytest.approx(0.9 * products["ratio"])


def test_time_by_kind_sorts_a_real_step():
    """The profile behind the PEFT figure: a CMAA step on the tiny model has matrix products,
    attention kernels and an optimiser, and the kinds add up to the profiled operators' time."""
    from rdbench.bench.bound import KINDS, REST, time_by_kind
    from rdbench.bench.peft import profile_line, train_step
    from rdbench.testing import make_batch

    module = build_module("adapter/cmaa", tiny_clip()).train()
    optimizer, _ = module.optimizer_factory.build([p for p in module.parameters() if p.requires_grad], 10)
    batch = make_batch(6)
    train_step(module, optimizer, batch)
    kinds = time_by_kind(lambda: train_step(module, optimizer, batch))
    assert list(kinds) == [k for k, _ in KINDS] + [REST]
    assert kinds["matrix products"] > 0 and kinds["attention kernels"] > 0 and kinds["optimiser"] > 0
    line = profile_line({"full": kinds, "peft": kinds}, 0.667)
    assert "the matrix products take 1.00 of full fine-tuning's time (the bound counts 0.667" in line


def test_side_by_side_counts_trainings_and_equal_metrics(tmp_path):
    """Two results folders: a reused selection candidate is not a training; equal and differing
    metrics are counted."""
    from rdbench.bench.side_by_side import compare
    from rdbench.results.record import Record

    def record(folder, run, seed, mR, reused=False):
        rec = Record(suite="s", run=run, run_index=0, seed=seed, status="success",
                     started_at="2026-01-01T00:00:00+00:00", finished_at="2026-01-01T00:10:00+00:00",
                     metrics={"val/mR": mR, "test/mR": mR + 1}, cost={"backbone_params": 1},
                     selection={"monitor": "val/mR", **({"trained_in": "select/c0/seed0"} if reused else {})})
        path = folder / "s" / run / f"seed{seed}"
        path.mkdir(parents=True)
        (path / "record.json").write_text(json.dumps(rec.to_json()))

    for folder, second in ((tmp_path / "a", 2.0), (tmp_path / "b", 2.5)):
        record(folder, "x", 0, 1.0, reused=True)
        record(folder, "x", 1, second)
        record(folder, "y", 0, 3.0)
    broken = tmp_path / "a" / "s" / "z" / "seed0"
    broken.mkdir(parents=True)
    (broken / "record.json").write_text("{")  # a record cut short: counted, never compared
    lines = compare(tmp_path / "a", tmp_path / "b", wall=(100.0, 50.0))
    assert lines[0] == "before: 2 trainings (3 records, 1 not successful) in 100 s: 72.0 trainings per hour"
    assert lines[2] == "after / before: 2.00x trainings per hour"
    assert lines[3] == "metrics of the 3 records in both: 4 of 6 equal, largest difference 0.5000"
