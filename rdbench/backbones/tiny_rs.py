"""The embedded backbone ``backbone/tiny-rs``: a small open_clip CLIP pre-trained by rdbench.

No pretrained weights can be downloaded where rdbench must run out of the box, and PEFT on a
randomly initialised model measures nothing. So rdbench pre-trains a tiny open_clip
configuration (``tiny-rs.json``: width 128, 4 blocks per tower, 64 px, 32 tokens) with CLIP's
objective on a synthetic *source* domain (another rendering style, simpler captions) and
fine-tunes on the embedded *target* data, as GeoRSCLIP is pre-trained on RS5M and tuned on
RSICD. The build is deterministic, shows progress, takes a few minutes on 2 CPU cores, and is
cached under ``$RDBENCH_CACHE`` (default ``~/.cache/rdbench``); the SHA-256 of the cached weights
goes into every record that uses them.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rdbench.atomic import atomic_path
from rdbench.cache_files import record_digest, trusted
from rdbench.backbones.base import Backbone, file_sha256, load_state
from rdbench.openclip import create_model, get_tokenizer, open_clip
from rdbench.registry import register

CONFIG_PATH = Path(__file__).with_name("tiny-rs.json")
ARCHITECTURE = "tiny-rs"
#: Bump when the pre-training recipe changes, so that old caches are not reused.
RECIPE_VERSION = 1


def cache_dir() -> Path:
    """``$RDBENCH_CACHE``, else the user's cache folder."""
    root = os.environ.get("RDBENCH_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rdbench"
    return Path(root)


def register_architecture() -> None:
    """Make ``tiny-rs`` an open_clip architecture (idempotent)."""
    if open_clip.get_model_config(ARCHITECTURE) is None:
        open_clip.add_model_config(CONFIG_PATH)


@register("backbone/tiny-rs", example={"steps": 3, "batch_size": 16, "source_images": 32})
class TinyRSBackbone(Backbone):
    """Embedded tiny CLIP (open_clip config ``tiny-rs``), pre-trained by rdbench on a synthetic
    source domain and cached; see the module docstring.

    Each argument is part of the pre-training recipe, whose hash names the cached weights:
    changing one builds and caches another backbone.

    Args:
        steps: Pre-training steps.
        batch_size: Image-caption pairs per pre-training step.
        lr: Peak learning rate of the pre-training's AdamW (warm-up, then cosine decay).
        source_images: Number of synthetic source-domain images generated for pre-training.
        seed: Seed of the source-domain data and of the pre-training.
    """

    def __init__(self, steps: int = 300, batch_size: int = 64, lr: float = 1e-3, source_images: int = 5000, seed: int = 0):
        register_architecture()
        self.steps, self.batch_size, self.lr, self.source_images, self.seed = steps, batch_size, lr, source_images, seed
        config = open_clip.get_model_config(ARCHITECTURE)
        self.image_size = config["vision_cfg"]["image_size"]
        self.mean = tuple(open_clip.OPENAI_DATASET_MEAN)
        self.std = tuple(open_clip.OPENAI_DATASET_STD)
        self._tokenizer = get_tokenizer(ARCHITECTURE)

    @property
    def recipe(self) -> dict[str, Any]:
        from rdbench.data.synthetic import generator as synthetic

        return {
            "recipe": RECIPE_VERSION,
            "generator": getattr(synthetic, "GENERATOR_VERSION", 1),
            "config": json.loads(CONFIG_PATH.read_text()),
            "steps": self.steps,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "source_images": self.source_images,
            "seed": self.seed,
        }

    @property
    def weights_path(self) -> Path:
        digest = hashlib.sha256(json.dumps(self.recipe, sort_keys=True).encode()).hexdigest()[:12]
        return cache_dir() / "backbones" / f"tiny-rs-{digest}.pt"

    def build_model(self) -> nn.Module:
        path = self.weights_path
        if not trusted(path, "tiny-rs weights"):  # absent, damaged or unverifiable: built again
            # on the side of the run's random streams: a run that builds the cache must draw the
            # same numbers afterwards as a run that finds it (same seed, same result)
            with torch.random.fork_rng(devices=[]):
                pretrain(self, path)
        model = create_model(ARCHITECTURE, pretrained=None)
        load_state(model, path, ARCHITECTURE)
        return model

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self._tokenizer(texts)

    def provenance(self) -> dict[str, Any]:
        path = self.weights_path
        return {"architecture": ARCHITECTURE, "pretrained": str(path), "checkpoint": str(path),
                "checksum": file_sha256(path) if path.is_file() else None}


def pretrain(backbone: TinyRSBackbone, path: Path) -> None:
    """CLIP pre-training on the synthetic source domain; writes the state dict atomically."""
    from tqdm.auto import tqdm

    from rdbench.data.synthetic.generator import generate_pairs

    started = time.perf_counter()
    print(f"Building the embedded backbone tiny-rs (once; cached at {path})", flush=True)
    generator = torch.Generator().manual_seed(backbone.seed)
    torch.manual_seed(backbone.seed)
    pairs = generate_pairs(backbone.source_images, domain="source", image_size=backbone.image_size, seed=backbone.seed)
    images = torch.from_numpy(pairs.images).permute(0, 3, 1, 2).contiguous()  # uint8 (N, 3, H, W)
    per_image = [len(c) for c in pairs.captions]
    tokens = backbone.tokenize([c for caps in pairs.captions for c in caps])
    offsets = torch.tensor([0] + per_image[:-1]).cumsum(0)
    counts = torch.tensor(per_image)
    mean = torch.tensor(backbone.mean).view(1, 3, 1, 1)
    std = torch.tensor(backbone.std).view(1, 3, 1, 1)

    model = create_model(ARCHITECTURE, pretrained=None)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=backbone.lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1)
    warmup = max(backbone.steps // 10, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, 0.5 * (1 + torch.cos(torch.tensor(torch.pi * s / backbone.steps)).item()))
    )
    # a bar on a terminal; in a log file (disable=None: not a TTY) nothing but the lines around it
    bar = tqdm(range(backbone.steps), desc="tiny-rs pre-training", unit="step", disable=None)
    for _ in bar:
        idx = torch.randperm(len(images), generator=generator)[: backbone.batch_size]
        pick = offsets[idx] + (torch.rand(len(idx), generator=generator) * counts[idx]).long()
        x = (images[idx].float() / 255 - mean) / std
        img = F.normalize(model.encode_image(x), dim=-1)
        txt = F.normalize(model.encode_text(tokens[pick]), dim=-1)
        logits = model.logit_scale.exp() * img @ txt.t()
        target = torch.arange(len(idx))
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)  # CLIP's cap at a temperature of 100
        bar.set_postfix(loss=f"{loss.item():.3f}")
    with atomic_path(path) as tmp:  # a temporary file beside it, fsynced, renamed into place
        torch.save(model.state_dict(), tmp)
    record_digest(path)
    print(f"tiny-rs ready in {time.perf_counter() - started:.0f}s, sha256 {file_sha256(path)[:16]}", flush=True)
