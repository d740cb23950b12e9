"""Label transforms for training with partial labels.

``combined_labels.nii.gz`` holds one label-space index per voxel, lesions drawn over their host organ. The
network has one sigmoid channel per class, so the map becomes ``num_classes`` binary channels in which organs
include their lesions (a liver-tumour voxel, 27, is also liver, 6). Channels of classes that the sample's source
dataset does not annotate are filled with :data:`UNLABELLED` (-1), which the loss and metric skip.
"""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence

import numpy as np
import torch
from scipy import ndimage

from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_tensor

from .label_space import lesion_hosts as _lesion_hosts_of
from .partial_labels import resolve_labels_present

__all__ = ["UNLABELLED", "LabelToChannels", "LabelToChannelsd", "LabelToChannelsD", "LabelToChannelsDict"]

UNLABELLED = -1.0


def _assign_multi_host(lab: np.ndarray, lesion: int, hosts: Sequence[int]) -> np.ndarray:
    """For each voxel of ``lesion``, the host label (one of ``hosts``) of the nearest host-organ voxel, else 0."""
    out = np.zeros(lab.shape, dtype=lab.dtype)
    les = lab == lesion
    host_mask = np.isin(lab, hosts)
    if not host_mask.any():
        return out  # no host organ in this array: the side is unknown, the lesion joins no organ channel
    _, idx = ndimage.distance_transform_edt(~host_mask, return_indices=True)
    nearest = lab[tuple(i[les] for i in idx)]
    out[les] = nearest
    return out


class LabelToChannels(Transform):
    """Label-space index map ``[1, *spatial]`` -> ``[num_classes, *spatial]`` binary channels.

    Args:
        num_classes: output channels; channel ``c`` is label ``c + 1``.
        lesion_hosts: ``{lesion index: [host organ indices]}`` (1-based); the lesion's voxels are added to the host
            organ's channel. With several hosts (R/L kidney) each voxel goes to the nearest host-organ voxel.
        dtype: output dtype; signed, because unlabelled channels hold -1. Float by default; training uses
            ``torch.int8``, which makes a 64^3 crop of 32 channels 8 MB instead of 34 MB to collate, pass from the
            data workers and copy to the GPU (the loss converts it on the device).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self, num_classes: int = 32, lesion_hosts: Mapping[int, Sequence[int]] | None = None, dtype=torch.float32
    ):
        self.num_classes = num_classes
        self.lesion_hosts = {int(k): [int(h) for h in v] for k, v in (lesion_hosts or {}).items()}
        if not (dtype.is_floating_point or dtype.is_signed):
            raise ValueError(f"LabelToChannels: dtype must hold -1 (unlabelled), got {dtype}")
        self.dtype = dtype

    def __call__(self, label, labels_present: str | Sequence[int] | None = None) -> torch.Tensor:
        """``labels_present``: template name or 1-based indices; ``None`` means all classes are labelled."""
        lab_t = convert_to_tensor(label, track_meta=False)
        if lab_t.ndim < 2 or lab_t.shape[0] != 1:
            raise ValueError(f"LabelToChannels: expected a 1-channel label map [1, *spatial], got {tuple(lab_t.shape)}")
        lab = lab_t[0].cpu().numpy().round().astype(np.int16)
        out = np.zeros((self.num_classes, *lab.shape), dtype=bool)
        for c in range(self.num_classes):
            out[c] = lab == c + 1
        for lesion, hosts in self.lesion_hosts.items():
            if lesion > self.num_classes or not (lab == lesion).any():
                continue
            if len(hosts) == 1:
                out[hosts[0] - 1] |= lab == lesion
            else:
                owner = _assign_multi_host(lab, lesion, hosts)
                for h in hosts:
                    out[h - 1] |= owner == h
        result = torch.as_tensor(out, dtype=self.dtype)
        if labels_present is not None:
            present = resolve_labels_present(labels_present, self.num_classes)
            hidden = [c for c in range(self.num_classes) if c + 1 not in present]
            result[hidden] = UNLABELLED
        return result


class LabelToChannelsd(MapTransform):
    """Dictionary version of :class:`LabelToChannels`.

    Args:
        keys: label keys to convert (the result keeps the input's metadata when it is a MetaTensor).
        labels_present_key: key of the sample's ``labels_present`` (template name or index list); a missing key
            means fully labelled. The key is replaced by a ``[num_classes]`` float mask (1 = labelled) so that
            batches collate.
        num_classes, dtype: see :class:`LabelToChannels`.
        lesion_hosts: ``None`` reads ``host_organs`` from the bundle's label space.
    """

    backend = LabelToChannels.backend

    def __init__(
        self,
        keys: KeysCollection,
        labels_present_key: str = "labels_present",
        num_classes: int = 32,
        lesion_hosts: Mapping[int, Sequence[int]] | None = None,
        dtype=torch.float32,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        hosts = _lesion_hosts_of() if lesion_hosts is None else lesion_hosts
        self.converter = LabelToChannels(num_classes, hosts, dtype)
        self.labels_present_key = labels_present_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        present = d.get(self.labels_present_key)
        if isinstance(present, torch.Tensor) and present.numel() == self.converter.num_classes:
            present = [i + 1 for i in torch.nonzero(present > 0).flatten().tolist()]  # already a mask
        for key in self.key_iterator(d):
            channels = self.converter(d[key], present)
            if isinstance(d[key], MetaTensor):
                channels = MetaTensor(channels).copy_meta_from(d[key])  # keeps affine and applied operations
            d[key] = channels
        mask = torch.ones(self.converter.num_classes)
        if present is not None:
            idx = resolve_labels_present(present, self.converter.num_classes)
            mask = torch.zeros(self.converter.num_classes)
            mask[[i - 1 for i in idx]] = 1.0
        d[self.labels_present_key] = mask
        return d


LabelToChannelsD = LabelToChannelsDict = LabelToChannelsd
