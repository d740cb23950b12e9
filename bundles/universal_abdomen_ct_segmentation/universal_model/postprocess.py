"""Post-processing of the network output: sigmoid + threshold, then anatomical rules on uint8 masks.

Rules (all plain data in ``inference.json`` ``postprocess``):

- ``largest_component``: classes (file names) that are one piece (liver, spleen...): keep the largest
  26-connected component.
- ``paired_organs``: ``[right, left]`` file-name pairs. The union of both masks is split into its two largest
  components (the second counts only when at least ``pair_min_fraction`` of the first); the one lying further to the
  patient's left in world coordinates becomes the left organ. A single component keeps the side most of its voxels
  were predicted as. World coordinates come from the affine, so RAS and LPS inputs give the same answer.
- lesions (``kind == "lesion"`` with ``host_organs`` in the label space): voxels outside the host organs dilated by
  ``lesion_host_dilation_mm`` are removed, then components smaller than ``min_lesion_volume_mm3`` are dropped.

Masks are ``uint8`` ``[K, X, Y, Z]``; channel ``c`` holds class ``classes[c]`` (1-based label index).
"""

from __future__ import annotations

import logging
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from scipy import ndimage

from .inference import release_tensor
from .label_space import classes as ls_classes

__all__ = [
    "SigmoidThresholdd",
    "AnatomicalPostProcessd",
    "largest_component",
    "assign_left_right",
    "restrict_lesions",
    "remove_small_components",
    "bounding_box",
    "voxel_spacing_mm",
    "left_axis_world",
]

logger = logging.getLogger(__name__)
STRUCTURE_26 = ndimage.generate_binary_structure(3, 3)


def voxel_spacing_mm(affine: np.ndarray) -> np.ndarray:
    """Voxel size along each array axis in mm (column norms of the affine)."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def bounding_box(mask: np.ndarray, margin: Sequence[int] | int = 0) -> tuple[slice, ...] | None:
    """Slices of the smallest box holding ``mask`` (grown by ``margin`` voxels), ``None`` when empty."""
    margin = np.broadcast_to(np.asarray(margin, dtype=int), (mask.ndim,))
    box = []
    for ax in range(mask.ndim):
        proj = np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != ax))
        nz = np.flatnonzero(proj)
        if nz.size == 0:
            return None
        box.append(slice(max(int(nz[0]) - int(margin[ax]), 0), min(int(nz[-1]) + 1 + int(margin[ax]), mask.shape[ax])))
    return tuple(box)


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[slice, ...] | None]:
    """Labelled components inside the bounding box, their sizes (index 0 = background) and the box."""
    box = bounding_box(mask)
    if box is None:
        return np.zeros((0,) * 3, np.int32), np.zeros(1, np.int64), None
    lab, _ = ndimage.label(mask[box], structure=STRUCTURE_26)
    return lab, np.bincount(lab.ravel()), box


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 26-connected component of a binary ``mask`` (returns a new uint8 array)."""
    out = np.zeros(mask.shape, np.uint8)
    lab, sizes, box = _components(mask)
    if box is not None and sizes.size > 1:
        out[box] = lab == int(np.argmax(sizes[1:]) + 1)
    return out


def left_axis_world(space: str = "RAS") -> np.ndarray:
    """Unit vector pointing to the patient's left in the world frame of the affine (RAS: -x, LPS: +x)."""
    return np.array([1.0, 0.0, 0.0]) if str(space).upper() == "LPS" else np.array([-1.0, 0.0, 0.0])


