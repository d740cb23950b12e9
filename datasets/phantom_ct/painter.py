"""Painting implicit shapes onto a :class:`~phantom_ct.geometry.Canvas` (painter's algorithm).

Later paints overwrite earlier ones, except where the current tissue is *protected*
(e.g. organs never overwrite bone, lung or the abdominal wall) or where ``only_labels``
restricts a paint to voxels that already carry a given label (hepatic vessels in the liver).
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from .geometry import Canvas
from .intensity import TISSUE_IDS

WALL_AND_BONE = ("air", "skin", "fat_subcutaneous", "muscle", "cortical_bone", "cancellous_bone",
                 "lung", "csf", "disc", "cartilage", "table", "heart")
BONE_ONLY = ("cortical_bone", "cancellous_bone", "disc", "csf")


def protect_lut(names: Iterable[str]) -> np.ndarray:
    """Boolean (256,) table: True for tissue ids that a paint must leave alone."""
    lut = np.zeros(256, dtype=bool)
    for name in names:
        lut[TISSUE_IDS[name]] = True
    return lut


PROTECT_ORGANS = protect_lut(WALL_AND_BONE)
PROTECT_VESSELS = protect_lut(BONE_ONLY)
PROTECT_NOTHING = protect_lut(())


def paint(canvas: Canvas, shapes: list, tissue: int | str | Callable, label: int | None = None,
          clip: Callable | None = None, protect: np.ndarray = PROTECT_NOTHING,
          only_labels: tuple[int, ...] | None = None) -> None:
    """Paint the union of ``shapes`` (each evaluated in its own voxel box).

    Args:
        canvas: the grid being painted.
        shapes: implicit shapes in canonical mm.
        tissue: tissue name or id, or ``f(X, Y, Z) -> uint8 ids`` for textured contents.
        label: label-space index to write (None: unlabelled tissue, i.e. background 0).
        clip: optional ``f(X, Y, Z) -> bool`` restricting the shape.
        protect: boolean table of tissue ids that must not be overwritten.
        only_labels: when given, paint only voxels whose current label is in this tuple.
    """
    if isinstance(tissue, str):
        tissue = TISSUE_IDS[tissue]
    for shape in shapes:
        box = canvas.box(shape.lo, shape.hi)
        if box is None:
            continue
        X, Y, Z = canvas.coords(box)
        mask = shape.inside(X, Y, Z)
        if not mask.any():
            continue
        tissue_box = canvas.tissue[box]
        label_box = canvas.labels[box]
        if clip is not None:
            mask &= clip(X, Y, Z)
        mask &= ~protect[tissue_box]
        if only_labels is not None:
            mask &= np.isin(label_box, only_labels)
        if callable(tissue):
            tissue_box[mask] = tissue(X[mask], Y[mask], Z[mask])
        else:
            tissue_box[mask] = tissue
        label_box[mask] = 0 if label is None else label
