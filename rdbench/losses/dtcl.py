"""The terms of RDB's Dual-Task Consistency Loss beyond the contrastive one (docs/method.md, "DTCL").

The paper states only "an adaptive weighted combination of cross-modal, classification, and
exponential moving average consistency constraints"; each term below is one reading, its own
component, so that a suite can switch each term off or swap its reading.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rdbench.losses.base import LossTerm, StepOutputs
from rdbench.registry import register


def _zero(step: StepOutputs) -> torch.Tensor:
    """A zero that keeps the graph (a term with nothing to say this step)."""
    return step.image_emb.sum() * 0.0


@register("loss/classification")
class ClassificationLoss(LossTerm):
    """Scene classification as DTCL's second task: a linear head on the image embedding and one
    on the text embedding (``shared_head`` makes them one), cross-entropy on each, averaged.

    Labels come from the dataset (scene class from the file name or the annotation); samples
    without a label (-1) contribute nothing. The heads are built at ``setup`` from the number of
    classes the dataset reports, and train with the adapter.

    Args:
        shared_head: One linear head for both embeddings instead of one per modality.
        label_smoothing: Label smoothing of each cross-entropy.
    """

    def __init__(self, shared_head: bool = False, label_smoothing: float = 0.0):
        super().__init__()
        self.shared_head, self.label_smoothing = shared_head, label_smoothing
        self.heads = nn.ModuleDict()

    def setup(self, module: Any) -> None:
        classes, dim = int(module.num_classes), int(module.embed_dim)
        if classes < 2:
            raise ValueError("loss/classification needs a dataset with at least two scene classes")
        self.heads["image"] = nn.Linear(dim, classes)
        self.heads["text"] = self.heads["image"] if self.shared_head else nn.Linear(dim, classes)

    def forward(self, step: StepOutputs) -> torch.Tensor:
        known = step.labels >= 0
        if not bool(known.any()):
            return _zero(step)
        labels = step.labels[known]
        losses = [
            F.cross_entropy(self.heads[tower](emb[known]), labels, label_smoothing=self.label_smoothing)
            for tower, emb in (("image", step.image_emb), ("text", step.text_emb))
        ]
        return sum(losses) / 2


class _MeanTeacher(LossTerm):
    """An exponential moving average of the student's trainable parameters (Tarvainen and
    Valpola, 2017), kept as buffers so it never receives a gradient and is checkpointed.

    Args:
        decay: EMA decay of the teacher's weights, in (0, 1); after ``t`` updates the decay used
            is ``min(decay, (1 + t) / (10 + t))``.
    """

    def __init__(self, decay: float = 0.999):
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError("decay must be in (0, 1)")
        self.decay = decay
        self.names: list[str] = []
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def setup(self, module: Any) -> None:
        # Only the backbone's and adapter's trainable parameters: loss heads are not the model.
        self.names = [n for n, p in module.named_parameters() if p.requires_grad and not n.startswith("loss.")]
        params = dict(module.named_parameters())
        for name in self.names:
            self.register_buffer(_buffer(name), params[name].detach().clone())

    def teacher_state(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, _buffer(name)) for name in self.names}

    def current_decay(self) -> float:
        t = int(self.updates)
        return min(self.decay, (1 + t) / (10 + t))

    @torch.no_grad()
    def after_optimizer_step(self, module: Any) -> None:
        decay = self.current_decay()
        params = dict(module.named_parameters())
        for name in self.names:
            getattr(self, _buffer(name)).mul_(decay).add_(params[name].detach(), alpha=1 - decay)
        self.updates += 1

    @torch.no_grad()
    def teacher_embeddings(self, step: StepOutputs) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's embeddings of this batch: the student's forward with the EMA weights."""
        module = step.module
        was_training = module.training
        module.eval()  # the teacher sees no dropout
        try:
            image, text = torch.func.functional_call(
                module, self.teacher_state(), (step.batch["images"], step.batch["tokens"]), strict=False
            )
        finally:
            module.train(was_training)
        return image.detach(), text.detach()


