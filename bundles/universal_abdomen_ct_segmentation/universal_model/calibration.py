"""Calibrate the probability threshold of each lesion channel for case-level detection.

A lesion class is reported for a case when any voxel of it survives post-processing (host-organ restriction,
minimum size), so its threshold sets the case-level sensitivity / specificity trade-off, and the network's raw
0.5 is rarely the right point for a rare, small class. :class:`LesionThresholdCalibrator` runs the network once per
case of a labelled calibration datalist (never the cases you report results on), keeps the lesion probabilities,
applies the inference post-processing at every candidate threshold and picks, per class, the threshold that
maximises ``min(sensitivity, specificity)`` (ties: the larger Youden index, then the higher threshold, i.e. fewer
false alarms). It writes ``lesion_thresholds.json`` (``threshold``: the dict to use as ``postprocess#threshold`` in
``inference.json``, plus every class's curve) and ``lesion_thresholds.png``. It also reports, per class, the case-level
AUC of the channel's largest logit inside its (dilated) host organ: how well the channel ranks cases with the lesion
above cases without it, whatever the threshold. A ROC curve through sensitivity and specificity 0.8 encloses at
least 0.64, so below that no threshold reaches that point on this score: the network has to learn the lesion. Detection is judged per channel on the
network grid; ``evaluation`` reads ``combined_labels`` on the input grid, where a higher-index lesion painted over
a lower one (a kidney cyst over a kidney tumour) or a component smaller than an input voxel can hide a detection.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from tqdm import tqdm

from .evaluation import load_datalist, load_labels
from .label_space import classes as ls_classes
from .postprocess import AnatomicalPostProcessd, SigmoidThresholdd, restrict_lesions, voxel_spacing_mm
from .writer import atomic_write, save_json

__all__ = ["DEFAULT_GRID", "detection_curve", "choose_threshold", "case_level_auc", "LesionThresholdCalibrator"]

logger = logging.getLogger(__name__)
DEFAULT_GRID = (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)


def detection_curve(gt: Sequence[bool], pred: Sequence[Sequence[bool]], grid: Sequence[float]) -> list[dict]:
    """Case-level counts per threshold: ``gt[i]``: case ``i`` has the class; ``pred[i][j]``: found at ``grid[j]``."""
    gt_a = np.asarray(gt, dtype=bool)
    pred_a = np.asarray(pred, dtype=bool).reshape(len(gt_a), len(grid))
    rows = []
    for j, t in enumerate(grid):
        p = pred_a[:, j]
        tp, fn = int((p & gt_a).sum()), int((~p & gt_a).sum())
        tn, fp = int((~p & ~gt_a).sum()), int((p & ~gt_a).sum())
        rows.append({"threshold": float(t), "tp": tp, "fn": fn, "tn": tn, "fp": fp,
                     "sensitivity": tp / (tp + fn) if tp + fn else None,
                     "specificity": tn / (tn + fp) if tn + fp else None})
    return rows


def choose_threshold(curve: Sequence[dict]) -> dict | None:
    """Row maximising ``min(sens, spec)``, then ``sens + spec``, then the threshold.

    ``None`` without both positive and negative cases, when no threshold finds a lesion without a false alarm in
    every negative case (``min(sens, spec) == 0`` throughout: the channel cannot be calibrated, only switched off), or
    when the best row is no better than chance (``sens + spec <= 1``: a detector that is not an operating point).
    """
    if not curve or curve[0]["sensitivity"] is None or curve[0]["specificity"] is None:
        return None
    best = max(curve, key=lambda r: (min(r["sensitivity"], r["specificity"]),
                                     r["sensitivity"] + r["specificity"], r["threshold"]))
    usable = min(best["sensitivity"], best["specificity"]) > 0 and best["sensitivity"] + best["specificity"] > 1
    return best if usable else None


def case_level_auc(gt: Sequence[bool], scores: Sequence[float]) -> float | None:
    """Probability that a case with the lesion scores above a case without it (ties count one half).

    The Mann-Whitney estimate of the area under the case-level ROC curve; ``None`` without both kinds of case.
    """
    gt_a = np.asarray(gt, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    pos, neg = s[gt_a], s[~gt_a]
    if not len(pos) or not len(neg):
        return None
    above = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(above / (len(pos) * len(neg)))


class LesionThresholdCalibrator:
    """Choose per-lesion-class thresholds on a labelled datalist with the inference network and post-processing.

    Args:
        datalist: datalist JSON with ``image`` and ``label`` (combined labels) per case (see ``load_datalist``).
        network: the inference network (all classes, as in ``inference.json`` without ``prompts``).
        preprocessing: the inference preprocessing (``image`` -> network-space image).
        inferer: the inference sliding-window inferer.
        thresholder: the inference ``SigmoidThresholdd`` (organ thresholds for the host masks).
        anatomy: the inference ``AnatomicalPostProcessd`` (host organs, dilation, minimum lesion size).
        output_dir: where ``lesion_thresholds.json`` / ``.png`` go.
        label_space: label-space dict or path.
        base_threshold: the inference ``postprocess#threshold`` (number or dict); the chosen lesion thresholds are
            merged into it, so the written ``threshold`` can replace it as is.
        grid: candidate thresholds.
        datalist_key: list inside a dict datalist (default: see ``load_datalist``).
        device: where the network runs.
    """

    def __init__(self, datalist, network, preprocessing, inferer, thresholder: SigmoidThresholdd,
                 anatomy: AnatomicalPostProcessd, output_dir, label_space=None, base_threshold: float | dict = 0.5,
                 grid: Sequence[float] = DEFAULT_GRID, datalist_key: str | None = None, device=None):
        self.entries = load_datalist(datalist, datalist_key)
        self.network, self.preprocessing, self.inferer = network, preprocessing, inferer
        self.thresholder, self.anatomy = thresholder, anatomy
        self.output_dir = Path(output_dir)
        self.base_threshold = base_threshold
        self.grid = sorted(float(t) for t in grid)
        if not self.grid or not all(0.0 < t < 1.0 for t in self.grid):
            raise ValueError(f"calibration grid must hold thresholds in (0, 1), got {list(grid)}")
        recs = ls_classes(label_space)
        self.names = {int(c["index"]): c["file_name"] for c in recs}
        self.lesions = [c for c in self.thresholder.classes if c in anatomy.hosts]
        if not self.lesions:
            raise ValueError("calibration: the network produces no lesion class")
        self.device = device

    def _case(self, entry: dict) -> tuple[dict[int, bool], dict[int, list[bool]], dict[int, float]]:
        """Ground-truth presence, found-at-each-threshold and case score (largest logit in the dilated host) of
        every lesion class for one case."""
        gt, _ = load_labels(entry["label"], "ground-truth labels")
        present = {c: bool((gt == c).any()) for c in self.lesions}
        d = self.preprocessing({"image": entry["image"]})
        with torch.no_grad():
            logits = self.inferer(d["image"][None].to(self.device), self.network)[0]
        if not isinstance(logits, MetaTensor):
            logits = MetaTensor(logits, meta=d["image"].meta)
        classes = self.thresholder.classes
        lesion_logits = {c: logits[classes.index(c)].numpy().copy() for c in self.lesions}
        out = self.thresholder({"pred": logits})
        masks = np.ascontiguousarray(out["pred"].numpy(), dtype=np.uint8)
        affine = logits.affine.numpy()
        space = str(logits.meta.get("space", "RAS"))
        midline = self.anatomy.image_midline(d, masks.shape[1:], affine, space) if self.anatomy.pairs else None
        self.anatomy.apply(masks, classes, affine, space, midline)
        found, score = {}, {}
        for c in self.lesions:
            # the host rule is a voxel-wise AND: the allowed region is computed once per class (one distance
            # transform), then only the size rule is re-run at each threshold
            region = np.ones(masks.shape[1:], dtype=bool)
            host = self.anatomy.host_mask(masks, classes, c)
            if host is not None:
                region = restrict_lesions(region.astype(np.uint8), host, voxel_spacing_mm(affine),
                                          self.anatomy.dilation_mm) > 0
            score[c] = float(lesion_logits[c][region].max()) if region.any() else float("-inf")
            probs = torch.sigmoid(torch.from_numpy(lesion_logits[c])).numpy()
            found[c] = [bool(self.anatomy.drop_small_lesions((region & (probs >= t)).astype(np.uint8),
                                                             affine).any()) for t in self.grid]
        return present, found, score

    def run(self) -> dict[str, Any]:
        """Run every case, choose the thresholds, write the JSON and the plot; returns the JSON content."""
        self.network.eval()
        gt = {c: [] for c in self.lesions}
        found = {c: [] for c in self.lesions}
        scores = {c: [] for c in self.lesions}
        for entry in tqdm(self.entries, desc="calibration cases", unit="case"):
            present, hits, score = self._case(entry)
            for c in self.lesions:
                gt[c].append(present[c])
                found[c].append(hits[c])
                scores[c].append(score[c])
        per_class = {}
        threshold = dict(self.base_threshold) if isinstance(self.base_threshold, dict) else {
            "default": float(self.base_threshold)}
        for c in self.lesions:
            curve = detection_curve(gt[c], found[c], self.grid)
            best = choose_threshold(curve)
            name = self.names[c]
            current = self.thresholder.thresholds[self.thresholder.classes.index(c)]
            per_class[name] = {"positives": int(sum(gt[c])), "negatives": len(gt[c]) - int(sum(gt[c])),
                               "chosen": best, "case_auc": case_level_auc(gt[c], scores[c]), "curve": curve}
            threshold[name] = best["threshold"] if best else current
            if best is None:
                logger.warning(f"calibration: no operating point for {name} (no positive or no negative case, never "
                               "found without a false alarm in every negative case, or no better than chance); "
                               f"threshold kept at {current}")
        result = {"cases": len(self.entries), "grid": self.grid, "threshold": threshold, "classes": per_class}
        save_json(self.output_dir / "lesion_thresholds.json", result)
        self._plot(per_class, self.output_dir / "lesion_thresholds.png")
        for name, rec in per_class.items():
            b, auc = rec["chosen"], rec["case_auc"]
            print(f"{name:24s} +{rec['positives']:>2} -{rec['negatives']:>2} AUC {'n/a' if auc is None else f'{auc:.2f}'} "
                  + (f"threshold {b['threshold']:g}: sensitivity {b['sensitivity']:.2f} specificity "
                     f"{b['specificity']:.2f}" if b else "no operating point: threshold kept"))
        return result

    @staticmethod
    def _plot(per_class: dict[str, dict], path: Path) -> None:
        """Sensitivity and specificity against the threshold, one panel per lesion class."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        n = len(per_class)
        fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.8), sharey=True, squeeze=False)
        for ax, (name, rec) in zip(axes[0], per_class.items()):
            t = [r["threshold"] for r in rec["curve"]]
            for key, style in (("sensitivity", "-o"), ("specificity", "-s")):
                ax.plot(t, [np.nan if r[key] is None else r[key] for r in rec["curve"]], style, ms=3, label=key)
            if rec["chosen"]:
                ax.axvline(rec["chosen"]["threshold"], color="grey", lw=0.8, ls="--")
            auc = "n/a" if rec["case_auc"] is None else f"{rec['case_auc']:.2f}"
            ax.set_title(f"{name}\n+{rec['positives']} / -{rec['negatives']}, case AUC {auc}", fontsize=8)
            ax.set_xlabel("threshold", fontsize=8)
            ax.set_ylim(-0.05, 1.05)
        axes[0][0].legend(fontsize=7, loc="lower left")
        fig.tight_layout()
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
        plt.close(fig)
