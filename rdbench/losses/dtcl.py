"""The terms of RDB's Dual-Task Consistency Loss beyond the contrastive one (docs/method.md, "DTCL").

The paper states only "an adaptive weighted combination of cross-modal, classification, and
exponential moving average consistency constraints"; each term below is one reading, its own
component, so that a suite can switch each term off or swap its reading.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rdbench.losses.base import LossTerm, StepOutputs, total_optimizer_steps
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


#: The teacher's half-life as a fraction of the run's optimiser steps unless told otherwise.
DEFAULT_HALF_LIFE_RATIO = 0.05
#: The shortest half-life ``half_life_ratio`` gives, in optimiser steps.
MIN_HALF_LIFE = 5.0


class _MeanTeacher(LossTerm):
    """An exponential moving average of the student's trainable parameters (Tarvainen and
    Valpola, 2017), kept as buffers so it never receives a gradient and is checkpointed. It is
    updated once per optimiser step (``after_optimizer_step``), ``teacher <- d teacher + (1 - d)
    student``, with ``d = 0.5 ** (1 / half_life)``: after ``half_life`` steps the teacher has
    moved half-way to a student that stood still.

    The half-life is relative to the run by default: 5 % of its optimiser steps
    (``half_life_ratio`` 0.05), at least 5 steps. Why: the usual constant decays (0.99, 0.999)
    have half-lives of 69 and 693 steps, set for runs of tens of thousands of steps; in a
    600-step run 0.999 leaves the teacher at about the initial model for the whole run. With
    5 %, the teacher averages the students of roughly the last 7 % of the run (an EMA's mean
    age is ``half_life / ln 2``): an ensemble of recent students, as in the mean teacher,
    whatever the run's length; the floor keeps some averaging in runs of under 100 steps. There
    is no bias-correction warm-up, and the former ``min(decay, (1 + t) / (10 + t))`` cap is
    gone: the teacher starts at the student's starting point (the pre-trained backbone with
    identity adapters), not a random initialisation to forget quickly, and the consistency
    ramp-up already mutes the term while the teacher is near that start.

    The run's length is ``total_steps`` if given, else the Trainer's
    ``estimated_stepping_batches`` while one is fitting, else 600 (about a run on the embedded
    default: unit tests and :func:`rdbench.testing.train_steps`, which have no Trainer).

    Args:
        half_life_ratio: The teacher's half-life as a fraction of the run's optimiser steps, in
            (0, 1], at least 5 steps; the default (0.05) when neither ``half_life`` nor
            ``decay`` is given.
        half_life: The teacher's half-life in optimiser steps (an absolute alternative).
        decay: A constant EMA decay per optimiser step, in (0, 1) (the classic alternative).
        total_steps: The run's total optimiser steps for the ratios; ``None`` reads the
            Trainer's estimate (600 without a Trainer).
    """

    def __init__(self, half_life_ratio: float | None = None, half_life: float | None = None,
                 decay: float | None = None, total_steps: int | None = None):
        super().__init__()
        given = [n for n, v in (("half_life_ratio", half_life_ratio), ("half_life", half_life), ("decay", decay)) if v is not None]
        if len(given) > 1:
            raise ValueError(f"give one of half_life_ratio, half_life and decay, not {' and '.join(given)}")
        if not given:
            half_life_ratio = DEFAULT_HALF_LIFE_RATIO
        if decay is not None and not 0.0 < decay < 1.0:
            raise ValueError("decay must be in (0, 1)")
        if half_life is not None and not half_life > 0:
            raise ValueError("half_life must be positive (optimiser steps)")
        if half_life_ratio is not None and not 0.0 < half_life_ratio <= 1.0:
            raise ValueError("half_life_ratio must be in (0, 1]")
        if total_steps is not None and total_steps < 1:
            raise ValueError("total_steps must be at least 1")
        self.half_life_ratio, self.half_life, self.decay, self.total_steps = half_life_ratio, half_life, decay, total_steps
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

    def run_length(self, module: Any = None) -> int:
        """The run's total optimiser steps (see the class docstring)."""
        return self.total_steps if self.total_steps is not None else total_optimizer_steps(module)

    def half_life_steps(self, module: Any = None) -> float:
        """The teacher's half-life in optimiser steps."""
        if self.decay is not None:
            return math.log(0.5) / math.log(self.decay)
        if self.half_life is not None:
            return float(self.half_life)
        return max(self.half_life_ratio * self.run_length(module), MIN_HALF_LIFE)

    def current_decay(self, module: Any = None) -> float:
        """The EMA decay of the next update."""
        return self.decay if self.decay is not None else 0.5 ** (1.0 / self.half_life_steps(module))

    def diagnostics(self, module: Any) -> dict[str, float]:
        return {"ema_decay": self.current_decay(module)}

    @torch.no_grad()
    def after_optimizer_step(self, module: Any) -> None:
        decay = self.current_decay(module)
        params = dict(module.named_parameters())
        teacher = [getattr(self, _buffer(name)) for name in self.names]
        # one multi-tensor call per operation instead of two per tensor: the same
        # element-wise arithmetic (teacher * d + student * (1 - d)), so the same numbers
        torch._foreach_mul_(teacher, decay)
        torch._foreach_add_(teacher, [params[name].detach() for name in self.names], alpha=1 - decay)
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


