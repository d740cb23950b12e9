"""Lesion-level detection by size: which ground-truth lesions a prediction finds, and how many lesions it invents.

Case-level detection (``evaluation``) says whether a case with a lesion class is flagged, not which lesions were
missed; small lesions are where a detector fails first (a 7 mm cyst is a handful of voxels on a 3 mm network grid).
Per lesion class, every 26-connected component of the ground truth is one lesion. It is *found* when any predicted
voxel of the same class lies in it (the lenient hit rule: it scores detection, not delineation, which Dice does).
Every predicted component of the class that touches no ground-truth lesion of the class is a *false-positive lesion*.
Lesions are binned by their largest diameter (``report.component_diameter_mm``, as in ``report.json``), by default
below 10 mm, 10-20 mm and 20 mm or more: 10 mm is the smallest lesion RECIST 1.1 counts as measurable on CT.

The tumour-synthesis bundle has a lesion metric with the same hit rule (``tumor_synth.lesion_metrics``). It is not
imported here because each bundle is a standalone package (``ARCHITECTURE.md``), and it measures the equivalent-sphere
diameter of Hu et al.'s small-tumour analysis, while this bundle reports the largest diameter everywhere
(``report.json``: "this pancreatic tumor is 25 mm"), which is also what RECIST measures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from .postprocess import STRUCTURE_26, bounding_box, voxel_volume_mm3
from .report import component_diameter_mm
from .writer import atomic_write

__all__ = ["DEFAULT_SIZE_BINS_MM", "match_lesions", "size_bin_names", "size_bin", "summarise_lesions",
           "format_lesion_table", "plot_sensitivity_by_size"]

DEFAULT_SIZE_BINS_MM = (10.0, 20.0)


def match_lesions(pred: np.ndarray, gt: np.ndarray, affine: np.ndarray) -> tuple[list[dict[str, Any]], int]:
    """Binary masks of one class on one grid -> per ground-truth lesion ``{diameter_mm, volume_ml, found}`` (largest
    first) and the number of predicted components that touch no ground-truth lesion."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    box = bounding_box(pred | gt)
    if box is None:
        return [], 0
    p, g = pred[box], gt[box]
    origin = np.array([s.start for s in box])
    voxel_ml = voxel_volume_mm3(affine) / 1000.0
    gt_lab, _ = ndimage.label(g, structure=STRUCTURE_26)
    lesions = []
    for comp, sl in enumerate(ndimage.find_objects(gt_lab), start=1):
        sub = gt_lab[sl] == comp
        start = origin + np.array([s.start for s in sl])
        lesions.append({"diameter_mm": round(component_diameter_mm(sub, start, affine), 1),
                        "volume_ml": round(int(np.count_nonzero(sub)) * voxel_ml, 3),
                        "found": bool(p[sl][sub].any())})
    pred_lab, n_pred = ndimage.label(p, structure=STRUCTURE_26)
    touching = np.unique(pred_lab[g & p])
    false_positives = n_pred - int(np.count_nonzero(touching))
    return sorted(lesions, key=lambda r: -r["diameter_mm"]), false_positives


def size_bin_names(edges_mm: Sequence[float]) -> list[str]:
    """Names of the bins that ``edges_mm`` (increasing) cut the diameter axis into, e.g. ``<10 mm``, ``10-20 mm``."""
    edges = [float(e) for e in edges_mm]
    if any(b <= a for a, b in zip(edges, edges[1:])) or any(e <= 0 for e in edges):
        raise ValueError(f"lesion size bins must be positive and increasing (mm), got {list(edges_mm)}")
    if not edges:
        return ["all sizes"]
    names = [f"<{edges[0]:g} mm"] + [f"{a:g}-{b:g} mm" for a, b in zip(edges, edges[1:])]
    return names + [f">={edges[-1]:g} mm"]


def size_bin(diameter_mm: float, edges_mm: Sequence[float]) -> str:
    """The bin of one diameter (a diameter equal to an edge goes to the upper bin)."""
    return size_bin_names(edges_mm)[int(np.searchsorted(np.asarray(edges_mm, float), diameter_mm, side="right"))]


def summarise_lesions(lesions: Sequence[dict], false_positives: dict[str, list[int]],
                      edges_mm: Sequence[float]) -> list[dict[str, Any]]:
    """One row per lesion class and size bin, then an ``all sizes`` row per class.

    ``lesions``: records with ``class``, ``size_bin`` and ``found``; ``false_positives``: per class, the count of each
    scored case (the row's ``false_positive_lesions`` and ``cases``).
    """
    rows = []
    for name, fps in false_positives.items():
        mine = [r for r in lesions if r["class"] == name]
        for label in size_bin_names(edges_mm) + ["all sizes"]:
            sel = mine if label == "all sizes" else [r for r in mine if r["size_bin"] == label]
            if not sel and label != "all sizes":
                continue
            found = sum(r["found"] for r in sel)
            row = {"class": name, "size": label, "lesions": len(sel), "found": found,
                   "sensitivity": round(found / len(sel), 4) if sel else None}
            if label == "all sizes":
                row.update({"cases": len(fps), "false_positive_lesions": int(sum(fps)),
                            "false_positives_per_case": round(sum(fps) / len(fps), 3) if fps else None})
            rows.append(row)
    return rows


def format_lesion_table(rows: Sequence[dict]) -> str:
    """Plain-text table of :func:`summarise_lesions` rows."""
    lines = [f"{'lesion class':<22} {'size':<10} {'found':>9} {'sens':>6} {'FP/case':>8}"]
    for r in rows:
        sens = "   -  " if r["sensitivity"] is None else f"{r['sensitivity']:6.3f}"
        fp = r.get("false_positives_per_case")
        lines.append(f"{r['class']:<22} {r['size']:<10} {r['found']:>4}/{r['lesions']:<4} {sens} "
                     f"{'' if fp is None else f'{fp:8.2f}'}")
    return "\n".join(lines)


def plot_sensitivity_by_size(rows: Sequence[dict], edges_mm: Sequence[float], path: Path) -> bool:
    """Bar chart of lesion sensitivity per size bin (the same bins in every panel, ``none`` where a class has no
    lesion of that size), one panel per class with ground-truth lesions; ``False`` (and no file) when none has any."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    totals = {r["class"]: r for r in rows if r["size"] == "all sizes" and r["lesions"]}
    if not totals:
        return False
    names = size_bin_names(edges_mm)
    cols = min(len(totals), 4)
    fig, axes = plt.subplots(-(-len(totals) // cols), cols, figsize=(2.6 * cols + 0.4, 2.6 * -(-len(totals) // cols)),
                             sharey=True, squeeze=False)
    for ax, (name, total) in zip(axes.ravel(), totals.items()):
        by_bin = {r["size"]: r for r in rows if r["class"] == name}
        for x, label in enumerate(names):
            r = by_bin.get(label)
            height = r["sensitivity"] if r else 0.0
            ax.bar(x, height, color="tab:blue")
            ax.text(x, height + 0.02, f"{r['found']}/{r['lesions']}" if r else "none", ha="center", fontsize=7)
        ax.set_xticks(range(len(names)), names, fontsize=7)
        ax.set_title(f"{name}\n{total['false_positives_per_case']:.2f} false-positive lesions / case", fontsize=8)
        ax.set_ylim(0, 1.12)
    for ax in axes.ravel()[len(totals):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("lesions found", fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return True
