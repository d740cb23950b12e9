"""Loss for partially labelled data: BCE-with-logits + soft Dice, only over each sample's labelled classes.

Targets come from :class:`~universal_model.transforms.LabelToChannelsd`: ``[B, K, *spatial]`` with 0/1 in
labelled channels and -1 in channels the sample's source dataset does not annotate. A (sample, class) pair
is used only when its channel holds no negative value, so unlabelled classes receive exactly zero gradient
("masked back-propagation"). Dice is computed over the whole 3D crop of each (sample, class) — not per slice,
which in the original code made empty slices contribute a constant loss of 1 and stalled the Dice term.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
        host_balanced_weight: weight of an extra BCE term for each lesion class whose host organ is labelled in the
            sample: ``(mean BCE over the lesion's voxels + mean BCE over the rest of the host) / 2``. Why: the
            voxel-mean BCE, with or without ``pos_weight_max``, prices "fire on the whole host" and "stay silent"
            differently, and a lesion channel that cannot yet tell a lesion from its host settles on the cheaper
            one (session 19: a cap of 50 made the copy cheaper, an extra weight on host false positives made
            silence cheaper). This term prices the two alike, so only telling lesion from host lowers it. 0 (off) by
            default; crops without host voxels add nothing.
        lesion_hosts: ``{lesion label index: [host label indices]}`` (1-based, as
            :func:`~universal_model.label_space.lesion_hosts` gives); needed when ``host_balanced_weight`` > 0.
        host_top_k: 0 (default) averages the BCE over the whole rest of the host; K > 0 over its K highest (hard
            negative mining). A case-level detector fires on the host's largest response, and the mean lets a few
            voxels of normal parenchyma stay above the lesion (session 20: in-host voxel AUC 0.93-0.99 for the liver
            tumour, yet the largest logit of lesion-free livers above that of most tumours); the top K price exactly
            those voxels.
        host_margin: voxels by which the host is dilated (a cube) for the rest term. Post-processing keeps lesions
            inside a dilated host, so its rim is where a lesion channel's false positives count too (session 20:
            with hard negatives inside the host only, the liver tumour's largest logits moved to that rim).
    """

    def __init__(
        self, lambda_bce: float = 1.0, lambda_dice: float = 1.0, smooth: float = 1.0, dice_on_absent: bool = False,
        pos_weight_max: float | Sequence[float] = 1.0, host_balanced_weight: float = 0.0,
        lesion_hosts: Mapping[int, Sequence[int]] | None = None, host_top_k: int = 0, host_margin: int = 0,
    ):
        super().__init__()
        caps = torch.as_tensor(pos_weight_max, dtype=torch.float32)
        if caps.dim() > 1 or not bool((caps >= 1.0).all()):
            raise ValueError(f"MaskedBCEDiceLoss: pos_weight_max must be a number >= 1 or a list of them, got "
                             f"{pos_weight_max}")
        self.lambda_bce, self.lambda_dice, self.smooth = lambda_bce, lambda_dice, smooth
        self.dice_on_absent = dice_on_absent
        self.register_buffer("pos_weight_max", caps.reshape(-1, 1), persistent=False)
        if host_balanced_weight < 0 or (host_balanced_weight > 0 and not lesion_hosts):
            raise ValueError("MaskedBCEDiceLoss: host_balanced_weight must be >= 0 and needs lesion_hosts, got "
                             f"{host_balanced_weight} and {lesion_hosts}")
        if host_top_k < 0 or host_margin < 0:
            raise ValueError(f"MaskedBCEDiceLoss: host_top_k and host_margin must be >= 0, got {host_top_k} and "
                             f"{host_margin}")
        self.host_balanced_weight = host_balanced_weight
        self.host_top_k, self.host_margin = int(host_top_k), int(host_margin)
        # 0-based channels: label index L is output channel L - 1
        self.lesion_host_channels = {int(k) - 1: [int(h) - 1 for h in v] for k, v in (lesion_hosts or {}).items()}

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

    def _class_indices(self, target: torch.Tensor) -> list[int]:
        """Label channel of each channel of ``target`` (``meta["class_indices"]`` when classes were selected)."""
        indices = getattr(target, "meta", {}).get("class_indices")
        return list(range(target.shape[1])) if indices is None else [int(i) for i in indices]

    def host_balanced(self, voxel_bce: torch.Tensor, target: torch.Tensor, class_indices: list[int]) -> torch.Tensor:
        """``[B, K]`` host-balanced term (zero where a class is no lesion, or its host has no voxel in the crop).

        ``voxel_bce`` is ``[B, K, N]`` (plain per-voxel BCE), ``target`` ``[B, K, *spatial]`` with N voxels (-1 in
        unlabelled channels; 3D when ``host_margin`` > 0), ``class_indices`` the label channel of each of the K
        channels. A host channel marks its lesions too (``lesion_hosts`` in the label space), so host minus lesion
        is the rest of the organ; a host the sample does not label counts as absent.
        """
        term = voxel_bce.new_zeros(voxel_bce.shape[:2])
        position = {c: i for i, c in enumerate(class_indices)}
        for lesion, hosts in self.lesion_host_channels.items():
            present = [position[h] for h in hosts if h in position]
            if lesion not in position or not present:
                continue
            k = position[lesion]
            lesion_voxels = target[:, k].clamp(min=0)
            hosts_flat = target[:, present].flatten(2)
            labelled_hosts = hosts_flat.amin(-1, keepdim=True) >= 0
            host = torch.where(labelled_hosts, hosts_flat.clamp(min=0), 0.0).amax(1).reshape(lesion_voxels.shape)
            if self.host_margin:
                size = 2 * self.host_margin + 1
                host = F.max_pool3d(host[:, None], size, stride=1, padding=self.host_margin)[:, 0]
            host, lesion_voxels = host.flatten(1), lesion_voxels.flatten(1)
            rest = (host - lesion_voxels).clamp(min=0)
            n_lesion, n_rest = lesion_voxels.sum(-1), rest.sum(-1)
            on_lesion = (voxel_bce[:, k] * lesion_voxels).sum(-1) / n_lesion.clamp(min=1.0)
            if self.host_top_k:
                # BCE >= 0, so -1 marks voxels outside the rest; at most host_top_k of the rest's voxels count
                candidates = torch.where(rest > 0, voxel_bce[:, k], -1.0)
                top = candidates.topk(min(self.host_top_k, candidates.shape[-1]), dim=-1).values
                on_rest = top.clamp(min=0).sum(-1) / n_rest.clamp(min=1.0, max=self.host_top_k)
            else:
                on_rest = (voxel_bce[:, k] * rest).sum(-1) / n_rest.clamp(min=1.0)
            term[:, k] = torch.where(host.sum(-1) > 0, (on_lesion + on_rest) / 2, 0.0)
        return term

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
        voxel_bce = F.binary_cross_entropy_with_logits(x, t, pos_weight=pos_weight, reduction="none")
        bce = voxel_bce.mean(-1)
        if self.host_balanced_weight > 0:
            if pos_weight is not None:  # the host term uses the plain BCE
                voxel_bce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
            raw = target.to(logits.dtype)
            bce = bce + self.host_balanced_weight * self.host_balanced(voxel_bce, raw, self._class_indices(target))
        p = torch.sigmoid(x)
        dice = 1 - (2 * (p * t).sum(-1) + self.smooth) / (p.sum(-1) + t.sum(-1) + self.smooth)
        return bce, dice

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar loss; zero (with a graph) when no class of the batch is labelled."""
        logits = logits.float()  # under AMP: sums over a whole-grid crop (~1.8M voxels) overflow float16
        mask = labelled_mask(target)
        bce, dice = self.per_class(logits, target)
        if not mask.any():
            return logits.sum() * 0.0
        bce_term = bce[mask].mean()
        dice_mask = mask if self.dice_on_absent else mask & (target.flatten(2).amax(-1) > 0)
        dice_term = dice[dice_mask].mean() if dice_mask.any() else dice.sum() * 0.0
        return self.lambda_bce * bce_term + self.lambda_dice * dice_term