def _buffer(name: str) -> str:
    return "teacher__" + name.replace(".", "__")


@register("loss/ema-consistency")
class EMAConsistencyLoss(_MeanTeacher):
    """EMA consistency, DTCL's third term (mean-teacher reading, docs/method.md, "DTCL"): the student's
    in-batch image-to-text and text-to-image similarity distributions are pulled to the EMA
    teacher's by KL divergence, both directions averaged. Decay 0.999 with the usual warm-up
    ``min(decay, (1 + t) / (10 + t))``. The teacher never receives a gradient.
    """

    def forward(self, step: StepOutputs) -> torch.Tensor:
        t_img, t_txt = self.teacher_embeddings(step)
        scale = step.logit_scale
        student = scale * step.image_emb @ step.text_emb.t()
        teacher = scale * t_img @ t_txt.t()
        i2t = F.kl_div(student.log_softmax(dim=1), teacher.log_softmax(dim=1), log_target=True, reduction="batchmean")
        t2i = F.kl_div(student.t().log_softmax(dim=1), teacher.t().log_softmax(dim=1), log_target=True, reduction="batchmean")
        return (i2t + t2i) / 2


@register("loss/ema-prototype")
class EMAPrototypeLoss(LossTerm):
    """EMA class prototypes, the second reading of DTCL's consistency term: per modality an
    exponential moving average of each scene class's mean embedding; each image embedding is
    classified against the *text* prototypes and each caption against the *image* prototypes
    (cross-entropy on cosine similarity times the backbone's temperature). Prototypes are
    buffers, updated after each step from detached embeddings; unlabelled samples are ignored.

    Args:
        decay: EMA decay of the prototypes, in (0, 1); a class's first batch sets its prototype.
    """

    def __init__(self, decay: float = 0.99):
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError("decay must be in (0, 1)")
        self.decay = decay
        self._last: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def setup(self, module: Any) -> None:
        classes, dim = int(module.num_classes), int(module.embed_dim)
        if classes < 2:
            raise ValueError("loss/ema-prototype needs a dataset with at least two scene classes")
        self.register_buffer("image_prototypes", torch.zeros(classes, dim))
        self.register_buffer("text_prototypes", torch.zeros(classes, dim))
        self.register_buffer("seen", torch.zeros(classes, dtype=torch.bool))

    def forward(self, step: StepOutputs) -> torch.Tensor:
        known = step.labels >= 0
        self._last = (step.image_emb.detach()[known], step.text_emb.detach()[known], step.labels[known])
        ready = self.seen[step.labels.clamp(min=0)] & known
        if not bool(ready.any()):
            return _zero(step)
        labels = step.labels[ready]
        img_logits = step.logit_scale * step.image_emb[ready] @ F.normalize(self.text_prototypes, dim=-1).t()
        txt_logits = step.logit_scale * step.text_emb[ready] @ F.normalize(self.image_prototypes, dim=-1).t()
        unseen = ~self.seen  # classes with no prototype yet are not candidates
        img_logits = img_logits.masked_fill(unseen, float("-inf"))
        txt_logits = txt_logits.masked_fill(unseen, float("-inf"))
        return (F.cross_entropy(img_logits, labels) + F.cross_entropy(txt_logits, labels)) / 2

    @torch.no_grad()
    def after_optimizer_step(self, module: Any) -> None:
        if self._last is None:
            return
        image, text, labels = self._last
        for cls in labels.unique():
            pick = labels == cls
            for protos, emb in ((self.image_prototypes, image), (self.text_prototypes, text)):
                mean = emb[pick].mean(dim=0)
                protos[cls] = mean if not self.seen[cls] else self.decay * protos[cls] + (1 - self.decay) * mean
            self.seen[cls] = True
        self._last = None
