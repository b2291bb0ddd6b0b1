"""``loss/cosine-margin``: InfoNCE with an additive cosine margin on the positives (CosFace
style), an example plugin loss term. A loss term subclasses :class:`rdbench.losses.base.LossTerm`
and reads what it needs from the step outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rdbench.losses.base import LossTerm, StepOutputs
from rdbench.losses.contrastive import positive_mask


class CosineMarginLoss(LossTerm):
    """Symmetric InfoNCE where every positive similarity is lowered by ``margin`` first."""

    def __init__(self, margin: float = 0.1):
        super().__init__()
        self.margin = margin

    def forward(self, step: StepOutputs) -> torch.Tensor:
        positive = positive_mask(step.image_ids)
        sim = step.image_emb @ step.text_emb.t() - self.margin * positive.float()
        logits = step.logit_scale * sim
        targets = positive.float() / positive.float().sum(dim=1, keepdim=True)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2
