"""Post-processing of the network output: sigmoid + threshold, then anatomical rules on uint8 masks.

Rules (all plain data in ``inference.json`` ``postprocess``):

- ``largest_component``: classes (file names) that are one piece (liver, spleen...): keep the largest
  26-connected component.
- ``major_components``: classes that are one long structure the network may break into pieces (colon, intestine,
  rectum, esophagus, duodenum, portal/splenic vein): keep every component at least ``major_component_fraction`` of
  the largest. The largest component alone would cut off real pieces of a broken tube (colon Dice fell on held-out
  phantoms), and the raw mask keeps stray blobs elsewhere in the body.
- ``paired_organs``: ``[right, left]`` file-name pairs, re-labelled by position from the union of both masks.
  With the image at hand (``image_key``), the union is cut at the body's mid-sagittal plane (``body_midline``) and
  each side keeps its largest component: this also separates two organs the network merged into one piece (two
  touching lungs, mostly called "left lung", kept the right lung at Dice 0.25 before this rule). Without the image,
  the union is split into its two largest components and the one further to the patient's left becomes the left
  organ; a single component keeps the side most of its voxels were predicted as. Either way a side smaller than
  ``pair_min_fraction`` of the other is dropped. World coordinates come from the affine, so RAS and LPS inputs give
  the same answer.
- ``min_organ_volume_ml``: ``{file_name: ml}``; a class whose mask (after the rules above) is smaller than this is
  cleared: an organ that may be absent (the prostate of a female patient) is better reported absent than as a
  few stray voxels an annotator has to delete.
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
    "major_components",
    "assign_left_right",
    "body_midline",
    "restrict_lesions",
    "remove_small_components",
    "bounding_box",
    "voxel_spacing_mm",
    "voxel_volume_mm3",
    "left_axis_world",
]

logger = logging.getLogger(__name__)
STRUCTURE_26 = ndimage.generate_binary_structure(3, 3)


def voxel_spacing_mm(affine: np.ndarray) -> np.ndarray:
    """Voxel size along each array axis in mm (column norms of the affine)."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def voxel_volume_mm3(affine: np.ndarray) -> float:
    """Volume of one voxel in mm^3 (absolute determinant of the affine's 3x3 part)."""
    return float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3])))


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


def major_components(mask: np.ndarray, min_fraction: float) -> np.ndarray:
    """Keep the 26-connected components of ``mask`` with at least ``min_fraction`` of the largest one's voxels."""
    out = np.zeros(mask.shape, np.uint8)
    lab, sizes, box = _components(mask)
    if box is not None and sizes.size > 1:
        keep = np.flatnonzero(sizes[1:] >= min_fraction * sizes[1:].max()) + 1
        out[box] = np.isin(lab, keep)
    return out


def left_axis_world(space: str = "RAS") -> np.ndarray:
    """Unit vector pointing to the patient's left in the world frame of the affine (RAS: -x, LPS: +x)."""
    return np.array([1.0, 0.0, 0.0]) if str(space).upper() == "LPS" else np.array([-1.0, 0.0, 0.0])


def left_coordinate(box: Sequence[slice], affine: np.ndarray, space: str = "RAS") -> np.ndarray:
    """Position (mm) of each voxel of ``box`` along the patient's left axis, an array broadcastable to the box."""
    aff = np.asarray(affine, dtype=np.float64)
    to_left = left_axis_world(space)
    weights, offset = to_left @ aff[:3, :3], float(to_left @ aff[:3, 3])
    grids = np.ix_(*[np.arange(s.start, s.stop, dtype=np.float64) for s in box])
    return sum(w * g for w, g in zip(weights, grids)) + offset


