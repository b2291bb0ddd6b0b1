"""Cross-modal contrastive terms."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rdbench.losses.base import LossTerm, StepOutputs
from rdbench.registry import register


def gather_batch(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Concatenate each tensor over the DDP ranks, keeping gradients for the local part."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensors
    from torch.distributed.nn.functional import all_gather

    return tuple(torch.cat(all_gather(t) if t.is_floating_point() else _gather_plain(t)) for t in tensors)


def _gather_plain(t: torch.Tensor) -> list[torch.Tensor]:
    import torch.distributed as dist

    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t)
    return out


def positive_mask(image_ids: torch.Tensor) -> torch.Tensor:
    """(B, B) bool: entry (i, j) is true when sample i's image is sample j's image."""
    return image_ids[:, None] == image_ids[None, :]


@register("loss/infonce")
class InfoNCELoss(LossTerm):
    """Symmetric InfoNCE (CLIP's objective) with multi-positive targets by image id.

    The DTCL cross-modal term in docs/method.md ("DTCL"). Logits are cosine similarities times the
    backbone's own temperature (frozen under PEFT, trained under full fine-tuning). A caption
    batch often holds several captions of one image: they are all positives, with the target
    distribution spread evenly over them, so that a duplicate is never pushed away as a negative.
    ``gather`` (DDP) takes the negatives from every rank's batch (gradients flow back through
    the gather, as in open_clip's ``gather_with_grad``); off, each rank uses its own batch.

    Args:
        label_smoothing: Fraction of the uniform distribution mixed into the targets.
        gather: Under DDP, take the negatives from every rank's batch.
    """

    def __init__(self, label_smoothing: float = 0.0, gather: bool = False):
        super().__init__()
        self.label_smoothing, self.gather = label_smoothing, gather

    def forward(self, step: StepOutputs) -> torch.Tensor:
        image_emb, text_emb, image_ids = step.image_emb, step.text_emb, step.image_ids
        if self.gather:
            image_emb, text_emb, image_ids = gather_batch(image_emb, text_emb, image_ids)
        logits = step.logit_scale * image_emb @ text_emb.t()
        targets = positive_mask(image_ids).float()
        targets = targets / targets.sum(dim=1, keepdim=True)
        if self.label_smoothing:
            n = targets.shape[1]
            targets = targets * (1 - self.label_smoothing) + self.label_smoothing / n
        i2t = F.cross_entropy(logits, targets)
        t2i = F.cross_entropy(logits.t(), targets)
        return (i2t + t2i) / 2


def hardest_negative_hinge(sim: torch.Tensor, positive: torch.Tensor, margin: float) -> torch.Tensor:
    """VSE++'s max-of-hinges (Faghri et al., BMVC 2018), both directions.

    For each positive pair (i, j): ``[margin - s(i, j) + max_neg s(i, .)]_+`` over the row and
    ``[margin - s(i, j) + max_neg s(., j)]_+`` over the column, averaged over positive pairs.
    ``positive`` marks every positive pair (captions of one image are never negatives).
    """
    neg_inf = torch.finfo(sim.dtype).min
    hardest_row = sim.masked_fill(positive, neg_inf).amax(dim=1, keepdim=True)
    hardest_col = sim.masked_fill(positive, neg_inf).amax(dim=0, keepdim=True)
    cost = (margin - sim + hardest_row).clamp(min=0) + (margin - sim + hardest_col).clamp(min=0)
    return cost[positive].mean()


@register("loss/vsepp")
class VSEPPLoss(LossTerm):
    """VSE++ hinge with the hardest negative (Faghri et al., BMVC 2018), margin 0.2, on cosine
    similarities; captions of the same image are positives, never negatives.

    Args:
        margin: The hinge's margin on cosine similarities.
    """

    def __init__(self, margin: float = 0.2):
        super().__init__()
        self.margin = margin

    def forward(self, step: StepOutputs) -> torch.Tensor:
        sim = step.image_emb @ step.text_emb.t()
        return hardest_negative_hinge(sim, positive_mask(step.image_ids), self.margin)


@register("loss/hmmc")
class HMMCLoss(LossTerm):
    """HMMC, the loss of PE-RSITR (Yuan et al., TGRS 2023) for MRS-Adapter: the cross-modal VSE++
    hinge with the hardest negative (margin 0.2) plus two intra-modal hinge terms, each between
    an embedding and the same sample's embedding from a second forward pass with dropout
    (``p = 0.2``) on the token embeddings (patch tokens for images, word tokens for text); other
    samples are the negatives. The second pass is a term's request to the module: dropout hooks
    on the towers' input embeddings, removed right after.

    Args:
        margin: The margin of all three hinge terms, on cosine similarities.
        intra_weight: Weight of the two intra-modal terms against the cross-modal one.
        token_dropout: Dropout probability on the token embeddings in the second forward pass.
    """

    def __init__(self, margin: float = 0.2, intra_weight: float = 1.0, token_dropout: float = 0.2):
        super().__init__()
        self.margin, self.intra_weight, self.token_dropout = margin, intra_weight, token_dropout

    def forward(self, step: StepOutputs) -> torch.Tensor:
        positive = positive_mask(step.image_ids)
        cross = hardest_negative_hinge(step.image_emb @ step.text_emb.t(), positive, self.margin)
        img2, txt2 = self._second_pass(step)
        identity = torch.eye(len(step.image_ids), dtype=torch.bool, device=positive.device)
        # Captions of one image in the batch are distinct texts; images repeat, so an image's
        # copies are positives of each other on the image side.
        intra_img = hardest_negative_hinge(step.image_emb @ img2.t(), positive, self.margin)
        intra_txt = hardest_negative_hinge(step.text_emb @ txt2.t(), identity, self.margin)
        return cross + self.intra_weight * (intra_img + intra_txt)

    def _second_pass(self, step: StepOutputs) -> tuple[torch.Tensor, torch.Tensor]:
        model = step.module.model
        drop = lambda _m, _i, out: torch.nn.functional.dropout(out, self.token_dropout, training=True)  # noqa: E731
        hooks = [model.token_embedding.register_forward_hook(drop), model.visual.conv1.register_forward_hook(drop)]
        try:
            return step.module(step.batch["images"], step.batch["tokens"])
        finally:
            for hook in hooks:
                hook.remove()
