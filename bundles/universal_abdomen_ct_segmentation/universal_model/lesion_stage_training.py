"""Training and calibration of the lesion stage (``lesion_stage``) on case folders in the AbdomenAtlas layout.

Data: every case folder (``ct.nii.gz`` + ``segmentations/<file_name>.nii.gz``) gives one box per host organ of the
stage's classes, loaded as inference sees it (RAS, ``pixdim``), inputs by ``lesion_stage.stage_inputs``. A lesion
class counts as labelled in a box when its host is that organ; a missing lesion file means "no lesion", so the
folders must label the stage's lesions wherever they exist (the phantom sets do; for public data, give only the
cases of datasets that label them, e.g. LiTS for the liver tumour, KiTS for the kidney classes). A folder can
instead take its host masks from an organ model's prediction folder (``host_dirs``), so that the stage trains on
the outlines it meets at inference; the lesion targets stay the true ones.

Batches: crops of ``roi_size``; half of the hosts are livers and half kidneys (any host type in turn, in general),
and ``positive_fraction`` of the crops are centred (with jitter) on a lesion voxel of a box that has one. With
``host_jitter``, each crop's host channel is perturbed (``perturb_host``): at inference the host is the organ
model's mask, whose outline differs from the ground truth's (session 24: the whole-grid variant's liver masks take in
hepatic-vessel voxels at the organ's edge, and a stage trained on ground-truth outlines fired there in about half of
the lesion-free calibration livers). With ``hard_negative_fraction``, that share of the crops is centred on the
current network's peak in a lesion-free box (``CropSampler.mine_hard_negatives``, refreshed during training): a
false alarm is one peak somewhere in a whole organ, which crops drawn uniformly over the host seldom contain
(session 26: in the phantoms' non-contrast phase, hepatic blood and liver tumours have the same attenuation, and the
whole-grid variant's stage peaked above its threshold in 15 of 37 such livers without a tumour, against 9 of 58 in the
contrast phases).

Loss (``stage_loss``), per channel only where the box's host hosts that class, over the host dilated by one voxel:
weighted BCE (``pos_weight``) + soft Dice over the batch + ``case_weight`` x BCE of the crop's peak logit against
"this crop holds a lesion". The last term is the case-level decision itself: the generated heads failed because a
lesion-free organ needs only a few voxels above the lesions to raise a false alarm, which a voxel mean barely sees.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd, Spacingd
from tqdm import tqdm

from .calibration import case_level_auc, choose_threshold, detection_curve, plot_detection_curves
from .io import load_weights
from .label_space import classes as ls_classes
from .lesion_stage import LesionStage, host_box, lesion_mask, stage_inputs, window_logits
from .postprocess import restrict_lesions, voxel_spacing_mm, voxel_volume_mm3
from .writer import atomic_write

__all__ = ["case_folders", "HostBoxes", "perturb_host", "CropSampler", "stage_loss", "train_lesion_stage",
           "calibrate_lesion_stage"]

logger = logging.getLogger(__name__)


def case_folders(dataset_dirs: str | Sequence[str]) -> list[Path]:
    """Case folders (holding ``ct.nii.gz`` and ``segmentations/``) under one or several dataset folders."""
    roots = [dataset_dirs] if isinstance(dataset_dirs, (str, Path)) else list(dataset_dirs)
    found = []
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: dataset folder not found")
        cases = sorted(p for p in root.iterdir() if (p / "ct.nii.gz").is_file() and (p / "segmentations").is_dir())
        if not cases:
            raise ValueError(f"{root}: no case folder with ct.nii.gz and segmentations/")
        found += cases
    return found


def _loader(files: Sequence[str], pixdim: Sequence[float]) -> Compose:
    modes = ["bilinear"] + ["nearest"] * (len(files) - 1)
    return Compose([LoadImaged(files, image_only=True), EnsureChannelFirstd(files),
                    Orientationd(files, axcodes="RAS"), Spacingd(files, pixdim=pixdim, mode=modes)])


class HostBoxes:
    """The host boxes of a list of case folders, ready for cropping: ``items[i] = (inputs, target, valid, host)``.

    Args:
        cases: case folders.
        stage_classes: lesion file names, in the stage's channel order.
        label_space: label-space dict or path.
        host_dir: folder with ``<case>/segmentations/<host>.nii.gz`` to take the host masks (boxes and host
            channel) from: an organ model's prediction folder, for calibration or training on predicted hosts;
            default: the case's own ``segmentations/``. The lesion targets stay the lesions inside the true organ,
            so a lesion the predicted organ leaves out is not learnt as background.
        pixdim, margin, hu_window: as in inference.
    """

    def __init__(self, cases: Sequence[Path], stage_classes: Sequence[str], label_space: Any,
                 host_dir: str | None = None, pixdim: Sequence[float] = (3.0, 3.0, 3.0), margin: int = 4,
                 hu_window: Sequence[float] = (-175.0, 250.0), progress: bool = True):
        recs = {c["file_name"]: c for c in ls_classes(label_space)}
        files = {int(c["index"]): c["file_name"] for c in recs.values()}
        hosts_of = {n: [files[int(h)] for h in recs[n]["host_organs"]] for n in stage_classes}
        self.host_names = sorted({h for hs in hosts_of.values() for h in hs})
        self.items: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.info: list[dict[str, Any]] = []
        for case in tqdm(cases, desc="loading host boxes", disable=not progress):
            paths = {"image": str(case / "ct.nii.gz")}
            for h in self.host_names:
                base = Path(host_dir) / case.name if host_dir else case
                paths[h] = str(base / "segmentations" / f"{h}.nii.gz")
            paths.update({n: str(case / "segmentations" / f"{n}.nii.gz") for n in stage_classes})
            if host_dir:  # the true organs, which the lesion targets lie in
                paths.update({f"truth_{h}": str(case / "segmentations" / f"{h}.nii.gz") for h in self.host_names})
            present = {k: v for k, v in paths.items() if Path(v).is_file()}
            if "image" not in present:
                raise FileNotFoundError(f"{paths['image']}: CT missing")
            # neutral keys: Spacingd copies a key's meta into every key that starts with "<key>_" (liver_tumor)
            keys = {name: f"k{i}" for i, name in enumerate(present)}
            loaded = _loader(list(keys.values()), pixdim)({keys[n]: p for n, p in present.items()})
            d = {n: loaded[k] for n, k in keys.items()}
            hu = d["image"][0].numpy()
            affine = d["image"].affine.numpy()
            for h in self.host_names:
                if h not in d:
                    continue
                host = d[h][0].numpy() > 0
                box = host_box(host, margin)
                if box is None:
                    continue
                truth = d[f"truth_{h}"][0].numpy()[box] > 0 if f"truth_{h}" in d else host[box]
                target = np.zeros((len(stage_classes),) + hu[box].shape, np.uint8)
                valid = np.zeros(len(stage_classes), np.float32)
                for k, n in enumerate(stage_classes):
                    if h in hosts_of[n]:
                        valid[k] = 1.0
                        if n in d:
                            target[k] = (d[n][0].numpy()[box] > 0) & truth
                self.items.append((stage_inputs(hu[box], host[box], hu_window).astype(np.float16), target, valid,
                                   host[box]))
                self.info.append({"case": case.name, "host": h, "box": box, "affine": affine})

    def __len__(self) -> int:
        return len(self.items)

    @classmethod
    def merged(cls, parts: Sequence[HostBoxes]) -> HostBoxes:
        """One set holding the boxes of ``parts`` (e.g. one per dataset folder, each with its own host masks)."""
        out = cls.__new__(cls)
        out.host_names = sorted({h for p in parts for h in p.host_names})
        out.items = [item for p in parts for item in p.items]
        out.info = [info for p in parts for info in p.info]
        return out


def _crop(arr: np.ndarray, centre: np.ndarray, roi: Sequence[int]) -> np.ndarray:
    """``arr[..., roi around centre]``, shifted to stay inside and zero-padded where the box is smaller."""
    shape = np.array(arr.shape[-3:])
    lo = np.clip(centre - np.array(roi) // 2, 0, np.maximum(shape - roi, 0))
    out = arr[(...,) + tuple(slice(a, a + r) for a, r in zip(lo, roi))]
    pad = [(0, 0)] * (out.ndim - 3) + [(0, r - s) for r, s in zip(roi, out.shape[-3:])]
    return np.pad(out, pad)


def perturb_host(host: np.ndarray, rng: np.random.Generator, max_growth: int) -> np.ndarray:
    """A host mask as an organ model might draw it: holes closed (vessels inside the organ) half of the time, then
    grown by ``r`` voxels, ``r`` uniform in ``[-1, max_growth]`` (-1: eroded by one voxel). Returns float32."""
    host = np.asarray(host) > 0
    if rng.random() < 0.5:
        host = ndi.binary_closing(host, iterations=2) | host
    r = int(rng.integers(-1, max_growth + 1))
    if r > 0:
        host = ndi.binary_dilation(host, iterations=r)
    elif r < 0:
        host = ndi.binary_erosion(host)
    return host.astype(np.float32)


class CropSampler:
    """Random training crops from ``HostBoxes`` (see the module docstring)."""

    def __init__(self, boxes: HostBoxes, roi_size: Sequence[int], positive_fraction: float = 0.5,
                 jitter: int = 8, host_jitter: int = 0, hard_negative_fraction: float = 0.0, seed: int = 0):
        self.boxes, self.roi = boxes, np.array(roi_size, int)
        self.positive_fraction, self.jitter, self.host_jitter = float(positive_fraction), int(jitter), int(host_jitter)
        self.hard_negative_fraction = float(hard_negative_fraction)
        self.rng = np.random.default_rng(seed)
        self.by_host: dict[str, tuple[list[int], list[int]]] = {}
        self.lesion_free = [i for i, item in enumerate(boxes.items) if not item[1].any()]
        self.hard: list[tuple[int, np.ndarray]] = []  # (box, peak voxel) from the last mine_hard_negatives
        for i, info in enumerate(boxes.info):
            kind = info["host"].split("_")[0]  # kidney_left / kidney_right share one kind
            every, positive = self.by_host.setdefault(kind, ([], []))
            every.append(i)
            if boxes.items[i][1].any():
                positive.append(i)
        if not self.by_host:
            raise ValueError("lesion stage: no host box to train on")

    @torch.no_grad()
    def mine_hard_negatives(self, network: torch.nn.Module, boxes: int, overlap: float = 0.25,
                            device: Any = "cpu") -> list[float]:
        """Run ``network`` (sliding windows, as at inference) over ``boxes`` random lesion-free boxes and keep the
        quarter whose peak logit, over their labelled channels inside the host dilated by one voxel (the loss's
        region), is highest, with that peak's voxel; returns the kept peak logits, highest first."""
        if not self.lesion_free:
            return []
        chosen = self.rng.choice(self.lesion_free, size=min(int(boxes), len(self.lesion_free)), replace=False)
        was_training = network.training
        network.eval()
        found = []
        for i in chosen:
            x, _, valid, host = self.boxes.items[int(i)]
            inputs = torch.from_numpy(x.astype(np.float32))[None].to(device)
            logits = window_logits(network, inputs, self.roi, 8, overlap)[0].cpu().numpy()
            region = ndi.binary_dilation(host > 0, np.ones((3, 3, 3), bool))
            peak_map = np.where(region, logits[np.asarray(valid) > 0].max(0), -np.inf)
            peak = np.unravel_index(int(np.argmax(peak_map)), peak_map.shape)
            found.append((float(peak_map[peak]), int(i), np.array(peak)))
        network.train(was_training)
        found.sort(key=lambda f: -f[0])
        kept = found[: max(1, len(found) // 4)]
        self.hard = [(i, peak) for _, i, peak in kept]
        return [f[0] for f in kept]

    def crop(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.hard and self.rng.random() < self.hard_negative_fraction:
            i, point = self.hard[self.rng.integers(len(self.hard))]
            x, target, valid, host = self.boxes.items[i]
        else:
            kinds = sorted(self.by_host)
            every, positive = self.by_host[kinds[self.rng.integers(len(kinds))]]
            use_positive = bool(positive) and self.rng.random() < self.positive_fraction
            i = (positive if use_positive else every)[self.rng.integers(len(positive if use_positive else every))]
            x, target, valid, host = self.boxes.items[i]
            points = np.argwhere(target.max(0) > 0) if use_positive else np.argwhere(host)
            point = points[self.rng.integers(len(points))]
        centre = point + self.rng.integers(-self.jitter, self.jitter + 1, 3)
        x = _crop(x, centre, self.roi).astype(np.float32)
        if self.host_jitter:
            x[2] = perturb_host(x[2] > 0, self.rng, self.host_jitter)
        return x, _crop(target, centre, self.roi), valid

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        crops = [self.crop() for _ in range(size)]
        return tuple(torch.from_numpy(np.stack([c[k] for c in crops])) for k in range(3))


def stage_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, host: torch.Tensor,
               pos_weight: float = 20.0, dice_weight: float = 1.0, case_weight: float = 0.5
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """The stage loss (module docstring). ``logits``/``target`` ``[B, C, ...]``, ``valid`` ``[B, C]`` (1 where the
    crop's host hosts the class), ``host`` ``[B, 1, ...]``. Channels with ``valid == 0`` get no gradient."""
    target = target.float()
    region = F.max_pool3d(host.float(), 3, 1, 1)  # the host dilated by one voxel
    weight = region * valid[:, :, None, None, None]
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none",
                                             pos_weight=torch.tensor(float(pos_weight), device=logits.device))
    voxel = (bce * weight).sum() / weight.sum().clamp(min=1.0)
    prob = torch.sigmoid(logits) * weight
    dims = (0, 2, 3, 4)
    positives = (target * weight).sum(dims)
    dice = 1.0 - (2.0 * (prob * target).sum(dims) + 1e-3) / (prob.sum(dims) + positives + 1e-3)
    labelled = positives > 0
    dice = dice[labelled].mean() if labelled.any() else logits.sum() * 0.0
    peak = logits.masked_fill(region.expand_as(logits) == 0, -1e4).flatten(2).amax(2)
    has_lesion = (target * weight).flatten(2).amax(2)
    case = (F.binary_cross_entropy_with_logits(peak, has_lesion, reduction="none") * valid).sum()
    case = case / valid.sum().clamp(min=1.0)
    total = voxel + dice_weight * dice + case_weight * case
    return total, {"voxel": float(voxel.detach()), "dice": float(dice.detach()), "case": float(case.detach())}


def train_lesion_stage(network: torch.nn.Module, dataset_dirs: str | Sequence[str], stage_classes: Sequence[str],
                       label_space: Any, ckpt_path: str, iterations: int = 6000, batch_size: int = 8,
                       learning_rate: float = 1e-3, warmup_iterations: int = 50, weight_decay: float = 1e-4,
                       roi_size: Sequence[int] = (32, 32, 32), positive_fraction: float = 0.5, host_jitter: int = 0,
                       pos_weight: float = 20.0, dice_weight: float = 1.0, case_weight: float = 0.5,
                       pixdim: Sequence[float] = (3.0, 3.0, 3.0), margin: int = 4,
                       hu_window: Sequence[float] = (-175.0, 250.0), save_every: int = 250, seed: int = 0,
                       schedule: str = "constant", initial_weights: str = "", host_dirs: Sequence[str] | None = None,
                       hard_negative_fraction: float = 0.0, hard_negative_every: int = 500,
                       hard_negative_boxes: int = 192, device: Any = "cpu") -> dict[str, Any]:
    """Train the stage network and save its state dict to ``ckpt_path`` every ``save_every`` iterations and at the
    end (atomic writes); returns a summary (iterations, last losses, boxes).

    - ``host_jitter``: perturb each crop's host channel (``perturb_host``) up to this many voxels, so that the stage
      does not learn the ground-truth organ outline, which it never sees at inference (0: off).
    - ``schedule``: after the linear warm-up the learning rate stays (``constant``) or falls to 0 along a half
      cosine (``cosine``).
    - ``initial_weights``: a state dict to start from (``weights_only``), e.g. to continue a run.
    - ``host_dirs``: per folder of ``dataset_dirs``, an organ model's prediction folder to take its host masks from
      (``HostBoxes``), or ``""`` for the folder's own; the same folder may be listed twice with both.
    - ``hard_negative_fraction``: share of the crops centred on the network's own false peaks in lesion-free boxes
      (``CropSampler.mine_hard_negatives`` over ``hard_negative_boxes`` random boxes, before iteration 1 and every
      ``hard_negative_every`` iterations; 0: off)."""
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"lesion stage: schedule must be 'constant' or 'cosine', got {schedule!r}")
    if not 0.0 <= hard_negative_fraction < 1.0 or hard_negative_every < 1:
        raise ValueError(f"lesion stage: hard_negative_fraction must be in [0, 1) and hard_negative_every >= 1, got "
                         f"{hard_negative_fraction} and {hard_negative_every}")
    torch.manual_seed(seed)
    if initial_weights:
        load_weights(network, initial_weights)
    dirs = [dataset_dirs] if isinstance(dataset_dirs, (str, Path)) else list(dataset_dirs)
    host_dirs = [""] * len(dirs) if host_dirs is None else host_dirs
    hosts = [host_dirs] if isinstance(host_dirs, (str, Path)) else list(host_dirs)
    if len(hosts) != len(dirs):
        raise ValueError(f"lesion stage: {len(hosts)} host_dirs for {len(dirs)} dataset folders")
    parts = [HostBoxes(case_folders(d), stage_classes, label_space, host_dir=h or None, pixdim=pixdim, margin=margin,
                       hu_window=hu_window) for d, h in zip(dirs, hosts)]
    for d, h, part in zip(dirs, hosts, parts):
        logger.info(f"{d}: {len(part)} host boxes, hosts from {h or 'its own segmentations'}")
    boxes = HostBoxes.merged(parts)
    sampler = CropSampler(boxes, roi_size, positive_fraction, host_jitter=host_jitter,
                          hard_negative_fraction=hard_negative_fraction, seed=seed)
    network = network.to(device).train()
    opt = torch.optim.AdamW(network.parameters(), lr=learning_rate, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: _lr_factor(k, iterations, warmup_iterations, schedule))
    running: dict[str, float] = {}
    mined: list[dict[str, Any]] = []
    bar = tqdm(range(1, int(iterations) + 1), desc="lesion stage", mininterval=10)
    for it in bar:
        if hard_negative_fraction and (it - 1) % hard_negative_every == 0:
            peaks = sampler.mine_hard_negatives(network, hard_negative_boxes, device=device)
            mined.append({"iteration": it, "kept": len(peaks), "lesion_free_boxes": len(sampler.lesion_free),
                          "peak_logits": [round(peaks[0], 2), round(peaks[-1], 2)] if peaks else []})
            tqdm.write(f"hard negatives: {mined[-1]}")
        x, target, valid = (t.to(device) for t in sampler.batch(batch_size))
        loss, parts = stage_loss(network(x), target, valid, x[:, 2:3], pos_weight, dice_weight, case_weight)
        if not math.isfinite(float(loss)):
            raise FloatingPointError(f"lesion stage: loss is {float(loss)} at iteration {it}")
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running = {k: 0.98 * running.get(k, v) + 0.02 * v for k, v in parts.items()}
        bar.set_postfix({k: f"{v:.3f}" for k, v in running.items()}, refresh=False)
        if it % save_every == 0 or it == iterations:
            state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
            atomic_write(ckpt_path, lambda tmp: torch.save(state, tmp))
            logger.info(f"iteration {it}: {running} -> {ckpt_path}")
    return {"iterations": int(iterations), "boxes": len(boxes), "loss": running, "hard_negative_rounds": len(mined)}


def _lr_factor(k: int, iterations: int, warmup: int, schedule: str) -> float:
    """Learning-rate factor after ``k`` steps: linear warm-up over ``warmup`` steps, then 1 or a half cosine to 0."""
    if k < warmup:
        return (k + 1) / warmup
    if schedule == "constant":
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (k - warmup) / max(1, iterations - warmup))))


