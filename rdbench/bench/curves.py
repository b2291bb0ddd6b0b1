"""How cost grows: a training step against batch and image size, an evaluation against split size.

So a user can predict a run's cost on their data before starting it (docs/performance.md):

* a CMAA training step (InfoNCE, AdamW, fp32) at batch 8 to 64 on the embedded tiny-rs at 64 and
  128 px and on ViT-B-32 at 224 px: median step time, and the peak memory of training measured in
  a fresh child process per point (as the PEFT memory figure, :mod:`rdbench.bench.peft`);
* the evaluation metric from a similarity matrix of 100 to 10,000 images with five captions each,
  with both kernels of :func:`rdbench.evaluation.retrieval_metrics` (NumPy, rdbench's CPU kernel,
  and torch, its accelerator kernel, here on CPU).

The figure's number is the evaluation's growth exponent: the slope of log time against log
similarity-matrix size (1.0 is linear) for the NumPy kernel over the upper half of the sizes,
where fixed costs no longer dominate. The curves themselves are drawn into
``docs/figures/cost-curves.png`` and tabulated in the figure's details.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import torch

from rdbench.bench.common import Figure, Settings, median, random_batch, timed, trainable
from rdbench.evaluation import retrieval_metrics

BATCHES = (8, 16, 32, 64)
SPLITS = (100, 300, 1000, 3000, 10000)
CAPTIONS_PER_IMAGE = 5
#: (label, open_clip architecture, image size) of the step curves
GEOMETRIES = (("tiny-rs 64 px", "tiny-rs", 64), ("tiny-rs 128 px", "tiny-rs", 128), ("ViT-B-32 224 px", "ViT-B-32", 224))
FIGURE_PATH = Path("docs/figures/cost-curves.png")


def cmaa_module(architecture: str, image_size: int):
    from rdbench.backbones.tiny_rs import register_architecture
    from rdbench.bench.common import build_module
    from rdbench.openclip import create_model

    register_architecture()  # the embedded backbone's configuration, known to open_clip

    model = create_model(architecture, pretrained=None, force_image_size=image_size)
    return build_module("adapter/cmaa", model=model).train()


def step_seconds(architecture: str, image_size: int, batch: int, repeats: int) -> float:
    from rdbench.bench.peft import train_step

    module = cmaa_module(architecture, image_size)
    optimizer, _ = module.optimizer_factory.build(trainable(module), 100)
    data = random_batch(batch, image_size, architecture=architecture)  # after the architecture is known
    train_step(module, optimizer, data)  # warm-up
    return median([timed(lambda: train_step(module, optimizer, data)) for _ in range(repeats)])


def memory_child(architecture: str, image_size: int, batch: int) -> dict[str, int]:
    """Run in a fresh process: training memory of two CMAA steps at this geometry."""
    from rdbench.bench.peft import training_memory

    module = cmaa_module(architecture, image_size)  # registers tiny-rs before its tokenizer is asked for
    return training_memory(module, random_batch(batch, image_size, architecture=architecture), steps=2)


def step_memory(architecture: str, image_size: int, batch: int) -> dict[str, int]:
    command = [sys.executable, "-m", "rdbench.bench.curves", architecture, str(image_size), str(batch),
               "--threads", str(torch.get_num_threads())]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory child for {architecture} {image_size} px batch {batch} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def evaluation_seconds(images: int, backend: str, repeats: int = 2) -> float:
    g = torch.Generator().manual_seed(images)
    img = torch.nn.functional.normalize(torch.randn(images, 512, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(img.repeat_interleave(CAPTIONS_PER_IMAGE, 0)
                                        + 1.5 * torch.randn(images * CAPTIONS_PER_IMAGE, 512, generator=g), dim=-1)
    owner = torch.arange(images).repeat_interleave(CAPTIONS_PER_IMAGE)
    sim = img @ txt.t()
    retrieval_metrics(similarity=sim, text_to_image=owner, backend=backend)  # warm-up
    return median([timed(lambda: retrieval_metrics(similarity=sim, text_to_image=owner, backend=backend))
                   for _ in range(repeats)])


def exponent(sizes: list[float], seconds: list[float]) -> float:
    """The least-squares slope of log time against log size."""
    xs, ys = [math.log(s) for s in sizes], [math.log(t) for t in seconds]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def draw(steps: dict, memory: dict, evaluation: dict, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(13, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax_t, ax_m, ax_e = fig.subplots(1, 3)
    for label, points in steps.items():
        batches = sorted(points)
        ax_t.plot(batches, [points[b] for b in batches], marker="o", label=label)
        ax_m.plot(batches, [memory[label][b]["training_bytes"] / 1e9 for b in batches], marker="o", label=label)
    ax_t.set(xscale="log", yscale="log", xlabel="batch size", ylabel="CMAA step time (s)", title="training step")
    ax_m.set(xscale="log", xlabel="batch size", ylabel="training memory (GB)", title="peak training memory")
    for backend, points in evaluation.items():
        sizes = sorted(points)
        ax_e.plot([n * n * CAPTIONS_PER_IMAGE for n in sizes], [points[n] for n in sizes], marker="o", label=backend)
    ax_e.set(xscale="log", yscale="log", xlabel="similarity matrix entries (images x captions)", ylabel="seconds",
             title="evaluation metric")
    for ax in (ax_t, ax_m, ax_e):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    from matplotlib.ticker import NullFormatter

    for ax in (ax_t, ax_m):  # the batch sizes as labels, without log-scale minor labels over them
        ax.set_xticks(list(BATCHES), [str(b) for b in BATCHES])
        ax.xaxis.set_minor_formatter(NullFormatter())
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def figures(settings: Settings, path: Path | None = None) -> list[Figure]:
    if path is None:  # the full bench draws beside docs/performance.md, a quick look in a scratch folder
        import tempfile

        path = Path(tempfile.mkdtemp(prefix="rdbench-bench-")) / FIGURE_PATH.name if settings.quick else FIGURE_PATH
    batches = BATCHES[:2] if settings.quick else BATCHES
    splits = SPLITS[:3] if settings.quick else SPLITS
    geometries = GEOMETRIES[:1] if settings.quick else GEOMETRIES
    repeats = 1 if settings.quick else 2
    memory = {label: {b: step_memory(arch, size, b) for b in batches} for label, arch, size in geometries}
    steps = {label: {b: step_seconds(arch, size, b, repeats) for b in batches} for label, arch, size in geometries}
    evaluation = {backend: {n: evaluation_seconds(n, backend) for n in splits} for backend in ("numpy", "torch")}
    upper = splits[len(splits) // 2:]
    slope = exponent([n * n * CAPTIONS_PER_IMAGE for n in upper], [evaluation["numpy"][n] for n in upper])
    drawn = draw(steps, memory, evaluation, path)
    rows = [f"step, {label}: " + ", ".join(f"batch {b} {steps[label][b]:.3g} s / {memory[label][b]['training_bytes'] / 1e9:.2f} GB"
                                           for b in batches) for label, _, _ in geometries]
    evals = [f"evaluation, {backend} kernel: " + ", ".join(f"{n:,} images {evaluation[backend][n]:.3g} s" for n in splits)
             for backend in evaluation]
    return [Figure(
        "Evaluation cost growth (exponent of time in the similarity matrix's size, NumPy kernel)", slope, "",
        "<= 1.15", slope <= 1.15,
        [f"CMAA step (InfoNCE, AdamW, fp32, random weights; median of {repeats} after a warm-up) and training memory "
         "(peak RSS minus RSS before the first step, a fresh child process per point) against the batch size; "
         f"evaluation from a similarity matrix of n images x {CAPTIONS_PER_IMAGE} n captions, 512-d, both kernels "
         f"(median of 2 after a warm-up); curves in {drawn.as_posix()}",
         *rows, *evals,
         f"the exponent is fitted over {', '.join(f'{n:,}' for n in upper)} images: 1.0 is linear in the matrix's "
         "size; a sort per query (the classic loop) grows faster, by its log factor and its Python loop",
         "to predict a run: steps per epoch x step time at the run's batch and image size, plus one evaluation "
         "of each split per epoch (encoding the split, a forward of every image and caption, dominates the metric)"],
        settings.command, {"steps": steps, "memory": memory, "evaluation": evaluation})]


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="peak-memory child of `rdbench bench` (not for direct use)")
    parser.add_argument("architecture")
    parser.add_argument("image_size", type=int)
    parser.add_argument("batch", type=int)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(json.dumps(memory_child(args.architecture, args.image_size, args.batch)))


if __name__ == "__main__":
    main()
