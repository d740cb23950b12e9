"""Training helpers: generate heads only for the classes a batch has labels for.

With partial labels, logits of unlabelled classes never reach the loss, so computing their heads is wasted
work (the dynamic heads dominate the cost of a training step on a CPU: measured 25 s vs 11 s for a light
U-Net backbone, 2 x 64^3 crops, 32 classes). :class:`PrepareLabelledClasses` is a MONAI ``prepare_batch``:
it passes ``class_indices`` = the union of the batch's labelled classes to ``UniversalModel.forward`` and
returns only those label channels; channels labelled in one sample but not in another keep their -1 and are
masked by the loss as before. The selected label is a ``MetaTensor`` whose ``meta["class_indices"]`` names its
channels, so a per-class loss setting (``MaskedBCEDiceLoss(pos_weight_max=[...])``) still finds its classes.
"""

from __future__ import annotations

from typing import Any

import torch

from monai.data import MetaTensor
from monai.engines.utils import PrepareBatch
from monai.utils import CommonKeys

__all__ = ["PrepareLabelledClasses"]


class PrepareLabelledClasses(PrepareBatch):
    """``prepare_batch`` returning ``(image, label[:, labelled], (), {"class_indices": labelled})``.

    The returned label carries ``meta["class_indices"] = labelled``.

    Args:
        mask_key: key of the ``[B, num_classes]`` labelled-class mask written by ``LabelToChannelsd``;
            without it (or in evaluation) every class is kept.
    """

    def __init__(self, mask_key: str = "labels_present"):
        self.mask_key = mask_key

    def __call__(self, batchdata: dict[str, Any], device=None, non_blocking: bool = False, **kwargs):
        image = batchdata[CommonKeys.IMAGE].to(device=device, non_blocking=non_blocking, **kwargs)
        label = batchdata[CommonKeys.LABEL].to(device=device, non_blocking=non_blocking, **kwargs)
        mask = batchdata.get(self.mask_key)
        if not isinstance(mask, torch.Tensor) or mask.shape[-1] != label.shape[1]:
            return image, label
        labelled = torch.nonzero(mask.reshape(-1, mask.shape[-1]).amax(0) > 0).flatten().to(label.device)
        if labelled.numel() == 0:
            raise ValueError("PrepareLabelledClasses: a training batch has no labelled class (check labels_present)")
        selected = label.index_select(1, labelled)
        selected = selected if isinstance(selected, MetaTensor) else MetaTensor(selected)
        selected.meta["class_indices"] = labelled
        return image, selected, (), {"class_indices": labelled}