def body_midline(
    image: np.ndarray, affine: np.ndarray, space: str = "RAS", threshold: float = 0.0, stride: int = 2
) -> float | None:
    """Left-axis position (mm) of the body's mid-sagittal plane, ``None`` when no voxel is above ``threshold``.

    The body is ``image > threshold`` (every ``stride``-th voxel); the plane lies halfway between the 1st and 99th
    percentiles of its left-axis positions, so a few voxels of a table or an arm do not move it.
    """
    img = np.asarray(image)
    img = img[0] if img.ndim == 4 else img
    if img.ndim != 3:
        raise ValueError(f"body_midline: expected a 3D image, got shape {tuple(img.shape)}")
    body = img[::stride, ::stride, ::stride] > threshold
    if not body.any():
        return None
    sub = np.asarray(affine, dtype=np.float64).copy()
    sub[:3, :3] *= stride
    pos = np.broadcast_to(left_coordinate(tuple(slice(0, n) for n in body.shape), sub, space), body.shape)[body]
    lo, hi = np.percentile(pos, [1.0, 99.0])
    return float(lo + hi) / 2.0


def _split_at_midline(union: np.ndarray, affine: np.ndarray, space: str, midline: float, min_fraction: float):
    """``(right, left)`` uint8 masks: the largest component of ``union`` on each side of the ``midline`` plane."""
    new_r, new_l = np.zeros(union.shape, np.uint8), np.zeros(union.shape, np.uint8)
    box = bounding_box(union)
    if box is None:
        return new_r, new_l
    inside = union[box] > 0
    on_left = np.broadcast_to(left_coordinate(box, affine, space) > midline, inside.shape)
    r, l = largest_component(inside & ~on_left), largest_component(inside & on_left)
    n_r, n_l = int(np.count_nonzero(r)), int(np.count_nonzero(l))
    if n_r >= min_fraction * n_l:
        new_r[box] = r
    if n_l >= min_fraction * n_r:
        new_l[box] = l
    return new_r, new_l


