"""Calibrate the probability threshold of each class: lesions for case-level detection, organs for Dice.

A lesion class is reported for a case when any voxel of it survives post-processing (host-organ restriction,
minimum size), so its threshold sets the case-level sensitivity / specificity trade-off, and the network's raw
0.5 is rarely the right point for a rare, small class. :class:`ThresholdCalibrator` runs the network once per
case of a labelled calibration datalist (never the cases you report results on), keeps the probabilities,
applies the inference post-processing at every candidate threshold and picks, per lesion class, the threshold that
maximises ``min(sensitivity, specificity)`` (ties: the larger Youden index, then the higher threshold, i.e. fewer
false alarms). It also reports, per lesion class, the case-level AUC of the channel's largest logit inside its
(dilated) host organ: how well the channel ranks cases with the lesion above cases without it, whatever the
threshold. A ROC curve through sensitivity and specificity 0.8 encloses at least 0.64, so below that no threshold
reaches that point on this score: the network has to learn the lesion. Detection is judged per channel on the
network grid; ``evaluation`` reads ``combined_labels`` on the input grid, where a higher-index lesion painted over
a lower one (a kidney cyst over a kidney tumour) or a component smaller than an input voxel can hide a detection.

Organ classes (every non-lesion channel, when ``organ_grid`` is given) get the threshold of ``organ_grid`` with the
best mean Dice over the cases (a case counts where the ground truth or the prediction has the class, as in
``evaluation``; ties: the threshold nearest the current one). Each class is re-thresholded alone with the others at
their current thresholds (the exclusive competition for voxels and its own rules: left/right against the other
side's mask, components, minimum volume), on the network grid with the ground truth resampled to it (nearest
neighbour). A network trained with Dice and BCE on crops often under- or over-segments a class by a margin that
0.5 does not fit. The output ``thresholds.json`` (``threshold``: the dict to use as ``postprocess#threshold`` in
``inference.json``, plus every class's curve) comes with ``lesion_thresholds.png`` and ``organ_thresholds.png``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import ResampleToMatch
from tqdm import tqdm

from .evaluation import dice, load_datalist, load_labels
from .label_space import classes as ls_classes
from .postprocess import AnatomicalPostProcessd, SigmoidThresholdd, restrict_lesions, voxel_spacing_mm
from .writer import atomic_write, save_json

__all__ = [
    "DEFAULT_GRID",
    "detection_curve",
    "choose_threshold",
    "organ_curve",
    "choose_organ_threshold",
    "case_level_auc",
    "plot_detection_curves",
    "exclusive_rivals",
    "exclusive_winner",
    "labels_on_grid",
    "ThresholdCalibrator",
]

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


def plot_detection_curves(per_class: dict[str, dict], path: Path) -> None:
    """Sensitivity and specificity against the threshold, one panel per lesion class: ``per_class[name]`` holds
    ``curve`` (``detection_curve`` rows), ``chosen`` (a row or ``None``), ``case_auc``, ``positives``, ``negatives``."""
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


def organ_curve(grid: Sequence[float], dices: Sequence[Sequence[float]]) -> list[dict]:
    """Per grid threshold, ``{"threshold", "dice", "cases"}``: the mean Dice over the cases that count (NaN: the case
    has the class in neither mask) and their number; ``dice`` is ``None`` when no case counts. ``dices[case][j]``."""
    d = np.asarray(dices, dtype=np.float64).reshape(-1, len(grid))
    counted = (~np.isnan(d)).sum(0)
    return [{"threshold": float(t), "dice": float(np.nansum(d[:, j]) / n) if n else None, "cases": int(n)}
            for j, (t, n) in enumerate(zip(grid, counted))]


def choose_organ_threshold(curve: Sequence[dict], current: float) -> dict | None:
    """``{"threshold", "dice"}`` of the ``organ_curve`` row with the best mean Dice; ties: the threshold nearest
    ``current``. ``None`` if no case counts at any threshold."""
    rows = [r for r in curve if r["dice"] is not None]
    if not rows:
        return None
    best = max(rows, key=lambda r: (round(r["dice"], 12), -abs(r["threshold"] - current)))
    return {"threshold": best["threshold"], "dice": best["dice"]}


def exclusive_rivals(probs: np.ndarray, exclusive: Sequence[int], thresholds: Sequence[float]):
    """Per voxel, the strongest two of the ``exclusive`` channels of ``probs [K, ...]`` above their thresholds.

    Returns ``(first, first_pos, second, second_pos)``: probabilities (0 where none) and positions in ``exclusive``
    (earliest on ties). ``SigmoidThresholdd`` gives a voxel to the earliest channel with the largest probability
    above its threshold, so exclusive channel ``exclusive[j]`` at its own threshold ``t`` wins where ``p >= t``,
    ``p > 0`` and ``p`` beats the strongest other channel, a tie going to the earlier position (see
    ``exclusive_winner``).
    """
    shape = probs.shape[1:]
    first, second = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    first_pos, second_pos = np.full(shape, -1, np.int16), np.full(shape, -1, np.int16)
    for j, c in enumerate(exclusive):
        q = np.where(probs[c] >= thresholds[c], probs[c], 0.0).astype(np.float32)
        up = q > first
        down = ~up & (q > second)
        second = np.where(up, first, np.where(down, q, second))
        second_pos = np.where(up, first_pos, np.where(down, j, second_pos)).astype(np.int16)
        first = np.where(up, q, first)
        first_pos = np.where(up, j, first_pos).astype(np.int16)
    return first, first_pos, second, second_pos


def exclusive_winner(p: np.ndarray, threshold: float, j: int, rivals) -> np.ndarray:
    """Where the exclusive channel at position ``j`` (probabilities ``p``) wins at ``threshold``; ``rivals``: from
    ``exclusive_rivals``."""
    first, first_pos, second, second_pos = rivals
    is_first = first_pos == j
    rival = np.where(is_first, second, first)
    rival_pos = np.where(is_first, second_pos, first_pos)
    beats = (p > rival) | ((p == rival) & ((rival_pos < 0) | (j < rival_pos)))
    return (p >= threshold) & (p > 0) & beats


def labels_on_grid(labels: np.ndarray, affine: np.ndarray, image: MetaTensor, path) -> np.ndarray:
    """``labels`` (with their world ``affine``) resampled by nearest neighbour onto the grid of ``image``
    ``[C, ...]``; raises naming ``path`` when labels that exist fall entirely outside the image."""
    out = ResampleToMatch(mode="nearest")(
        MetaTensor(torch.from_numpy(labels)[None], affine=torch.as_tensor(affine, dtype=torch.float64)), img_dst=image)
    out = np.rint(out[0].numpy()).astype(np.uint8)
    if labels.any() and not out.any():
        raise ValueError(f"{path}: ground-truth labels do not overlap their image (a wrong pairing, or an affine "
                         "that places them elsewhere)")
    return out


class ThresholdCalibrator:
    """Choose per-class thresholds on a labelled datalist with the inference network and post-processing.

    Args:
        datalist: datalist JSON with ``image`` and ``label`` (combined labels of every class) per case (see
            ``load_datalist``).
        network: the inference network (all classes, as in ``inference.json`` without ``prompts``).
        preprocessing: the inference preprocessing (``image`` -> network-space image).
        inferer: the inference sliding-window inferer.
        thresholder: the inference ``SigmoidThresholdd`` (current thresholds, exclusive classes).
        anatomy: the inference ``AnatomicalPostProcessd`` (organ rules, host organs, dilation, minimum lesion size).
        output_dir: where ``thresholds.json``, ``lesion_thresholds.png`` and ``organ_thresholds.png`` go.
        label_space: label-space dict or path.
        base_threshold: the inference ``postprocess#threshold`` (number or dict); the chosen thresholds are merged
            into it, so the written ``threshold`` can replace it as is.
        grid: candidate thresholds of the lesion classes.
        organ_grid: candidate thresholds of the non-lesion classes; empty: organs keep their thresholds.
        datalist_key: list inside a dict datalist (default: see ``load_datalist``).
        device: where the network runs.
    """

    def __init__(self, datalist, network, preprocessing, inferer, thresholder: SigmoidThresholdd,
                 anatomy: AnatomicalPostProcessd, output_dir, label_space=None, base_threshold: float | dict = 0.5,
                 grid: Sequence[float] = DEFAULT_GRID, organ_grid: Sequence[float] = (),
                 datalist_key: str | None = None, device=None):
        self.entries = load_datalist(datalist, datalist_key)
        self.network, self.preprocessing, self.inferer = network, preprocessing, inferer
        self.thresholder, self.anatomy = thresholder, anatomy
        self.output_dir = Path(output_dir)
        self.base_threshold = base_threshold
        self.grid = self._check_grid(grid, "calibration grid")
        self.organ_grid = self._check_grid(organ_grid, "organ calibration grid") if len(organ_grid) else []
        recs = ls_classes(label_space)
        self.names = {int(c["index"]): c["file_name"] for c in recs}
        self.lesions = [c for c in self.thresholder.classes if c in anatomy.hosts]
        self.organs = [c for c in self.thresholder.classes if c not in anatomy.hosts] if self.organ_grid else []
        if not self.lesions and not self.organs:
            raise ValueError("calibration: the network produces no lesion class and organ_grid is empty")
        self.device = device

    @staticmethod
    def _check_grid(grid: Sequence[float], what: str) -> list[float]:
        out = sorted(float(t) for t in grid)
        if not out or not all(0.0 < t < 1.0 for t in out):
            raise ValueError(f"{what} must hold thresholds in (0, 1), got {list(grid)}")
        return out

    def _case(self, entry: dict) -> tuple[dict[int, bool], dict[int, list[bool]], dict[int, float], dict[int, list]]:
        """For one case: per lesion class its ground-truth presence, found-at-each-threshold and case score (largest
        logit in the dilated host); per organ class its Dice at each ``organ_grid`` threshold."""
        gt, gt_affine = load_labels(entry["label"], "ground-truth labels")
        present = {c: bool((gt == c).any()) for c in self.lesions}
        d = self.preprocessing({"image": entry["image"]})
        with torch.no_grad():
            logits = self.inferer(d["image"][None].to(self.device), self.network)[0]
        if not isinstance(logits, MetaTensor):
            logits = MetaTensor(logits, meta=d["image"].meta)
        classes = self.thresholder.classes
        lesion_logits = {c: logits[classes.index(c)].numpy().copy() for c in self.lesions}
        probs = torch.sigmoid(logits.as_tensor()).numpy() if self.organs else None
        out = self.thresholder({"pred": logits})
        masks = np.ascontiguousarray(out["pred"].numpy(), dtype=np.uint8)
        affine = logits.affine.numpy()
        space = str(logits.meta.get("space", "RAS"))
        midline = self.anatomy.image_midline(d, masks.shape[1:], affine, space) if self.anatomy.pairs else None
        dices = {}
        if self.organs:
            gt_net = labels_on_grid(gt, gt_affine, d["image"], entry["label"])
            dices = self._organ_dices(probs, masks, gt_net, affine, space, midline)
            del probs
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
            probs_c = torch.sigmoid(torch.from_numpy(lesion_logits[c])).numpy()
            found[c] = [bool(self.anatomy.drop_small_lesions((region & (probs_c >= t)).astype(np.uint8),
                                                             affine).any()) for t in self.grid]
        return present, found, score, dices

    def _organ_dices(self, probs: np.ndarray, masks: np.ndarray, gt: np.ndarray, affine: np.ndarray, space: str,
                     midline: float | None) -> dict[int, list[float]]:
        """Dice of each organ class at each ``organ_grid`` threshold, the other classes at their current ones.

        ``probs``: ``[K, ...]`` sigmoids; ``masks``: the thresholder's masks before the anatomical rules (the other
        side of a pair); ``gt``: labels on the same grid."""
        classes, thr = self.thresholder.classes, self.thresholder.thresholds
        exclusive = self.thresholder.exclusive
        rivals = exclusive_rivals(probs, exclusive, thr) if exclusive else None
        partner_of = {**{r: l for r, l in self.anatomy.pairs}, **{l: r for r, l in self.anatomy.pairs}}
        ch = {c: i for i, c in enumerate(classes)}
        out = {}
        for c in self.organs:
            k = ch[c]
            partner = masks[ch[partner_of[c]]] if partner_of.get(c) in ch else None
            truth = gt == c
            row = []
            for t in self.organ_grid:
                if k in exclusive:
                    m = exclusive_winner(probs[k], t, exclusive.index(k), rivals)
                else:
                    m = probs[k] >= t
                m = self.anatomy.organ_mask(c, m.astype(np.uint8), partner, affine, space, midline)
                row.append(dice(m > 0, truth))
            out[c] = row
        return out

    def run(self) -> dict[str, Any]:
        """Run every case, choose the thresholds, write the JSON and the plots; returns the JSON content."""
        self.network.eval()
        gt = {c: [] for c in self.lesions}
        found = {c: [] for c in self.lesions}
        scores = {c: [] for c in self.lesions}
        dices = {c: [] for c in self.organs}
        for entry in tqdm(self.entries, desc="calibration cases", unit="case"):
            present, hits, score, organ_dice = self._case(entry)
            for c in self.lesions:
                gt[c].append(present[c])
                found[c].append(hits[c])
                scores[c].append(score[c])
            for c in self.organs:
                dices[c].append(organ_dice[c])
        threshold = dict(self.base_threshold) if isinstance(self.base_threshold, dict) else {
            "default": float(self.base_threshold)}
        current = {c: self.thresholder.thresholds[self.thresholder.classes.index(c)]
                   for c in self.lesions + self.organs}
        per_class = {}
        for c in self.lesions:
            curve = detection_curve(gt[c], found[c], self.grid)
            best = choose_threshold(curve)
            name = self.names[c]
            per_class[name] = {"positives": int(sum(gt[c])), "negatives": len(gt[c]) - int(sum(gt[c])),
                               "chosen": best, "case_auc": case_level_auc(gt[c], scores[c]), "curve": curve}
            threshold[name] = best["threshold"] if best else current[c]
            if best is None:
                logger.warning(f"calibration: no operating point for {name} (no positive or no negative case, never "
                               "found without a false alarm in every negative case, or no better than chance); "
                               f"threshold kept at {current[c]}")
        per_organ = {}
        for c in self.organs:
            name = self.names[c]
            curve = organ_curve(self.organ_grid, dices[c])
            best = choose_organ_threshold(curve, current[c])
            per_organ[name] = {"current": current[c], "chosen": best, "curve": curve}
            threshold[name] = best["threshold"] if best else current[c]
        result = {"cases": len(self.entries), "grid": self.grid, "organ_grid": self.organ_grid, "threshold": threshold,
                  "classes": per_class, "organs": per_organ}
        save_json(self.output_dir / "thresholds.json", result)
        if per_class:
            plot_detection_curves(per_class, self.output_dir / "lesion_thresholds.png")
        if per_organ:
            self._plot_organs(per_organ, self.output_dir / "organ_thresholds.png")
        for name, rec in per_class.items():
            b, auc = rec["chosen"], rec["case_auc"]
            print(f"{name:24s} +{rec['positives']:>2} -{rec['negatives']:>2} AUC {'n/a' if auc is None else f'{auc:.2f}'} "
                  + (f"threshold {b['threshold']:g}: sensitivity {b['sensitivity']:.2f} specificity "
                     f"{b['specificity']:.2f}" if b else "no operating point: threshold kept"))
        for name, rec in per_organ.items():
            b = rec["chosen"]
            at = {r["threshold"]: r["dice"] for r in rec["curve"]}.get(rec["current"])
            print(f"{name:28s} " + (f"threshold {b['threshold']:g}: mean Dice {b['dice']:.3f}" if b else
                                    "no case has it: threshold kept")
                  + (f" (at the current {rec['current']:g}: {at:.3f})" if at is not None else ""))
        return result

    @staticmethod
    def _plot_organs(per_organ: dict[str, dict], path: Path) -> None:
        """Mean Dice against the threshold, one small panel per organ class, the chosen threshold dashed."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        n = len(per_organ)
        cols = min(n, 5)
        rows = -(-n // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.0 * rows), sharex=True, squeeze=False)
        for ax, (name, rec) in zip(axes.ravel(), per_organ.items()):
            t = [r["threshold"] for r in rec["curve"]]
            ax.plot(t, [np.nan if r["dice"] is None else r["dice"] for r in rec["curve"]], "-o", ms=2)
            ax.axvline(rec["current"], color="grey", lw=0.6, ls=":")
            if rec["chosen"]:
                ax.axvline(rec["chosen"]["threshold"], color="tab:red", lw=0.8, ls="--")
            ax.set_title(name, fontsize=7)
            ax.tick_params(labelsize=6)
        for ax in axes.ravel()[n:]:
            ax.axis("off")
        fig.suptitle("mean Dice vs threshold (dotted: current, dashed: chosen)", fontsize=8)
        fig.tight_layout()
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
        plt.close(fig)
