"""Accelerator figures: ViT-B-32 PEFT (CMAA) and full fine-tuning on one CUDA device.

One command, run from the repository root on a machine with a CUDA GPU::

    python -m rdbench.bench.gpu --append docs/performance.md

For each variant it measures training throughput (images/s) with bf16 autocast and fused
AdamW, the peak memory of a step, and the model FLOP utilisation: the FLOPs of one training step
(forward and backward, counted by ``torch.utils.flop_counter.FlopCounterMode``) times the steps
per second, over the card's peak dense bf16 FLOP/s (looked up from
``torch.cuda.get_device_name()`` for A100, H100 and H200, or given with ``--peak-tflops``).
The two variants are interleaved (after a warm-up of each) and summarised by medians, as on CPU
(``rdbench bench``). The results are appended, with the card's name, to the accelerator section
of ``docs/performance.md`` (replacing its "not yet measured" line). Without CUDA it stops at once
and says so: a CPU run of this script would measure nothing it claims.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch

from rdbench.atomic import write_atomic

VARIANTS = {"CMAA (PEFT)": "adapter/cmaa", "full fine-tuning": "adapter/full"}
#: Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, from NVIDIA's data sheets.
PEAK_BF16_TFLOPS = (("H100 PCIE", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4),
                    ("GH200", 989.4), ("A100", 312.0))
NOT_MEASURED = "Not yet measured on a GPU."


def peak_tflops(device_name: str) -> float | None:
    """The card's dense bf16 peak from its name, or None when the name is not known."""
    name = device_name.upper().replace("-", " ")
    for key, value in PEAK_BF16_TFLOPS:
        if key in name:
            return value
    return None


def build(key: str, device: str, batch: int):
    from rdbench.bench.common import build_module, random_batch
    from rdbench.optim import AdamWOptimizer

    module = build_module(key).to(device).train()
    module.optimizer_factory = AdamWOptimizer(lr=1e-5, schedule="constant", fused=True)
    optimizer, _ = module.optimizer_factory.build([p for p in module.parameters() if p.requires_grad], 1000)
    data = {k: v.to(device) for k, v in random_batch(batch, 224).items()}
    return module, optimizer, data


def step(module, optimizer, batch, device: str) -> None:
    with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16):
        total, _ = module.compute_loss(batch)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()


def count_flops(module, optimizer, batch, device: str) -> int:
    """FLOPs of one training step (forward and backward; the optimiser's are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16):
            total, _ = module.compute_loss(batch)
        total.backward()
    optimizer.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def measure(batch: int, warmup: int, steps: int, rounds: int, device: str = "cuda") -> dict[str, dict[str, float]]:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    built = {name: build(key, device, batch) for name, key in VARIANTS.items()}
    out: dict[str, dict[str, float]] = {name: {"times": []} for name in VARIANTS}
    for name, (module, optimizer, data) in built.items():
        out[name]["flops"] = count_flops(module, optimizer, data, device)
        for _ in range(warmup):
            step(module, optimizer, data, device)
        sync()
    for _ in range(rounds):
        for name, (module, optimizer, data) in built.items():
            sync()
            start = time.perf_counter()
            for _ in range(steps):
                step(module, optimizer, data, device)
            sync()
            out[name]["times"].append((time.perf_counter() - start) / steps)
    for name, (module, optimizer, data) in built.items():
        if device.startswith("cuda"):
            sync()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            step(module, optimizer, data, device)
            sync()
            out[name]["step_memory"] = torch.cuda.max_memory_allocated() - before
        out[name]["step_s"] = statistics.median(out[name]["times"])
        out[name]["images_s"] = batch / out[name]["step_s"]
    return out


def section(results: dict[str, dict[str, float]], card: str, peak: float | None, batch: int, command: str) -> str:
    """The markdown appended to the accelerator section."""
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    lines = [f"### {card} ({when})", "",
             f"Reproduce: `{command}`. ViT-B-32 (random weights), batch {batch}, 224 px, bf16 autocast, fused AdamW, "
             f"InfoNCE; torch {torch.__version__}. Peak dense bf16: "
             + (f"{peak:g} TFLOP/s." if peak else "unknown (pass --peak-tflops for MFU)."), "",
             "| variant | images/s | step (ms) | FLOPs per step | MFU | extra memory of a step |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        achieved = r["flops"] / r["step_s"]
        mfu = f"{100 * achieved / (peak * 1e12):.1f}%" if peak else "n/a"
        memory = f"{r['step_memory'] / 2**30:.2f} GiB" if "step_memory" in r else "n/a"
        lines.append(f"| {name} | {r['images_s']:,.0f} | {1e3 * r['step_s']:.1f} | {r['flops'] / 1e12:.2f} T | {mfu} | {memory} |")
    names = list(results)
    if len(names) == 2:
        a, b = results[names[0]], results[names[1]]
        lines += ["", f"{names[0]} / {names[1]}: step time {a['step_s'] / b['step_s']:.2f}x"
                  + (f", step memory {a['step_memory'] / b['step_memory']:.2f}x" if "step_memory" in a else "") + "."]
    return "\n".join(lines) + "\n"


def append(path: Path, text: str) -> None:
    """Add ``text`` to the accelerator section of ``path`` (dropping the "not yet measured" line)."""
    heading = "## Accelerators"
    doc = path.read_text() if path.is_file() else "# Performance\n"
    if heading not in doc:
        doc = doc.rstrip() + f"\n\n{heading}\n"
    kept = [line for line in doc.rstrip().splitlines() if not line.startswith(NOT_MEASURED)]
    write_atomic(path, "\n".join(kept).rstrip() + "\n\n" + text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--append", metavar="FILE", help="append the results to FILE (docs/performance.md)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round and variant")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, help="the card's peak dense bf16 TFLOP/s (overrides the lookup)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("rdbench.bench.gpu: no CUDA device (torch.cuda.is_available() is False); this benchmark measures GPU "
              "throughput and needs one. On CPU, run `rdbench bench`.", file=sys.stderr)
        return 2
    card = torch.cuda.get_device_name()
    peak = args.peak_tflops or peak_tflops(card)
    results = measure(args.batch, args.warmup, args.steps, args.rounds)
    command = "python -m rdbench.bench.gpu" + (f" --append {args.append}" if args.append else "")
    text = section(results, card, peak, args.batch, command)
    print(text)
    if args.append:
        append(Path(args.append), text)
        print(f"appended to {args.append}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
