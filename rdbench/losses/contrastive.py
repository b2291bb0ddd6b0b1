"""Cross-modal contrastive terms."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rdbench.losses.base import LossTerm, StepOutputs
from rdbench.registry import register


def positive_mask(image_ids: torch.Tensor) -> torch.Tensor:
    """(B, B) bool: entry (i, j) is true when sample i's image is sample j's image."""
    return image_ids[:, None] == image_ids[None, :]


@register("loss/infonce")
class InfoNCELoss(LossTerm):
    """Symmetric InfoNCE (CLIP's objective) with multi-positive targets by image id.

    The DTCL cross-modal term in METHOD.md section 3. Logits are cosine similarities times the
    backbone's own temperature (frozen under PEFT, trained under full fine-tuning). A caption
    batch often holds several captions of one image: they are all positives, with the target
    distribution spread evenly over them, so that a duplicate is never pushed away as a negative.
    """

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, step: StepOutputs) -> torch.Tensor:
        logits = step.logit_scale * step.image_emb @ step.text_emb.t()
        targets = positive_mask(step.image_ids).float()
        targets = targets / targets.sum(dim=1, keepdim=True)
        if self.label_smoothing:
            n = targets.shape[1]
            targets = targets * (1 - self.label_smoothing) + self.label_smoothing / n
        i2t = F.cross_entropy(logits, targets)
        t2i = F.cross_entropy(logits.t(), targets)
        return (i2t + t2i) / 2