def assign_left_right(
    right: np.ndarray,
    left: np.ndarray,
    affine: np.ndarray,
    space: str = "RAS",
    min_fraction: float = 0.1,
    midline: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Re-assign a paired organ to right/left by position (see the module docstring).

    Args:
        right, left: binary masks predicted for the right and left organ.
        affine: voxel -> world (mm) matrix of the masks.
        space: world convention of ``affine`` ("RAS" as MONAI readers produce, or "LPS").
        min_fraction: the smaller side (or the second largest component) counts as the other organ only when at
            least this fraction of the larger one; smaller pieces are dropped.
        midline: left-axis position (mm) of the body's mid-sagittal plane (``body_midline``); ``None`` splits by
            components instead.

    Returns:
        new ``(right, left)`` uint8 masks.
    """
    union = (right > 0) | (left > 0)
    if midline is not None:
        return _split_at_midline(union, affine, space, midline, min_fraction)
    new_r, new_l = np.zeros(right.shape, np.uint8), np.zeros(left.shape, np.uint8)
    lab, sizes, box = _components(union)
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

    Classes whose ``kind`` is in ``exclusive_kinds`` compete for each voxel: a voxel above the threshold of several of
    them goes only to the most probable one, as in a label map where every voxel has one organ. Without this, the
    independent sigmoids let two organs claim the same voxels, and ``combined_labels`` (higher index painted last)
    handed them to whichever class comes later in the label space: a false "femur" blob over the spleen erased it.
    Lesions, and the classes named in ``exclusive_exempt`` (hepatic vessels, drawn inside the liver), stay
    independent: they lie inside another class and are painted over it in ``combined_labels``.

    Args:
        keys: network output keys.
        class_indices: 0-based channels the network produced (``None``: all ``num_classes``); stored as 1-based
            label indices under ``classes_key`` for the next transforms.
        threshold: probability threshold, one number or ``{file_name: threshold}`` with a ``"default"`` entry.
        label_space: label-space dict or path (for ``file_name`` thresholds).
        classes_key: output key of the list of 1-based class indices of the channels.
        release_logits: free the float logits in place once thresholded (the engine still holds a reference; see
            ``inference.release_tensor``), so that float and uint8 full volumes never coexist for long.
        exclusive_kinds: label-space kinds (e.g. ``["organ", "vessel", "bone"]``) whose classes are mutually
            exclusive; empty keeps every class independent.
        exclusive_exempt: file names of classes of those kinds that stay independent (structures inside another).
    """

    def __init__(self, keys: KeysCollection, class_indices=None, threshold: float | dict = 0.5, label_space=None,
                 num_classes: int = 32, classes_key: str = "pred_classes", release_logits: bool = True,
                 exclusive_kinds: Sequence[str] = (), exclusive_exempt: Sequence[str] = (),
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.release_logits = release_logits
        self.classes = [i + 1 for i in (range(num_classes) if class_indices is None else class_indices)]
        recs = {int(c["index"]): c for c in ls_classes(label_space)}
        known_kinds = {c.get("kind") for c in recs.values()}
        unknown = sorted(set(exclusive_kinds) - known_kinds)
        if unknown:
            raise ValueError(f"postprocess: exclusive_kinds {unknown} are not kinds of the label space {known_kinds}")
        names = {i: c["file_name"] for i, c in recs.items()}
        unknown = sorted(set(exclusive_exempt) - set(names.values()))
        if unknown:
            raise ValueError(f"postprocess: exclusive_exempt {unknown} are not file names of the label space")
        thr = threshold if isinstance(threshold, dict) else {"default": threshold}
        unknown = sorted(set(thr) - set(names.values()) - {"default"})
        if unknown:
            raise ValueError(f"postprocess: threshold keys {unknown} are not file names of the label space")
        self.thresholds = [float(thr.get(names.get(i, ""), thr.get("default", 0.5))) for i in self.classes]
        kinds, exempt = set(exclusive_kinds), set(exclusive_exempt)
        self.exclusive = [
            ch for ch, i in enumerate(self.classes)
            if recs.get(i, {}).get("kind") in kinds and names.get(i) not in exempt
        ]
        self.classes_key = classes_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            logits = d[key]
            if logits.shape[0] != len(self.classes):
                raise ValueError(f"network output has {logits.shape[0]} channels, expected {len(self.classes)}")
            values = logits.as_tensor() if isinstance(logits, MetaTensor) else logits
            masks = torch.empty(logits.shape, dtype=torch.uint8)
            exclusive = set(self.exclusive)
            for c, t in enumerate(self.thresholds):
                if c not in exclusive:
                    masks[c] = torch.sigmoid_(values[c]) >= t
            self._threshold_exclusive(values, masks)
            d[key] = MetaTensor(masks, meta=logits.meta) if isinstance(logits, MetaTensor) else masks
            if self.release_logits:
                release_tensor(logits)
            d[self.classes_key] = list(self.classes)
        return d

    def _threshold_exclusive(self, logits: torch.Tensor, masks: torch.Tensor) -> None:
        """Fill ``masks`` of the exclusive channels: each voxel to the most probable class above its threshold.

        Runs channel by channel, in place on ``logits``, with one running maximum: no ``[K, ...]`` float copy and
        no new float volume per channel.
        """
        if not self.exclusive:
            return
        best_p = torch.zeros(logits.shape[1:], dtype=logits.dtype)
        winner = torch.zeros(logits.shape[1:], dtype=torch.uint8)  # 0: none, j + 1: self.exclusive[j]
        for j, c in enumerate(self.exclusive):
            p = torch.sigmoid_(logits[c])
            p.masked_fill_(p < self.thresholds[c], 0.0)  # below its threshold a class cannot win
            winner[p > best_p] = j + 1
            torch.maximum(best_p, p, out=best_p)
        for j, c in enumerate(self.exclusive):
            masks[c] = winner == j + 1


class AnatomicalPostProcessd(MapTransform):
    """Apply the module's rules to ``uint8`` masks ``[K, X, Y, Z]`` in the network space (see the module docstring).

    Args:
        keys: mask keys; the affine is read from the ``MetaTensor``.
        label_space: label-space dict or path.
        largest_component: file names of single-piece classes.
        major_components: file names of long classes that may come in pieces (see the module docstring).
        major_component_fraction: those classes keep components of at least this fraction of their largest.
        paired_organs: ``[[right_file_name, left_file_name], ...]``.
        pair_min_fraction: see ``assign_left_right``.
        lesion_host_dilation_mm: lesion voxels farther than this from every host organ are removed (mm).
        min_lesion_volume_mm3: smaller lesion components are removed (mm^3).
        min_organ_volume_ml: ``{file_name: ml}``; a non-lesion class with less than this in total is cleared.
        classes_key: key of the 1-based class index of each channel (set by ``SigmoidThresholdd``).
        image_key: key of the network-space image on the masks' grid; when present, paired organs are split at the
            body's midline (``body_midline``), otherwise by components.
        body_threshold: image values above this are body for ``body_midline`` (0.0 = the bottom of the HU window).
    """

    def __init__(self, keys: KeysCollection, label_space=None, largest_component: Sequence[str] = (),
                 major_components: Sequence[str] = (), major_component_fraction: float = 0.3,
                 paired_organs: Sequence[Sequence[str]] = (), pair_min_fraction: float = 0.1,
                 lesion_host_dilation_mm: float = 5.0, min_lesion_volume_mm3: float = 30.0,
                 min_organ_volume_ml: Mapping[str, float] | None = None, classes_key: str = "pred_classes",
                 image_key: str | None = None, body_threshold: float = 0.0, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        recs = ls_classes(label_space)
        self.by_file = {c["file_name"]: int(c["index"]) for c in recs}
        self.file_of = {i: n for n, i in self.by_file.items()}
        min_organ_volume_ml = dict(min_organ_volume_ml or {})
        lesions = {c["file_name"] for c in recs if c.get("kind") == "lesion"}
        names = list(largest_component) + list(major_components) + [n for p in paired_organs for n in p]
        for name in names + list(min_organ_volume_ml):
            if name not in self.by_file:
                raise ValueError(f"postprocess: unknown class file_name {name!r}")
        if lesions & set(min_organ_volume_ml):
            raise ValueError(f"postprocess: min_organ_volume_ml is for organs; lesions use min_lesion_volume_mm3, "
                             f"got {sorted(lesions & set(min_organ_volume_ml))}")
        self.min_organ_ml = {self.by_file[n]: float(v) for n, v in min_organ_volume_ml.items()}
        self.largest = [self.by_file[n] for n in largest_component]
        if not 0.0 < major_component_fraction <= 1.0:
            raise ValueError(f"postprocess: major_component_fraction must be in (0, 1], got {major_component_fraction}")
        self.major = [self.by_file[n] for n in major_components]
        self.major_fraction = major_component_fraction
        self.pairs = [(self.by_file[r], self.by_file[l]) for r, l in paired_organs]
        self.hosts = {
            int(c["index"]): [int(h) for h in c.get("host_organs") or []] for c in recs if c.get("kind") == "lesion"
        }
        self.pair_min_fraction = pair_min_fraction
        self.dilation_mm = lesion_host_dilation_mm
        self.min_lesion_mm3 = min_lesion_volume_mm3
        self.classes_key = classes_key
        self.image_key = image_key
        self.body_threshold = body_threshold

    def apply(
        self, masks: np.ndarray, classes: Sequence[int], affine: np.ndarray, space: str = "RAS",
        midline: float | None = None,
    ) -> list[str]:
        """Run the rules in place on ``masks`` (uint8 ``[K, X, Y, Z]``); returns notes for the report.

        ``midline``: the body's mid-sagittal plane for the paired organs (see ``assign_left_right``).
        """
        ch = {c: i for i, c in enumerate(classes)}
        notes = []
        for r, l in self.pairs:
            if r in ch and l in ch:
                masks[ch[r]], masks[ch[l]] = assign_left_right(
                    masks[ch[r]], masks[ch[l]], affine, space, self.pair_min_fraction, midline
                )
            else:  # only one side requested: it is still a single piece
                for c in (r, l):
                    if c in ch:
                        masks[ch[c]] = largest_component(masks[ch[c]])
        voxel_ml = voxel_volume_mm3(affine) / 1000.0
        for c in classes:
            if c not in self.hosts:
                masks[ch[c]] = self._own_rules(c, masks[ch[c]], voxel_ml, notes)
        for c, hosts in self.hosts.items():
            if c not in ch:
                continue
            host = self.host_mask(masks, classes, c)
            if host is None and hosts:
                notes.append(f"class {c}: host organs {hosts} not segmented, host-organ rule skipped")
            masks[ch[c]] = self.clean_lesion(masks[ch[c]], host, affine)
        return notes

    def _own_rules(self, c: int, mask: np.ndarray, voxel_ml: float, notes: list[str]) -> np.ndarray:
        """The rules of non-lesion class ``c`` that read only its own mask: components, then minimum volume."""
        if c in self.largest:
            mask = largest_component(mask)
        if c in self.major:
            mask = major_components(mask, self.major_fraction)
        min_ml = self.min_organ_ml.get(c)
        if min_ml is not None and 0 < int(np.count_nonzero(mask)) * voxel_ml < min_ml:
            notes.append(f"class {c}: {self.file_of[c]} below {min_ml} ml in total, cleared (min_organ_volume_ml)")
            return np.zeros_like(mask)
        return mask

    def organ_mask(self, c: int, mask: np.ndarray, partner: np.ndarray | None, affine: np.ndarray,
                   space: str = "RAS", midline: float | None = None) -> np.ndarray:
        """``apply``'s result for non-lesion class ``c`` alone, from its thresholded ``mask``; ``partner``: the
        thresholded mask of the other side when ``c`` is one of ``paired_organs`` (``None``: that side not
        segmented). Lets calibration re-run one class at many thresholds with the others fixed."""
        for r, l in self.pairs:
            if c in (r, l):
                if partner is None:
                    mask = largest_component(mask)
                else:
                    new_r, new_l = assign_left_right(*((mask, partner) if c == r else (partner, mask)), affine, space,
                                                     self.pair_min_fraction, midline)
                    mask = new_r if c == r else new_l
        return self._own_rules(c, mask, voxel_volume_mm3(affine) / 1000.0, [])

    def host_mask(self, masks: np.ndarray, classes: Sequence[int], lesion: int) -> np.ndarray | None:
        """Union of the host organs of class ``lesion`` among the channels of ``masks``; ``None`` if none is there."""
        ch = {c: i for i, c in enumerate(classes)}
        present = [h for h in self.hosts.get(lesion, []) if h in ch]
        if not present:
            return None
        host = np.zeros(masks.shape[1:], np.uint8)
        for h in present:
            host |= masks[ch[h]]
        return host

    def clean_lesion(self, mask: np.ndarray, host: np.ndarray | None, affine: np.ndarray) -> np.ndarray:
        """The lesion rules on one lesion ``mask``: inside the dilated ``host`` (when given), no small components."""
        if host is not None:
            mask = restrict_lesions(mask, host, voxel_spacing_mm(affine), self.dilation_mm)
        return self.drop_small_lesions(mask, affine)

    def drop_small_lesions(self, mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
        """``mask`` without components smaller than ``min_lesion_volume_mm3``."""
        return remove_small_components(mask, self.min_lesion_mm3 / voxel_volume_mm3(affine))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            t = d[key]
            masks = np.ascontiguousarray(t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t, dtype=np.uint8)
            affine = t.affine.numpy() if isinstance(t, MetaTensor) else np.eye(4)
            space = str(t.meta.get("space", "RAS")) if isinstance(t, MetaTensor) else "RAS"
            midline = self.image_midline(d, masks.shape[1:], affine, space) if self.pairs else None
            notes = self.apply(masks, d[self.classes_key], affine, space, midline)
            for n in notes:
                logger.warning(n)
            d[key] = MetaTensor(torch.from_numpy(masks), meta=t.meta) if isinstance(t, MetaTensor) else masks
            d["postprocess_notes"] = notes
        return d

    def image_midline(self, d: Mapping[Hashable, Any], shape: Sequence[int], affine: np.ndarray, space: str):
        """``body_midline`` of ``d[image_key]`` when it lies on the masks' grid, else ``None``."""
        img = d.get(self.image_key) if self.image_key else None
        if img is None:
            return None
        arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        if tuple(arr.shape[-3:]) != tuple(shape):
            logger.warning(f"{self.image_key} {tuple(arr.shape)} is not on the mask grid {tuple(shape)}: "
                           "paired organs split by components")
            return None
        return body_midline(arr, affine, space, self.body_threshold)
