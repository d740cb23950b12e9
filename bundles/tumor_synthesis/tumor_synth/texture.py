"""On-the-fly lesion texture: a smooth random field with mean 1, generated only on the lesion box.

Replaces a precomputed texture bank: a coarse Gaussian control grid is B-spline interpolated to the box, so
the cost is a few matrix products per lesion and there is no start-up cost. The underlying organ noise is kept
(the lesion is added to the image), which supplies the fine grain.
"""

from __future__ import annotations

import numpy as np

from . import bspline

SCALE_MM = (4.0, 10.0)  # control-point spacing range of the texture blotches, mm (~Gaussian sigma 2.3-5.8 mm)
_BSPLINE_STD = 0.33  # approx. std of cubic B-spline interpolated i.i.d. N(0, 1) control values (3D)


def _field(dims: list[int], spacing: np.ndarray, scale_mm: float, rng: np.random.RandomState) -> np.ndarray:
    n_ctrl = [max(2, int(np.ceil(n * sp / scale_mm)) + 1) for n, sp in zip(dims, spacing)]
    ctrl = rng.normal(0.0, 1.0, size=(1, *[g + 2 for g in n_ctrl])).astype(np.float32)
    weights = tuple(bspline.interpolation_matrix(n, g) for n, g in zip(dims, n_ctrl))
    return bspline.evaluate(ctrl, weights)[0]


def lesion_texture(
    dims: list[int], spacing: np.ndarray, cv: float, rng: np.random.RandomState
) -> tuple[np.ndarray, dict[str, float]]:
    """Random multiplicative texture for one lesion box.

    Args:
        dims: box size in voxels.
        spacing: voxel size in mm.
        cv: coefficient of variation (std / mean) of the texture.
        rng: random state (the transform's ``self.R``).

    Returns:
        (texture float32 (*dims) with mean ~1 and std ~cv, parameters drawn).
    """
    scale_mm = rng.uniform(*SCALE_MM)
    tex = _field(dims, spacing, scale_mm, rng)
    tex *= cv / _BSPLINE_STD
    tex += 1.0
    np.clip(tex, 0.0, 2.0, out=tex)
    return tex, {"scale_mm": float(scale_mm), "cv": float(cv)}