def case_flags(stage: LesionStage, boxes: HostBoxes, thresholds: Sequence[float], dilation_mm: float = 5.0,
               min_lesion_volume_mm3: float = 30.0) -> dict[str, dict[int, dict[str, Any]]]:
    """Per case and stage class: ``flags`` (flagged at each threshold, by the inference rules: host dilated by
    ``dilation_mm``, no component under ``min_lesion_volume_mm3``) and ``score`` (peak probability in the dilated
    host), over the boxes of the host masks given."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    lo, hi = stage.hu_window
    for (x, target, valid, host), info in zip(boxes.items, boxes.info):
        spacing = voxel_spacing_mm(info["affine"])
        min_vox = min_lesion_volume_mm3 / voxel_volume_mm3(info["affine"])
        host = host.astype(np.uint8)
        box, logits = stage.box_logits(x[1].astype(np.float32) * (hi - lo) + lo, host)
        region = restrict_lesions(np.ones_like(host), host, spacing, dilation_mm) > 0
        per_case = out.setdefault(info["case"], {})
        for k, c in enumerate(stage.classes):
            if not valid[k]:
                continue
            rec = per_case.setdefault(c, {"flags": [False] * len(thresholds), "score": 0.0})
            prob = np.zeros(host.shape, np.float32)
            prob[box] = 1.0 / (1.0 + np.exp(-logits[k]))
            rec["score"] = max(rec["score"], float(prob[region].max()))
            for j, t in enumerate(thresholds):
                if not rec["flags"][j]:
                    rec["flags"][j] = bool(lesion_mask(prob, t, host, spacing, dilation_mm, min_vox).any())
    return out


def calibrate_lesion_stage(stage: LesionStage, dataset_dir: str, prediction_dir: str, output_dir: str,
                           label_space: Any, grid: Sequence[float], pixdim: Sequence[float] = (3.0, 3.0, 3.0),
                           dilation_mm: float = 5.0, min_lesion_volume_mm3: float = 30.0) -> dict[str, Any]:
    """Choose each stage class's threshold on a labelled set, with the host organs the organ model predicted.

    The rule is ``configs/calibrate.json``'s for lesions (``calibration.choose_threshold``: the best
    min(sensitivity, specificity) of case-level detection). Cases whose host organs were not predicted count as
    not flagged. Writes ``lesion_stage_thresholds.json`` (``threshold``: the dict for ``lesion_stage#threshold``,
    without the classes that have no operating point; every curve and case AUC) and ``lesion_stage_thresholds.png``.
    """
    grid = sorted(float(t) for t in grid)
    if not grid or not all(0.0 < t < 1.0 for t in grid):
        raise ValueError(f"lesion stage calibration grid must hold thresholds in (0, 1), got {grid}")
    cases = case_folders(dataset_dir)
    names = [stage.names[c] for c in stage.classes]
    boxes = HostBoxes(cases, names, label_space, host_dir=prediction_dir, pixdim=pixdim, margin=stage.margin,
                      hu_window=stage.hu_window)
    found = case_flags(stage, boxes, grid, dilation_mm, min_lesion_volume_mm3)
    truth_of = {case.name: {n for n in names if _has_lesion(case, n)} for case in cases}
    per_class: dict[str, dict[str, Any]] = {}
    for c, name in zip(stage.classes, names):
        recs = [found.get(case.name, {}).get(c, {"flags": [False] * len(grid), "score": 0.0}) for case in cases]
        gt = [name in truth_of[case.name] for case in cases]
        curve = detection_curve(gt, [r["flags"] for r in recs], grid)
        per_class[name] = {"curve": curve, "chosen": choose_threshold(curve), "positives": sum(gt),
                           "negatives": len(gt) - sum(gt), "case_auc": case_level_auc(gt, [r["score"] for r in recs])}
        chosen = per_class[name]["chosen"]
        logger.info(f"{name}: " + (f"threshold {chosen['threshold']:g}, sensitivity {chosen['sensitivity']:.2f}, "
                                   f"specificity {chosen['specificity']:.2f}" if chosen else "no operating point")
                    + f", case AUC {per_class[name]['case_auc']}")
    result = {"threshold": {n: r["chosen"]["threshold"] for n, r in per_class.items() if r["chosen"]},
              "classes": per_class, "cases": len(cases), "dataset_dir": str(dataset_dir),
              "prediction_dir": str(prediction_dir)}
    out = Path(output_dir)
    atomic_write(out / "lesion_stage_thresholds.json", lambda tmp: Path(tmp).write_text(json.dumps(result, indent=2)))
    plot_detection_curves(per_class, out / "lesion_stage_thresholds.png")
    return result


def _has_lesion(case: Path, name: str) -> bool:
    """Whether ``case/segmentations/<name>.nii.gz`` exists and marks any voxel."""
    path = case / "segmentations" / f"{name}.nii.gz"
    return path.is_file() and bool(np.asarray(nib.load(path).dataobj).any())
