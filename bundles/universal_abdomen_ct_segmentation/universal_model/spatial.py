"""Bring uint8 masks from the network grid back onto the input's original voxel grid (nearest neighbour).

The network grid (after ``Orientationd`` + ``Spacingd``) and the original grid are both described by their affines,
so the inverse is one affine map ``inv(A_net) @ A_orig`` from original voxel to network voxel. For the usual
axis-aligned case (a permutation, flips and scaling) the mapping is separable and done with index arrays, which is
fast and allocates nothing larger than the uint8 output; oblique grids fall back to ``scipy.ndimage.affine_transform``
(order 0). Working per class on uint8 keeps a 512x512x300 CT far below the memory of MONAI's float ``Invertd``.
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from scipy import ndimage

__all__ = ["resample_mask_nearest", "InvertToOriginalSpaced"]


def _axis_map(m: np.ndarray, tol: float = 1e-6) -> list[int] | None:
    """For each network axis the single original axis it depends on, or ``None`` when the map is oblique."""
    lin = m[:3, :3]
    perm = []
    for a in range(3):
        nz = np.flatnonzero(np.abs(lin[a]) > tol * max(np.abs(lin[a]).max(), 1e-12))
        if len(nz) != 1:
            return None
        perm.append(int(nz[0]))
    return perm if sorted(perm) == [0, 1, 2] else None


def resample_mask_nearest(
    mask: np.ndarray, src_affine: np.ndarray, dst_affine: np.ndarray, dst_shape, out: np.ndarray | None = None
) -> np.ndarray:
    """Nearest-neighbour resampling of one 3D ``uint8`` mask from ``src`` to ``dst`` grid (both voxel -> world mm).

    Voxels of the destination that fall outside the source grid are 0.
    """
    m = np.linalg.inv(np.asarray(src_affine, np.float64)) @ np.asarray(dst_affine, np.float64)
    dst_shape = tuple(int(s) for s in dst_shape)
    if out is None:
        out = np.zeros(dst_shape, np.uint8)
    else:
        out[...] = 0
    perm = _axis_map(m)
    if perm is None:
        ndimage.affine_transform(mask, m[:3, :3], offset=m[:3, 3], output_shape=dst_shape, output=out, order=0, cval=0)
        return out
    # src axis a depends on dst axis perm[a]; reorder src so its axis p matches dst axis p
    src_axis_of_dst = [perm.index(p) for p in range(3)]
    src = mask.transpose(src_axis_of_dst)
    idx, valid = [], []
    for p in range(3):
        a = src_axis_of_dst[p]
        pos = np.floor(m[a, p] * np.arange(dst_shape[p]) + m[a, 3] + 0.5).astype(np.int64)
        ok = (pos >= 0) & (pos < mask.shape[a])
        idx.append(pos[ok])
        valid.append(ok)
    if all(v.any() for v in valid):
        out[np.ix_(*valid)] = src[np.ix_(*idx)]
    return out


class InvertToOriginalSpaced(MapTransform):
    """Resample ``uint8`` masks ``[K, ...]`` from the network grid onto the grid of ``ref_key`` (the loaded input).

    Args:
        keys: mask keys (``MetaTensor`` with the network-space affine).
        ref_key: key of the original-space image (``LoadCTd(copy_to=...)``); its affine and spatial shape define the
            output grid, and its meta data (file name, original affine) is carried over.
    """

    def __init__(self, keys: KeysCollection, ref_key: str = "original_ct", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.ref_key = ref_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        ref = d[self.ref_key]
        dst_affine = ref.affine.numpy().astype(np.float64)
        dst_shape = tuple(ref.shape[1:])
        for key in self.key_iterator(d):
            t = d[key]
            src = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
            src_affine = t.affine.numpy() if isinstance(t, MetaTensor) else dst_affine
            out = np.zeros((src.shape[0],) + dst_shape, np.uint8)
            for c in range(src.shape[0]):
                resample_mask_nearest(np.ascontiguousarray(src[c], np.uint8), src_affine, dst_affine, dst_shape, out[c])
            meta = dict(ref.meta)
            meta["affine"] = torch.as_tensor(dst_affine)
            d[key] = MetaTensor(torch.from_numpy(out), meta=meta)
        return d
