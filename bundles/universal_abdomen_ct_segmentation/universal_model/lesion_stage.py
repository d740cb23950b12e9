"""Lesion stage: a small network run over each host organ's box that re-segments the liver and kidney lesions.

Why a second network. The universal model's lesion heads are generated from prompt embeddings close to their
host's (cosine 0.91 liver / liver tumour) and run over the same shared 8-channel feature; on the phantoms they
learned a shifted copy of their host, and no training run (runs 1-27, ``benchmarks/RESULTS.md``, issue 3) brought
the liver or kidney lesions to case-level sensitivity and specificity 0.8. This stage sees only the host organ, in
HU relative to that organ's median, so "darker or brighter than this liver" is one input channel instead of
something the shared feature must encode, and it is trained with a case-level term on each crop's peak logit
(``lesion_stage_training``).

The prompt contract holds: the stage runs only for its lesion classes that were prompted, after the anatomical
rules, and its mask replaces that class's mask; the host-organ rule and the minimum lesion size are applied to it
as to any lesion. ``lesion_stage_ckpt: ""`` turns it off (the generated heads alone).

Inputs per host organ (its mask's bounding box plus ``margin`` voxels, on the network grid):

- HU minus the host's median HU, over 100, clipped to [-3, 3];
- HU scaled from the HU window to [0, 1] (as the universal model sees it);
- the host mask.

The box goes through sliding windows of the training crop size with Gaussian blending: the network uses instance
norm, whose statistics over a whole box differ from those over a training crop (a prototype's whole-box pass scored
liver-tumour case AUC 0.59 where the windows scored 0.76 with the same weights, 24 calibration phantoms).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.transforms import MapTransform

from .io import load_weights
from .label_space import classes as ls_classes
from .postprocess import remove_small_components, restrict_lesions, voxel_spacing_mm, voxel_volume_mm3

__all__ = ["stage_inputs", "host_box", "window_logits", "lesion_mask", "LesionStage", "RefineLesionsd",
           "load_lesion_stage"]

logger = logging.getLogger(__name__)
NUM_INPUTS = 3


def stage_inputs(hu: np.ndarray, host: np.ndarray, hu_window: Sequence[float] = (-175.0, 250.0)) -> np.ndarray:
    """``[3, X, Y, Z]`` float32 network input for one host box: HU relative to the host, windowed HU, host mask."""
    lo, hi = float(hu_window[0]), float(hu_window[1])
    hu = np.clip(np.asarray(hu, np.float32), lo, hi)
    inside = np.asarray(host) > 0
    if not inside.any():
        raise ValueError("stage_inputs: the host mask is empty")
    median = float(np.median(hu[inside]))
    return np.stack([np.clip((hu - median) / 100.0, -3.0, 3.0), (hu - lo) / (hi - lo), inside.astype(np.float32)])


def host_box(host: np.ndarray, margin: int) -> tuple[slice, ...] | None:
    """Bounding box of ``host > 0`` grown by ``margin`` voxels and clipped to the array; ``None`` when empty."""
    idx = np.nonzero(np.asarray(host) > 0)
    if not idx[0].size:
        return None
    return tuple(slice(max(int(i.min()) - margin, 0), min(int(i.max()) + 1 + margin, n))
                 for i, n in zip(idx, host.shape))


def window_logits(network: torch.nn.Module, x: torch.Tensor, roi_size: Sequence[int], sw_batch_size: int,
                  overlap: float) -> torch.Tensor:
    """The stage network over a box ``x`` ``[1, 3, *box]`` in sliding windows of the training crop size, Gaussian
    blending: how inference runs it, and how training mines its false peaks, so both see the same logits."""
    return sliding_window_inference(x, tuple(int(r) for r in roi_size), int(sw_batch_size), network,
                                    overlap=overlap, mode="gaussian", padding_mode="constant")


def lesion_mask(prob: np.ndarray, threshold: float, host: np.ndarray, spacing_mm: Sequence[float],
                dilation_mm: float, min_voxels: float) -> np.ndarray:
    """The stage's uint8 mask: ``prob > threshold``, inside ``host`` dilated by ``dilation_mm``, no component under
    ``min_voxels`` (the lesion rules every lesion mask gets, ``AnatomicalPostProcessd.clean_lesion``)."""
    mask = restrict_lesions((prob > threshold).astype(np.uint8), host, spacing_mm, dilation_mm)
    return remove_small_components(mask, min_voxels)


class LesionStage:
    """The stage network and what it was trained for.

    Args:
        network: maps ``[B, 3, *roi_size]`` to ``[B, len(lesion_classes), *roi_size]`` logits.
        lesion_classes: file names of the lesion classes of the output channels, in order.
        label_space: label-space dict or path; each lesion's ``host_organs`` say which boxes it is searched in.
        roi_size: the training crop size (sliding-window size).
        overlap, sw_batch_size: sliding-window settings.
        margin: voxels added around each host box (as in training).
        pixdim: the grid spacing (mm) it was trained on; ``RefineLesionsd`` skips other grids.
        hu_window: the HU window of the inputs.
        flip_axes: test-time augmentation: for each entry (spatial axes, 0-2), the box is also run mirrored along
            those axes and the logits are averaged (``[]``: one pass).
        device: where the network runs.
    """

    def __init__(self, network: torch.nn.Module, lesion_classes: Sequence[str], label_space: Any,
                 roi_size: Sequence[int] = (32, 32, 32), overlap: float = 0.5, sw_batch_size: int = 8,
                 margin: int = 4, pixdim: Sequence[float] = (3.0, 3.0, 3.0),
                 hu_window: Sequence[float] = (-175.0, 250.0), flip_axes: Sequence[Sequence[int]] = (),
                 device: Any = "cpu"):
        recs = {c["file_name"]: c for c in ls_classes(label_space)}
        unknown = [n for n in lesion_classes if n not in recs or not recs[n].get("host_organs")]
        if unknown:
            raise ValueError(f"lesion stage: {unknown} are not lesion classes with host organs in the label space")
        self.classes = [int(recs[n]["index"]) for n in lesion_classes]
        self.hosts = {int(recs[n]["index"]): [int(h) for h in recs[n]["host_organs"]] for n in lesion_classes}
        self.names = {int(recs[n]["index"]): n for n in lesion_classes}
        self.network = network.to(device).eval()
        self.device = device
        self.roi_size = tuple(int(r) for r in roi_size)
        self.overlap, self.sw_batch_size, self.margin = float(overlap), int(sw_batch_size), int(margin)
        self.hu_window = tuple(float(v) for v in hu_window)
        self.pixdim = tuple(float(v) for v in pixdim)
        self.flips = [tuple(2 + int(a) for a in axes) for axes in flip_axes]
        if any(not axes or not all(2 <= a <= 4 for a in axes) for axes in self.flips):
            raise ValueError(f"lesion stage: flip_axes must list spatial axes 0-2, got {flip_axes}")

    @torch.no_grad()
    def box_logits(self, hu: np.ndarray, host: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray] | None:
        """Logits ``[C, *box]`` over the box of one host organ (``None`` for an empty host)."""
        box = host_box(host, self.margin)
        if box is None:
            return None
        x = torch.from_numpy(stage_inputs(hu[box], host[box], self.hu_window))[None].to(self.device)
        logits = self._windows(x)
        for axes in self.flips:
            logits += self._windows(x.flip(axes)).flip(axes)
        return box, (logits[0] / (1 + len(self.flips))).float().cpu().numpy()

    def _windows(self, x: torch.Tensor) -> torch.Tensor:
        return window_logits(self.network, x, self.roi_size, self.sw_batch_size, self.overlap)

    def probabilities(self, hu: np.ndarray, host_masks: Mapping[int, np.ndarray],
                      wanted: Sequence[int] | None = None) -> dict[int, np.ndarray]:
        """Per lesion class (label index) in ``wanted`` (default: all), its probability map over the whole grid,
        from the boxes of those of its host organs that ``host_masks`` (label index -> mask) holds; 0 elsewhere.
        A class none of whose hosts is given is left out."""
        wanted = self.classes if wanted is None else [c for c in self.classes if c in wanted]
        out: dict[int, np.ndarray] = {}
        for organ, mask in host_masks.items():
            users = [c for c in wanted if organ in self.hosts[c]]
            if not users:
                continue
            res = self.box_logits(hu, mask)
            if res is None:
                continue
            box, logits = res
            for c in users:
                prob = out.setdefault(c, np.zeros(hu.shape, np.float32))
                p = 1.0 / (1.0 + np.exp(-logits[self.classes.index(c)]))
                prob[box] = np.maximum(prob[box], p)
        return out


class RefineLesionsd(MapTransform):
    """Replace the masks of the stage's prompted lesion classes with the stage's, after ``AnatomicalPostProcessd``.

    Each mask is the stage's probability above the class threshold, then the same lesion rules as the generated
    heads get: inside the host organs dilated by ``dilation_mm``, no component under ``min_lesion_volume_mm3``.
    A class whose host organs were not segmented keeps its mask, and so does every class on a grid whose spacing is
    not the one the stage was trained on (a report note says so). ``stage=None`` passes the data through.

    Args:
        keys: the uint8 ``[K, X, Y, Z]`` mask key.
        stage: a ``LesionStage`` or ``None``.
        threshold: ``{file_name: probability}`` for the stage's classes (``"default"`` for the others).
        image_key: the windowed image ``[1, X, Y, Z]`` on the mask grid (values in [0, 1] over ``stage.hu_window``).
        classes_key: key of the 1-based class of each mask channel (``SigmoidThresholdd``).
    """

    def __init__(self, keys: KeysCollection, stage: LesionStage | None, threshold: Mapping[str, float] | float = 0.5,
                 dilation_mm: float = 5.0, min_lesion_volume_mm3: float = 30.0, image_key: str = "image",
                 classes_key: str = "pred_classes", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.stage = stage
        thr = threshold if isinstance(threshold, Mapping) else {"default": threshold}
        if stage is not None:
            unknown = sorted(set(thr) - set(stage.names.values()) - {"default"})
            if unknown:
                raise ValueError(f"lesion stage: thresholds for {unknown}, which the stage does not segment")
            self.thresholds = {c: float(thr.get(n, thr.get("default", 0.5))) for c, n in stage.names.items()}
        self.dilation_mm, self.min_mm3 = float(dilation_mm), float(min_lesion_volume_mm3)
        self.image_key, self.classes_key = image_key, classes_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.stage is None:
            return d
        for key in self.key_iterator(d):
            t = d[key]
            masks = np.ascontiguousarray(t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t, np.uint8)
            affine = t.affine.numpy() if isinstance(t, MetaTensor) else np.eye(4)
            notes = self.refine(masks, d[self.classes_key], d[self.image_key], affine)
            d[key] = MetaTensor(torch.from_numpy(masks), meta=t.meta) if isinstance(t, MetaTensor) else masks
            d["postprocess_notes"] = list(d.get("postprocess_notes", [])) + notes
        return d

    def refine(self, masks: np.ndarray, classes: Sequence[int], image: Any, affine: np.ndarray) -> list[str]:
        """Run the stage in place on ``masks``; returns report notes."""
        ch = {int(c): i for i, c in enumerate(classes)}
        wanted = [c for c in self.stage.classes if c in ch]
        hosts = {h: masks[ch[h]] for c in wanted for h in self.stage.hosts[c] if h in ch and masks[ch[h]].any()}
        if not wanted or not hosts:
            return []
        spacing = voxel_spacing_mm(affine)
        if not np.allclose(spacing, self.stage.pixdim, rtol=0.01):
            note = (f"lesion stage skipped: it was trained on a {self.stage.pixdim} mm grid, this grid is "
                    f"{tuple(round(float(s), 3) for s in spacing)} mm (the generated lesion heads are kept)")
            logger.warning(note)
            return [note]
        img = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        img = img.reshape(img.shape[-3:])
        if img.shape != masks.shape[1:]:
            raise ValueError(f"lesion stage: image {img.shape} is not on the mask grid {masks.shape[1:]}")
        lo, hi = self.stage.hu_window
        probs = self.stage.probabilities(img.astype(np.float32) * (hi - lo) + lo, hosts, wanted)
        min_vox = self.min_mm3 / voxel_volume_mm3(affine)
        notes = []
        for c, prob in probs.items():
            host = np.zeros(masks.shape[1:], np.uint8)
            for h in self.stage.hosts[c]:
                if h in hosts:
                    host |= hosts[h]
            masks[ch[c]] = lesion_mask(prob, self.thresholds[c], host, spacing, self.dilation_mm, min_vox)
            notes.append(f"class {c}: {self.stage.names[c]} from the lesion stage (peak probability {prob.max():.3f}, "
                         f"threshold {self.thresholds[c]:g})")
        return notes


def load_lesion_stage(network: torch.nn.Module, ckpt_path: str | None, **kwargs) -> LesionStage | None:
    """A ``LesionStage`` with the weights of ``ckpt_path`` (``weights_only``); ``None`` when the path is empty."""
    if not ckpt_path:
        return None
    return LesionStage(load_weights(network, ckpt_path), **kwargs)
