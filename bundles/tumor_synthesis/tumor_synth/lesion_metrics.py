"""Lesion-level evaluation: Dice and connected-component detection sensitivity stratified by diameter (mm)."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

DIAMETER_BINS_MM = (10.0, 20.0)  # < 10 mm, 10-20 mm, > 20 mm
_CONNECTIVITY = np.ones((3, 3, 3), bool)


def diameter_bin(d_mm: float, edges: tuple[float, ...] = DIAMETER_BINS_MM) -> str:
    """Name of the diameter bin ('<10 mm', '10-20 mm', '>20 mm' for the default edges)."""
    if d_mm < edges[0]:
        return f"<{edges[0]:g} mm"
    for lo, hi in zip(edges[:-1], edges[1:]):
        if d_mm <= hi:
            return f"{lo:g}-{hi:g} mm"
    return f">{edges[-1]:g} mm"


def dice(pred: np.ndarray, truth: np.ndarray) -> float | None:
    """Dice of two boolean masks; None when both are empty."""
    denom = int(pred.sum()) + int(truth.sum())
    return None if denom == 0 else 2.0 * int(np.logical_and(pred, truth).sum()) / denom


def detect_lesions(pred: np.ndarray, truth: np.ndarray, spacing: Any) -> list[dict[str, Any]]:
    """Per ground-truth lesion (26-connected component): equivalent diameter (mm) and whether any predicted
    voxel overlaps it (hit counting, as in Hu et al.'s small-tumor analysis).

    Args:
        pred: (X, Y, Z) boolean prediction of one class.
        truth: (X, Y, Z) boolean ground truth of the same class.
        spacing: voxel size in mm.
    """
    comps, n = ndimage.label(truth, structure=_CONNECTIVITY)
    if n == 0:
        return []
    index = np.arange(1, n + 1)
    voxels = ndimage.sum_labels(np.ones_like(truth, dtype=np.float32), comps, index)
    hits = ndimage.maximum(pred.astype(np.uint8), comps, index)
    vox_mm3 = float(np.prod(np.asarray(spacing, dtype=float)[:3]))
    return [
        {"diameter_mm": round(float((6.0 * v * vox_mm3 / np.pi) ** (1 / 3)), 2), "voxels": int(v), "detected": bool(h)}
        for v, h in zip(voxels, hits)
    ]


def false_positive_components(pred: np.ndarray, truth: np.ndarray) -> int:
    """Number of predicted components that touch no ground-truth voxel."""
    comps, n = ndimage.label(pred, structure=_CONNECTIVITY)
    if n == 0:
        return 0
    hits = ndimage.maximum(truth.astype(np.uint8), comps, np.arange(1, n + 1))
    return int(np.sum(np.asarray(hits) == 0))


def summarize(lesions: list[dict[str, Any]], edges: tuple[float, ...] = DIAMETER_BINS_MM) -> dict[str, dict[str, Any]]:
    """Sensitivity per diameter bin (and 'all') from :func:`detect_lesions` records."""
    names = [diameter_bin(e - 1e-6, edges) for e in edges] + [diameter_bin(edges[-1] + 1, edges)]
    out = {}
    for name in names + ["all"]:
        sel = [r for r in lesions if name == "all" or diameter_bin(r["diameter_mm"], edges) == name]
        hit = sum(r["detected"] for r in sel)
        out[name] = {"lesions": len(sel), "detected": hit, "sensitivity": round(hit / len(sel), 4) if sel else None}
    return out
