"""Synthetic test volumes (no external data): an elliptic body with ellipsoid organs, in HU."""

from __future__ import annotations

import numpy as np


def make_abdomen(
    shape: tuple[int, int, int] = (64, 64, 48),
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    organs: dict[int, tuple[tuple[float, float, float], tuple[float, float, float], float]] | None = None,
    seed: int = 0,
    vessel: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Builds a (1, X, Y, Z) float32 HU image and a (1, X, Y, Z) uint8 label.

    Args:
        shape: volume size in voxels.
        spacing: voxel size in mm.
        organs: label -> (centre as a fraction of the extent, semi-axes in mm, mean HU); default: a liver (6)
            at 100 HU filling the middle of the volume.
        seed: noise seed.
        vessel: label value of a straight tube (radius 3 mm) through the first organ along the last axis.

    Returns:
        (image, label).
    """
    rng = np.random.default_rng(seed)
    sp = np.asarray(spacing, dtype=float)
    grids = np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, sp)], indexing="ij", sparse=True)
    ext = np.asarray(shape) * sp
    body = ((grids[0] - ext[0] / 2) / (0.48 * ext[0])) ** 2 + ((grids[1] - ext[1] / 2) / (0.45 * ext[1])) ** 2 <= 1
    body = np.broadcast_to(body, shape)
    image = np.where(body, 40.0, -1000.0).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    if organs is None:
        semi = tuple(0.33 * e for e in ext)
        organs = {6: ((0.5, 0.5, 0.5), semi, 100.0)}
    for value, (centre, semi, hu) in organs.items():
        inside = sum(((g - c * e) / a) ** 2 for g, c, e, a in zip(grids, centre, ext, semi)) <= 1
        image[inside] = hu
        label[inside] = value
    if vessel is not None:
        centre, _, _ = next(iter(organs.values()))
        tube = ((grids[0] - centre[0] * ext[0]) ** 2 + (grids[1] - centre[1] * ext[1]) ** 2 <= 9.0) & (label > 0)
        label[np.broadcast_to(tube, shape)] = vessel
        image[np.broadcast_to(tube, shape)] = 180.0
    image += rng.normal(0, 10, size=shape).astype(np.float32) * body
    return image[None], label[None]
