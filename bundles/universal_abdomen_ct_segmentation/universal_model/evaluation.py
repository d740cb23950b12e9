"""Score predictions (``<prediction_dir>/<case>/combined_labels.nii.gz``) against ground-truth combined labels.

Per case and class: Dice and normalised surface Dice (NSD, MONAI ``compute_surface_dice`` with a tolerance in mm).
Classes absent from both ground truth and prediction give no number (NaN, left out of means); classes not listed in
a case's ``labels_present`` (partial labels) are ignored. Per lesion class, case-level detection: a case is positive
when its ground truth has the class, predicted positive when the (post-processed) prediction has any voxel of it;
sensitivity = TP / (TP + FN), specificity = TN / (TN + FP). Per lesion class and size bin, lesion-level detection
(``lesion_detection``: each ground-truth lesion found or missed, false-positive lesions per case).

Both label maps use the combined convention (lesions drawn over their host organ), so organ Dice is computed on the
organ without its lesions on both sides.
"""

from __future__ import annotations

import csv
import io as _io
import math
import os
from pathlib import Path
from typing import Any, Sequence

import nibabel as nib
import numpy as np
import torch
from monai.metrics import compute_surface_dice

from .io import case_name
from .jsonfile import read_json
from .label_space import classes as ls_classes
from .lesion_detection import (DEFAULT_SIZE_BINS_MM, format_lesion_table, match_lesions, plot_sensitivity_by_size,
                               size_bin, size_bin_names, summarise_lesions)
from .postprocess import bounding_box, voxel_spacing_mm
from .writer import atomic_write, case_dir, save_json

__all__ = ["load_datalist", "load_labels", "dice", "surface_dice", "score_case", "summarise", "CohortEvaluator"]

_DATALIST_KEYS = ("evaluation", "testing", "test", "validation", "data", "training")


def load_datalist(path: str | os.PathLike, key: str | None = None) -> list[dict[str, Any]]:
    """Entries ``{"image", "label", ["labels_present"], ["case"]}`` of a datalist JSON (paths made absolute).

    A list, or a dict whose ``key`` holds the list (default: the first non-empty one of evaluation, testing, test,
    validation, data, training; ``"all"``: every list of the dict). Raises ``ValueError`` naming the file when the
    format is wrong.
    """
    p = Path(path)
    data = read_json(p, "datalist")
    if isinstance(data, dict):
        if key == "all":
            data = [e for v in data.values() if isinstance(v, list) for e in v]
        else:
            keys = [key] if key else [k for k in _DATALIST_KEYS if data.get(k)]
            if not keys or keys[0] not in data:
                raise ValueError(f"{p}: no non-empty list under {key or _DATALIST_KEYS}")
            data = data[keys[0]]
    if not isinstance(data, list) or not all(isinstance(e, dict) and "label" in e for e in data):
        raise ValueError(f"{p}: expected a list of entries with a 'label' (ground-truth combined labels)")
    out = []
    for e in data:
        e = dict(e)
        for k in ("image", "label"):
            if isinstance(e.get(k), str) and not os.path.isabs(e[k]):
                e[k] = str(p.parent / e[k])
        e.setdefault("case", case_name(e.get("image") or e["label"]))
        out.append(e)
    return out


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of two binary masks; NaN when both are empty."""
    a, b = int(np.count_nonzero(pred)), int(np.count_nonzero(gt))
    if a + b == 0:
        return float("nan")
    return 2.0 * int(np.count_nonzero(pred & gt)) / (a + b)


def surface_dice(pred: np.ndarray, gt: np.ndarray, spacing_mm: Sequence[float], tolerance_mm: float) -> float:
    """NSD at ``tolerance_mm`` (MONAI ``compute_surface_dice``) on the union's bounding box; NaN when both empty."""
    if not pred.any() and not gt.any():
        return float("nan")
    if not pred.any() or not gt.any():
        return 0.0
    margin = np.ceil(tolerance_mm / np.asarray(spacing_mm)).astype(int) + 2
    box = bounding_box(pred | gt, margin)
    p, g = (torch.from_numpy(np.ascontiguousarray(m[box])) for m in (pred, gt))
    onehot = [torch.stack([~x, x])[None].float() for x in (p, g)]
    nsd = compute_surface_dice(onehot[0], onehot[1], class_thresholds=[float(tolerance_mm)],
                               include_background=False, spacing=[float(s) for s in spacing_mm])
    return float(nsd.reshape(-1)[0])