def sigmoid_rampup(progress: float) -> float:
    """``exp(-5 (1 - t)^2)`` at ``t = progress`` clipped to [0, 1] (Laine and Aila, 2017)."""
    t = min(max(progress, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


@register("loss/ema-consistency")
class EMAConsistencyLoss(_MeanTeacher):
    """EMA consistency, DTCL's third term (mean-teacher reading, docs/method.md, "DTCL"): the student's
    in-batch image-to-text and text-to-image similarity distributions are pulled to the EMA
    teacher's by KL divergence, both directions averaged. The teacher never receives a gradient.

    The term's contribution is ramped up over the first ``rampup_ratio`` of the run's optimiser
    steps by the sigmoid ``exp(-5 (1 - t)^2)`` of temporal ensembling and the mean teacher
    (Laine and Aila, 2017; Tarvainen and Valpola, 2017), ``t`` the fraction of the ramp done
    (the term's ``factor``, applied by the composite after the weighting, so a learned weighting
    cannot undo it). Why: early on the teacher is close to the initial model and its targets are
    no better than the student's; the ramp lets the contrastive and classification terms move
    the student first. 0.2 gives the first fifth of the run, about the share both papers ramp
    over, and leaves most of a short run at full weight. The logs carry ``ema_decay/<term>``
    and ``ramp/<term>``; ``loss/<term>`` is the KL before the ramp.

    Args:
        rampup_ratio: Fraction of the run's optimiser steps over which the term's factor rises
            from exp(-5) to 1, in [0, 1]; 0 switches the ramp off.
    """

    def __init__(self, half_life_ratio: float | None = None, half_life: float | None = None,
                 decay: float | None = None, total_steps: int | None = None, rampup_ratio: float = 0.2):
        super().__init__(half_life_ratio=half_life_ratio, half_life=half_life, decay=decay, total_steps=total_steps)
        if not 0.0 <= rampup_ratio <= 1.0:
            raise ValueError("rampup_ratio must be in [0, 1]")
        self.rampup_ratio = rampup_ratio

    def factor(self, module: Any) -> float:
        if self.rampup_ratio == 0:
            return 1.0
        ramp_steps = max(self.rampup_ratio * self.run_length(module), 1.0)
        return sigmoid_rampup(int(self.updates) / ramp_steps)

    def diagnostics(self, module: Any) -> dict[str, float]:
        return {**super().diagnostics(module), "ramp": self.factor(module)}

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
    buffers, updated once per optimiser step from the detached embeddings of every micro-batch
    of that step (all of them under gradient accumulation); unlabelled samples are ignored.

    Args:
        decay: EMA decay of the prototypes per optimiser step, in (0, 1); a class's first step
            sets its prototype.
    """

    def __init__(self, decay: float = 0.99):
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError("decay must be in (0, 1)")
        self.decay = decay
        self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def setup(self, module: Any) -> None:
        classes, dim = int(module.num_classes), int(module.embed_dim)
        if classes < 2:
            raise ValueError("loss/ema-prototype needs a dataset with at least two scene classes")
        self.register_buffer("image_prototypes", torch.zeros(classes, dim))
        self.register_buffer("text_prototypes", torch.zeros(classes, dim))
        self.register_buffer("seen", torch.zeros(classes, dtype=torch.bool))

    def forward(self, step: StepOutputs) -> torch.Tensor:
        known = step.labels >= 0
        if self.training:  # this micro-batch's share of the next update
            self._pending.append((step.image_emb.detach()[known], step.text_emb.detach()[known], step.labels[known]))
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
        if not self._pending:
            return
        image, text, labels = (torch.cat(parts) for parts in zip(*self._pending))
        self._pending = []
        for cls in labels.unique():
            pick = labels == cls
            for protos, emb in ((self.image_prototypes, image), (self.text_prototypes, text)):
                mean = emb[pick].mean(dim=0)
                protos[cls] = mean if not self.seen[cls] else self.decay * protos[cls] + (1 - self.decay) * mean
            self.seen[cls] = True