def assign_left_right(
    right: np.ndarray, left: np.ndarray, affine: np.ndarray, space: str = "RAS", min_fraction: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Re-assign a paired organ to right/left by position (see the module docstring).

    Args:
        right, left: binary masks predicted for the right and left organ.
        affine: voxel -> world (mm) matrix of the masks.
        space: world convention of ``affine`` ("RAS" as MONAI readers produce, or "LPS").
        min_fraction: the second largest component counts as the other organ only when at least this fraction of
            the largest one; smaller components are dropped.

    Returns:
        new ``(right, left)`` uint8 masks.
    """
    new_r, new_l = np.zeros(right.shape, np.uint8), np.zeros(left.shape, np.uint8)
    lab, sizes, box = _components((right > 0) | (left > 0))
    if box is None or sizes.size < 2:
        return new_r, new_l
    order = np.argsort(sizes[1:])[::-1] + 1
    keep = [int(order[0])] + [int(c) for c in order[1:2] if sizes[c] >= min_fraction * sizes[order[0]]]
    origin = np.array([s.start for s in box], dtype=np.float64)
    if len(keep) == 2:
        aff = np.asarray(affine, dtype=np.float64)
        to_left = left_axis_world(space)
        scores = []
        for c in keep:
            centroid = np.mean(np.nonzero(lab == c), axis=1) + origin
            scores.append(float((aff[:3, :3] @ centroid + aff[:3, 3]) @ to_left))
        left_c, right_c = (keep[0], keep[1]) if scores[0] > scores[1] else (keep[1], keep[0])
        new_r[box], new_l[box] = lab == right_c, lab == left_c
        return new_r, new_l
    comp = lab == keep[0]
    if int(np.count_nonzero(left[box][comp])) > int(np.count_nonzero(right[box][comp])):
        new_l[box] = comp
    else:
        new_r[box] = comp
    return new_r, new_l


def remove_small_components(mask: np.ndarray, min_voxels: float) -> np.ndarray:
    """Drop 26-connected components with fewer than ``min_voxels`` voxels (returns a new uint8 array)."""
    out = np.zeros(mask.shape, np.uint8)
    lab, sizes, box = _components(mask)
    if box is not None:
        keep = np.flatnonzero(sizes >= max(min_voxels, 1))
        keep = keep[keep > 0]
        out[box] = np.isin(lab, keep)
    return out


def restrict_lesions(
    lesion: np.ndarray, host: np.ndarray, spacing_mm: Sequence[float], dilation_mm: float
) -> np.ndarray:
    """Keep lesion voxels within ``dilation_mm`` of the ``host`` organ mask (returns a new uint8 array)."""
    out = np.zeros(lesion.shape, np.uint8)
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    margin = np.ceil(max(dilation_mm, 0.0) / spacing).astype(int) + 1
    box = bounding_box(host > 0, margin)
    if box is None or not lesion[box].any():
        return out
    if dilation_mm > 0:
        grown = ndimage.distance_transform_edt(host[box] == 0, sampling=spacing) <= dilation_mm
    else:
        grown = host[box] > 0
    out[box] = (lesion[box] > 0) & grown
    return out


class SigmoidThresholdd(MapTransform):
    """Logits ``[K, ...]`` -> binary ``uint8`` masks: per-class sigmoid and threshold, in place, channel by channel.

    Args:
        keys: network output keys.
        class_indices: 0-based channels the network produced (``None``: all ``num_classes``); stored as 1-based
            label indices under ``classes_key`` for the next transforms.
        threshold: probability threshold, one number or ``{file_name: threshold}`` with a ``"default"`` entry.
        label_space: label-space dict or path (for ``file_name`` thresholds).
        classes_key: output key of the list of 1-based class indices of the channels.
        release_logits: free the float logits in place once thresholded (the engine still holds a reference; see
            ``inference.release_tensor``), so that float and uint8 full volumes never coexist for long.
    """

    def __init__(self, keys: KeysCollection, class_indices=None, threshold: float | dict = 0.5, label_space=None,
                 num_classes: int = 32, classes_key: str = "pred_classes", release_logits: bool = True,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.release_logits = release_logits
        self.classes = [i + 1 for i in (range(num_classes) if class_indices is None else class_indices)]
        names = {int(c["index"]): c["file_name"] for c in ls_classes(label_space)}
        thr = threshold if isinstance(threshold, dict) else {"default": threshold}
        self.thresholds = [float(thr.get(names.get(i, ""), thr.get("default", 0.5))) for i in self.classes]
        self.classes_key = classes_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            logits = d[key]
            if logits.shape[0] != len(self.classes):
                raise ValueError(f"network output has {logits.shape[0]} channels, expected {len(self.classes)}")
            masks = torch.empty(logits.shape, dtype=torch.uint8)
            for c, t in enumerate(self.thresholds):
                masks[c] = torch.sigmoid_(logits[c].as_tensor() if isinstance(logits, MetaTensor) else logits[c]) >= t
            d[key] = MetaTensor(masks, meta=logits.meta) if isinstance(logits, MetaTensor) else masks
            if self.release_logits:
                release_tensor(logits)
            d[self.classes_key] = list(self.classes)
        return d


class AnatomicalPostProcessd(MapTransform):
    """Apply the module's rules to ``uint8`` masks ``[K, X, Y, Z]`` in the network space (see the module docstring).

    Args:
        keys: mask keys; the affine is read from the ``MetaTensor``.
        label_space: label-space dict or path.
        largest_component: file names of single-piece classes.
        paired_organs: ``[[right_file_name, left_file_name], ...]``.
        pair_min_fraction: see ``assign_left_right``.
        lesion_host_dilation_mm: lesion voxels farther than this from every host organ are removed (mm).
        min_lesion_volume_mm3: smaller lesion components are removed (mm^3).
        classes_key: key of the 1-based class index of each channel (set by ``SigmoidThresholdd``).
    """

    def __init__(self, keys: KeysCollection, label_space=None, largest_component: Sequence[str] = (),
                 paired_organs: Sequence[Sequence[str]] = (), pair_min_fraction: float = 0.1,
                 lesion_host_dilation_mm: float = 5.0, min_lesion_volume_mm3: float = 30.0,
                 classes_key: str = "pred_classes", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        recs = ls_classes(label_space)
        self.by_file = {c["file_name"]: int(c["index"]) for c in recs}
        for name in list(largest_component) + [n for p in paired_organs for n in p]:
            if name not in self.by_file:
                raise ValueError(f"postprocess: unknown class file_name {name!r}")
        self.largest = [self.by_file[n] for n in largest_component]
        self.pairs = [(self.by_file[r], self.by_file[l]) for r, l in paired_organs]
        self.hosts = {
            int(c["index"]): [int(h) for h in c.get("host_organs") or []] for c in recs if c.get("kind") == "lesion"
        }
        self.pair_min_fraction = pair_min_fraction
        self.dilation_mm = lesion_host_dilation_mm
        self.min_lesion_mm3 = min_lesion_volume_mm3
        self.classes_key = classes_key

    def apply(self, masks: np.ndarray, classes: Sequence[int], affine: np.ndarray, space: str = "RAS") -> list[str]:
        """Run the rules in place on ``masks`` (uint8 ``[K, X, Y, Z]``); returns notes for the report."""
        ch = {c: i for i, c in enumerate(classes)}
        notes = []
        for r, l in self.pairs:
            if r in ch and l in ch:
                masks[ch[r]], masks[ch[l]] = assign_left_right(
                    masks[ch[r]], masks[ch[l]], affine, space, self.pair_min_fraction
                )
            else:  # only one side requested: it is still a single piece
                for c in (r, l):
                    if c in ch:
                        masks[ch[c]] = largest_component(masks[ch[c]])
        for c in self.largest:
            if c in ch:
                masks[ch[c]] = largest_component(masks[ch[c]])
        spacing = voxel_spacing_mm(affine)
        voxel_mm3 = float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3])))
        for c, hosts in self.hosts.items():
            if c not in ch:
                continue
            present = [h for h in hosts if h in ch]
            if present:
                host = np.zeros(masks.shape[1:], np.uint8)
                for h in present:
                    host |= masks[ch[h]]
                masks[ch[c]] = restrict_lesions(masks[ch[c]], host, spacing, self.dilation_mm)
            elif hosts:
                notes.append(f"class {c}: host organs {hosts} not segmented, host-organ rule skipped")
            masks[ch[c]] = remove_small_components(masks[ch[c]], self.min_lesion_mm3 / voxel_mm3)
        return notes

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            t = d[key]
            masks = np.ascontiguousarray(t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t, dtype=np.uint8)
            affine = t.affine.numpy() if isinstance(t, MetaTensor) else np.eye(4)
            space = str(t.meta.get("space", "RAS")) if isinstance(t, MetaTensor) else "RAS"
            notes = self.apply(masks, d[self.classes_key], affine, space)
            for n in notes:
                logger.warning(n)
            d[key] = MetaTensor(torch.from_numpy(masks), meta=t.meta) if isinstance(t, MetaTensor) else masks
            d["postprocess_notes"] = notes
        return d