def _present(entry: dict, by_name: dict[str, int]) -> set[int] | None:
    """Label indices the case's ground truth annotates (``labels_present``: indices, names or file names)."""
    listed = entry.get("labels_present")
    if listed is None:
        return None
    out = set()
    for item in listed:
        key = str(item).lower()
        if key.isdigit():
            out.add(int(key))
        elif key in by_name:
            out.add(by_name[key])
        else:
            raise ValueError(f"case {entry['case']}: unknown class {item!r} in labels_present")
    return out


def load_labels(path: str | os.PathLike, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8 label array, affine)`` of a NIfTI label map; errors name the file and ``what`` it is."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: {what} not found")
    try:
        img = nib.load(str(p))
        arr = np.asarray(img.dataobj)
    except Exception as e:
        raise ValueError(f"{p}: cannot read {what} ({type(e).__name__}: {e})") from e
    if arr.ndim != 3:
        raise ValueError(f"{p}: {what} must be a 3D label map, got shape {arr.shape}")
    integral = np.issubdtype(arr.dtype, np.integer) or np.array_equal(arr, np.round(arr))
    if arr.size and (arr.min() < 0 or arr.max() > 255 or not integral):
        raise ValueError(f"{p}: {what} must hold integer labels 0-255, found values in [{arr.min()}, {arr.max()}]")
    return arr.astype(np.uint8), img.affine


def score_case(pred: np.ndarray, gt: np.ndarray, affine: np.ndarray, labels: Sequence[int], lesions: set[int],
               tolerance_mm: float) -> dict[int, dict[str, Any]]:
    """Per class ``{"dice", "nsd", ["gt_positive", "pred_positive"] for lesions}`` of one case."""
    spacing = voxel_spacing_mm(affine)
    out = {}
    for c in labels:
        p, g = pred == c, gt == c
        rec = {"dice": dice(p, g), "nsd": surface_dice(p, g, spacing, tolerance_mm)}
        if c in lesions:
            rec.update({"gt_positive": bool(g.any()), "pred_positive": bool(p.any())})
        out[c] = rec
    return out


