"""Optional mass effect: tissue around a lesion pushed outwards by a local radial scaling warp (box only)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def radial_push(
    image_box: np.ndarray,
    label_box: np.ndarray,
    centre: np.ndarray,
    radius_mm: float,
    strength: float,
    spacing: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Warps a box so that content inside ``radius_mm`` of ``centre`` moves outwards.

    A voxel at distance ``d < R`` samples the input at ``c + (x - c) * (1 - s (1 - d^2 / R^2))``; the warp is
    the identity at ``d >= R``, so the box border is untouched.

    Args:
        image_box: (C, *box) image values (float32), linear interpolation.
        label_box: (*box) label values, nearest-neighbour interpolation.
        centre: (3,) lesion centre in box voxel coordinates.
        radius_mm: radius of the affected region, mm (clipped to the box).
        strength: s in [0, 1), fraction of the radius by which the centre region expands.
        spacing: voxel size, mm.

    Returns:
        (warped image box, warped label box).
    """
    dims = label_box.shape
    half_mm = np.min(np.minimum(centre, np.asarray(dims) - 1 - centre) * spacing)
    radius = min(radius_mm, float(half_mm))
    if radius <= 1.0 or strength <= 0:
        return image_box, label_box
    grid = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in dims], indexing="ij")
    rel = [g - c for g, c in zip(grid, centre)]
    d2 = sum((r * sp) ** 2 for r, sp in zip(rel, spacing)) / radius**2
    factor = np.where(d2 < 1.0, 1.0 - strength * (1.0 - d2), 1.0).astype(np.float32)
    coords = np.stack([c + r * factor for r, c in zip(rel, centre)])
    image_out = np.stack([ndimage.map_coordinates(ch, coords, order=1, mode="nearest") for ch in image_box])
    label_out = ndimage.map_coordinates(label_box, coords, order=0, mode="nearest")
    return image_out.astype(image_box.dtype, copy=False), label_out.astype(label_box.dtype, copy=False)
