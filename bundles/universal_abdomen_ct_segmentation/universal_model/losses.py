"""Loss for partially labelled data: BCE-with-logits + soft Dice, only over each sample's labelled classes.

Targets come from :class:`~universal_model.transforms.LabelToChannelsd`: ``[B, K, *spatial]`` with 0/1 in
labelled channels and -1 in channels the sample's source dataset does not annotate. A (sample, class) pair
is used only when its channel holds no negative value, so unlabelled classes receive exactly zero gradient
("masked back-propagation"). Dice is computed over the whole 3D crop of each (sample, class) — not per slice,
which in the original code made empty slices contribute a constant loss of 1 and stalled the Dice term.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["labelled_mask", "MaskedBCEDiceLoss"]


def labelled_mask(target: torch.Tensor) -> torch.Tensor:
    """``[B, K]`` bool: True where channel ``k`` of sample ``b`` is labelled (no negative voxel)."""
    return target.flatten(2).amin(dim=-1) >= 0


class MaskedBCEDiceLoss(nn.Module):
    """``lambda_bce * BCE + lambda_dice * (1 - soft Dice)``, each averaged over labelled (sample, class) pairs.

    Args:
        lambda_bce: weight of the voxel-mean binary cross-entropy on logits.
        lambda_dice: weight of the soft Dice loss on sigmoid probabilities.
        smooth: added to numerator and denominator of Dice (1, as in the paper; in voxels).
        dice_on_absent: also apply Dice to labelled classes with no voxel in the crop (the paper does). Off by
            default: for such a class Dice is ``1 - smooth / (sum(p) + smooth)``, whose per-voxel gradient
            ``smooth / (sum(p) + smooth)^2`` is ~10^4x the voxel-mean BCE's once ``sum(p)`` is small; with a
            shared controller it drove every generated head to logits of -100 ("background everywhere", Dice 0)
            within 30 steps (measured on phantom crops). BCE still penalises false positives in those crops.
        pos_weight_max: the positive voxels of a (sample, class) pair weigh ``min(negatives / positives,
            pos_weight_max)`` in the BCE (1 = plain BCE). Why: a small class (adrenal gland, ~160 of 262,144 voxels
            of a 64^3 crop) whose sigmoid has saturated near 0 gets almost no Dice gradient (``p (1 - p)``) and a
            voxel-mean BCE push of ``positives / voxels`` ~ 6e-4; the 0.4.0 weights had such heads stuck at p < 0.01
            everywhere (esophagus, adrenal glands, celiac trunk, every lesion class). Six epochs at a cap of 30
            brought esophagus and celiac trunk back (mean probability inside them 0.46 and 0.14) but every organ
            grew past its border (the weight moves the 0.5 boundary to a ~1/31 chance). A sequence gives one cap
            per class (length ``K``), so only the small classes (adrenal glands, prostate, lesions) are boosted while
            the organs train with plain BCE, as in the runs behind the shipped weights (docs/README.md, "Training").
    """

    def __init__(
        self, lambda_bce: float = 1.0, lambda_dice: float = 1.0, smooth: float = 1.0, dice_on_absent: bool = False,
        pos_weight_max: float | Sequence[float] = 1.0,
    ):
        super().__init__()
        caps = torch.as_tensor(pos_weight_max, dtype=torch.float32)
        if caps.dim() > 1 or not bool((caps >= 1.0).all()):
            raise ValueError(f"MaskedBCEDiceLoss: pos_weight_max must be a number >= 1 or a list of them, got "
                             f"{pos_weight_max}")
        self.lambda_bce, self.lambda_dice, self.smooth = lambda_bce, lambda_dice, smooth
        self.dice_on_absent = dice_on_absent
        self.register_buffer("pos_weight_max", caps.reshape(-1, 1), persistent=False)

    def _caps_for(self, target: torch.Tensor) -> torch.Tensor:
        """``[K', 1]`` caps for the channels of ``target``: all classes, or those in ``target.meta["class_indices"]``
        (set by :class:`~universal_model.training.PrepareLabelledClasses` when it keeps only the labelled classes)."""
        caps, k = self.pos_weight_max, target.shape[1]
        if caps.shape[0] in (1, k):
            return caps
        indices = getattr(target, "meta", {}).get("class_indices")
        if indices is None or len(indices) != k:
            raise ValueError(f"MaskedBCEDiceLoss: {caps.shape[0]} pos_weight_max values for {k} classes and the "
                             "target names no matching meta['class_indices']")
        return caps[torch.as_tensor(indices).to(caps.device)]

    def per_class(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unmasked ``(bce, dice_loss)``, each ``[B, K]`` (targets clamped to ``[0, 1]``)."""
        if logits.shape != target.shape:
            raise ValueError(f"MaskedBCEDiceLoss: logits {tuple(logits.shape)} and target {tuple(target.shape)} differ")
        t = target.clamp(min=0).to(logits.dtype).flatten(2)
        x = logits.flatten(2)
        caps = self._caps_for(target)
        pos_weight = None
        if bool((caps > 1.0).any()):
            n_pos = t.sum(-1, keepdim=True)
            ratio = (t.shape[-1] - n_pos) / n_pos.clamp(min=1.0)
            pos_weight = torch.minimum(ratio.clamp(min=1.0), caps.to(ratio))
        bce = F.binary_cross_entropy_with_logits(x, t, pos_weight=pos_weight, reduction="none").mean(-1)
        p = torch.sigmoid(x)
        dice = 1 - (2 * (p * t).sum(-1) + self.smooth) / (p.sum(-1) + t.sum(-1) + self.smooth)
        return bce, dice

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar loss; zero (with a graph) when no class of the batch is labelled."""
        mask = labelled_mask(target)
        bce, dice = self.per_class(logits, target)
        if not mask.any():
            return logits.sum() * 0.0
        bce_term = bce[mask].mean()
        dice_mask = mask if self.dice_on_absent else mask & (target.flatten(2).amax(-1) > 0)
        dice_term = dice[dice_mask].mean() if dice_mask.any() else dice.sum() * 0.0
        return self.lambda_bce * bce_term + self.lambda_dice * dice_term