def _nanmean(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return round(float(np.mean(vals)), 4) if vals else None


def summarise(per_case: dict[str, dict[int, dict]], names: dict[int, str]) -> list[dict[str, Any]]:
    """One row per class: mean Dice / NSD over cases with a number, and case-level detection counts for lesions."""
    rows = []
    for c, name in names.items():
        recs = [r[c] for r in per_case.values() if c in r]
        if not recs:
            continue
        row: dict[str, Any] = {"index": c, "class": name, "cases": len(recs),
                               "dice": _nanmean([r["dice"] for r in recs]), "nsd": _nanmean([r["nsd"] for r in recs])}
        if "gt_positive" in recs[0]:
            tp = sum(r["gt_positive"] and r["pred_positive"] for r in recs)
            fn = sum(r["gt_positive"] and not r["pred_positive"] for r in recs)
            tn = sum(not r["gt_positive"] and not r["pred_positive"] for r in recs)
            fp = sum(not r["gt_positive"] and r["pred_positive"] for r in recs)
            row.update({"tp": tp, "fn": fn, "tn": tn, "fp": fp,
                        "sensitivity": round(tp / (tp + fn), 4) if tp + fn else None,
                        "specificity": round(tn / (tn + fp), 4) if tn + fp else None})
        rows.append(row)
    return rows


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else (round(v, 4) if isinstance(v, float) else v)


class CohortEvaluator:
    """Score every case of a datalist and write ``metrics.json``, ``summary.csv``, ``per_case.csv``, ``lesions.csv``
    (one row per ground-truth lesion) and ``lesion_detection.png`` (lesion sensitivity by size, when there are lesions).

    Args:
        datalist: datalist JSON path (see ``load_datalist``).
        prediction_dir: the inference ``output_dir`` (``<case>/combined_labels.nii.gz``).
        output_dir: where the metric files go.
        label_space: label-space dict or path.
        nsd_tolerance_mm: NSD tolerance (mm).
        datalist_key: key of the list inside a dict datalist (default: see ``load_datalist``).
        lesion_size_bins_mm: increasing diameters (mm) that cut lesions into size bins for lesion-level detection.
    """

    def __init__(self, datalist, prediction_dir, output_dir, label_space=None, nsd_tolerance_mm: float = 2.0,
                 datalist_key: str | None = None, lesion_size_bins_mm: Sequence[float] = DEFAULT_SIZE_BINS_MM):
        self.entries = load_datalist(datalist, datalist_key)
        self.prediction_dir, self.output_dir = Path(prediction_dir), Path(output_dir)
        recs = ls_classes(label_space)
        self.names = {int(c["index"]): c["file_name"] for c in recs}
        self.by_name = {k.lower(): int(c["index"]) for c in recs for k in (c["name"], c["file_name"])}
        self.lesions = {int(c["index"]) for c in recs if c.get("kind") == "lesion"}
        self.tolerance_mm = float(nsd_tolerance_mm)
        self.size_bins_mm = [float(e) for e in lesion_size_bins_mm]
        size_bin_names(self.size_bins_mm)  # fail now, naming the bins, rather than after scoring every case

    def run(self) -> dict[str, Any]:
        """Score all cases, write the files, print the table; returns the ``metrics.json`` content."""
        per_case: dict[str, dict[int, dict]] = {}
        lesions: list[dict] = []
        false_positives: dict[str, list[int]] = {self.names[c]: [] for c in sorted(self.lesions)}
        for e in self.entries:
            gt, gt_aff = load_labels(e["label"], "ground-truth labels")
            pred, pred_aff = load_labels(case_dir(self.prediction_dir, e["case"]) / "combined_labels.nii.gz",
                                          "prediction")
            if pred.shape != gt.shape:
                raise ValueError(f"{e['label']}: prediction shape {pred.shape} differs from ground truth {gt.shape}")
            if not np.allclose(pred_aff, gt_aff, atol=1e-3):
                raise ValueError(f"{e['label']}: prediction affine differs from the ground truth's (same shape): "
                                 "the prediction was not written on the input grid")
            present = _present(e, self.by_name)
            labels = [c for c in self.names if present is None or c in present]
            per_case[e["case"]] = score_case(pred, gt, gt_aff, labels, self.lesions, self.tolerance_mm)
            for c in sorted(self.lesions.intersection(labels)):
                found, fp = match_lesions(pred == c, gt == c, gt_aff)
                false_positives[self.names[c]].append(fp)
                lesions += [{"case": e["case"], "class": self.names[c], **r,
                             "size_bin": size_bin(r["diameter_mm"], self.size_bins_mm)} for r in found]
        summary = summarise(per_case, self.names)
        lesion_rows = summarise_lesions(lesions, {k: v for k, v in false_positives.items() if v}, self.size_bins_mm)
        result = {
            "nsd_tolerance_mm": self.tolerance_mm,
            "cases": len(per_case),
            "summary": summary,
            "per_case": {k: {self.names[c]: {m: _clean(v) for m, v in r.items()} for c, r in recs.items()}
                         for k, recs in per_case.items()},
            "lesion_detection": {"size_bins_mm": self.size_bins_mm, "summary": lesion_rows, "lesions": lesions},
        }
        save_json(self.output_dir / "metrics.json", result)
        self._write_csv(self.output_dir / "summary.csv", summary)
        rows = [{"case": k, "class": self.names[c], **{m: _clean(v) for m, v in r.items()}}
                for k, recs in per_case.items() for c, r in recs.items()]
        self._write_csv(self.output_dir / "per_case.csv", rows)
        self._write_csv(self.output_dir / "lesions.csv", lesions,
                        ["case", "class", "diameter_mm", "volume_ml", "size_bin", "found"])
        plot_sensitivity_by_size(lesion_rows, self.size_bins_mm, self.output_dir / "lesion_detection.png")
        print(format_table(summary, self.tolerance_mm))
        print(format_lesion_table(lesion_rows))
        return result

    @staticmethod
    def _write_csv(path: Path, rows: list[dict], fields: Sequence[str] | None = None) -> None:
        fields = list(fields or dict.fromkeys(k for r in rows for k in r))
        buf = _io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue()))


def format_table(summary: list[dict], tolerance_mm: float) -> str:
    """Plain-text table of the summary rows."""
    def f(v):
        return "   -  " if v is None else f"{v:6.3f}"

    nsd = f"NSD@{tolerance_mm:g}mm"
    lines = [f"{'class':<30} {'cases':>5} {'Dice':>6} {nsd:>9} {'sens':>6} {'spec':>6}"]
    for r in summary:
        lines.append(f"{r['class']:<30} {r['cases']:>5} {f(r['dice'])} {f(r['nsd']):>9} "
                     f"{f(r.get('sensitivity'))} {f(r.get('specificity'))}")
    return "\n".join(lines)
