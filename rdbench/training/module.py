"""The one LightningModule: a frozen open_clip backbone, whatever adapter, whatever loss.

It receives its components built (never a config object), attaches the adapter, freezes the
backbone, and trains exactly what the adapter declares plus the loss's own parameters (heads,
learned weights). It never asks which adapter or loss it holds: every difference between
methods lives in the components' contract methods.

Evaluation embeds every distinct image once and every caption once (the evaluation loader
yields image batches, then caption batches), then computes the metrics of
:func:`rdbench.evaluation.retrieval_metrics` on the whole split.

Given a :class:`~rdbench.training.feature_cache.FeatureCache` (the assembler hands one in when
the run asks for it and the adapter declares ``frozen_towers``), the towers run once per split
and only the adapter's heads run per step; the module branches on whether it holds a cache,
never on which adapter it holds.

Model selection logs ``val/*`` from the validation loop; the final evaluation is
:func:`rdbench.training.evaluate.evaluate`, which runs the predict loop over a split and returns
the metrics and per-query ranks to its caller.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from rdbench.adapters.base import Adapter
from rdbench.errors import RdbenchError
from rdbench.evaluation import METRIC_NAMES
from rdbench.losses.base import CompositeLoss, StepOutputs
from rdbench.openclip import text_trims_padding, trim_text_padding
from rdbench.optim import Optimizer
from rdbench.training.evaluate import Evaluation, split_evaluation
from rdbench.training.feature_cache import FeatureCache

#: The geometry logged after every validation epoch (the record keeps all of it, once).
DIAGNOSTIC_CURVES = ("modality_gap", "alignment", "uniformity")


class RetrievalModule(L.LightningModule):
    """Contrastive image-text retrieval with parameter-efficient fine-tuning."""

    def __init__(
        self,
        *,
        model: nn.Module,
        adapter: Adapter,
        loss: CompositeLoss,
        optimizer: Optimizer,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        num_classes: int = 0,
        features: FeatureCache | None = None,
    ):
        super().__init__()
        if features is not None and not adapter.frozen_towers:
            raise ValueError(f"{type(adapter).__name__} changes the towers; a frozen-feature cache would skip it")
        self.model, self.adapter, self.loss, self.optimizer_factory = model, adapter, loss, optimizer
        self.num_classes = num_classes  # scene classes of the training split (for loss terms)
        self.embed_dim = int(model.visual.output_dim)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.model.requires_grad_(False)
        self.adapter.attach(self.model)
        for _, param in self.adapter.trainable_parameters(self.model):
            param.requires_grad_(True)
        self.loss.setup(self)
        # Checkpoints keep what trains (and the adapter's buffers), not the frozen backbone:
        # loading them is then partial by design.
        self.strict_loading = False
        self._val_chunks: list[tuple[str, torch.Tensor, torch.Tensor]] = []
        self.features = features
        #: Cut each text batch at its longest caption (the adapter and the backbone both declare
        #: that padding after a caption's end token changes nothing: rdbench.adapters.base).
        self.trim_text = bool(adapter.text_padding_invariant and text_trims_padding(model))
        #: The split the predict loop encodes (set by rdbench.training.evaluate.evaluate).
        self.predict_split = "test"
        #: The validation loop's evaluation after each optimiser step count it ran at: the run's
        #: final validation metrics are those of its selected checkpoint, already computed here.
        self.val_evaluations: dict[int, Evaluation] = {}

    # -- the two towers -------------------------------------------------------------------------
    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> normalised float, on the device (the backbone's mean and std)."""
        return (images.float().div_(255) - self.mean) / self.std

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.adapter.encode_image(self.model, self.prepare_images(images)), dim=-1)

    def embed_texts(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.trim_text:
            tokens = trim_text_padding(tokens)
        return F.normalize(self.adapter.encode_text(self.model, tokens), dim=-1)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed_images(images), self.embed_texts(tokens)

    def embed_image_features(self, features: torch.Tensor) -> torch.Tensor:
        """Cached pre-projection image features -> normalised embeddings (the adapter's head)."""
        return F.normalize(self.adapter.head_image(self.model, features), dim=-1)

    def embed_text_features(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.adapter.head_text(self.model, features), dim=-1)

    def _cache_features(self, split: str) -> None:
        if self.features is not None:
            self.features.ensure(self, split)

    # -- training -------------------------------------------------------------------------------
    def compute_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The total loss of a training batch, and every term and weight by name."""
        return self.loss.evaluate(self.step_outputs(batch))

    def step_outputs(self, batch: dict[str, Any]) -> StepOutputs:
        """What the loss terms see for one training batch (:class:`StepOutputs`): the normalised
        embeddings, the temperature as CLIP applies it (``exp`` of the learned log-scale,
        capped at 100), image ids, scene labels, the batch and this module."""
        if self.features is None:
            image_emb, text_emb = self(batch["images"], batch["tokens"])
        else:  # frozen towers: their cached outputs, only the heads run
            image_feat, text_feat = self.features.pairs("train", batch)
            image_emb, text_emb = self.embed_image_features(image_feat), self.embed_text_features(text_feat)
        return StepOutputs(
            image_emb=image_emb,
            text_emb=text_emb,
            logit_scale=self.model.logit_scale.exp().clamp(max=100.0),
            image_ids=batch["image_ids"],
            labels=batch["labels"],
            batch=batch,
            module=self,
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        total, logs = self.compute_loss(batch)
        if not torch.isfinite(total):
            raise FloatingPointError(f"loss is {total.item()} at step {self.global_step}")
        size = len(batch["image_ids"])  # one per caption, in both the plain and the cached path
        self.log("train/loss", total, prog_bar=True, batch_size=size)
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, batch_size=size)
        return total

    def on_fit_start(self) -> None:
        self._cache_features("train")

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        # Lightning calls this once per optimiser step (after the last micro-batch when it
        # accumulates gradients), unlike on_train_batch_end, which runs after every micro-batch.
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        self.loss.after_optimizer_step(self)

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer, scheduler = self.optimizer_factory.build(params, self.trainer.estimated_stepping_batches)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- evaluation -----------------------------------------------------------------------------
    def embed_eval_batch(self, batch: dict[str, Any], split: str) -> tuple[str, torch.Tensor, torch.Tensor]:
        """One evaluation batch (all images or all captions) -> (kind, item indices, embeddings)."""
        if self.features is not None:
            kind, index, feats = self.features.items(split, batch)
            embed = self.embed_image_features if kind == "images" else self.embed_text_features
            return kind, index, embed(feats)
        if "images" in batch:
            return "images", batch["index"], self.embed_images(batch["images"])
        return "texts", batch["index"], self.embed_texts(batch["tokens"])

    def on_validation_epoch_start(self) -> None:
        self._cache_features("val")
        self._val_chunks = []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._val_chunks.append(self.embed_eval_batch(batch, "val"))

    def on_validation_epoch_end(self) -> None:
        # model selection: the checkpoint callback monitors what is logged here
        split = self.trainer.datamodule.split("val")
        result = split_evaluation(self._val_chunks, split.caption_image, same_caption=split.same_caption)
        metrics = result.metrics
        self._val_chunks = []
        if not self.trainer.sanity_checking:
            self.val_evaluations[self.trainer.global_step] = result
        self.log_dict({f"val/{m}": metrics[m] for m in METRIC_NAMES if m != "mR"})
        # the embeddings' geometry per epoch (rdbench.diagnostics.embedding), for the curves
        self.log_dict({f"diag/val_{k}": v for k, v in result.diagnostics.items() if k in DIAGNOSTIC_CURVES and v is not None})
        self.log("val/mR", metrics["mR"], prog_bar=True)

    def on_predict_epoch_start(self) -> None:
        self._cache_features(self.predict_split)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> tuple[str, torch.Tensor, torch.Tensor]:
        return self.embed_eval_batch(batch, self.predict_split)

    # -- checkpoints ----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep = {name for name, p in self.named_parameters() if p.requires_grad}
        keep |= {f"adapter.{name}" for name, _ in self.adapter.named_buffers()}
        keep |= {f"loss.{name}" for name, _ in self.loss.named_buffers()}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    def load_trained(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Restore what trains from a checkpoint's ``state_dict`` (loading is partial by design:
        the frozen backbone is not in it). Every tensor a checkpoint of this module holds must be
        there: a component that renamed a tensor would otherwise keep its untrained values
        silently, and the run would report an untrained model as the selected one."""
        missing = sorted(set(self.trainable_state()) - set(state))
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise RdbenchError(f"{source}: lacks {len(missing)} trained tensor(s) of this run ({shown}); "
                               "they would stay untrained")
        self.load_state_dict(state, strict=False)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        checkpoint = {"state_dict": self.state_dict()}
        self.on_save_checkpoint(checkpoint)
        return checkpoint["state_dict"]
