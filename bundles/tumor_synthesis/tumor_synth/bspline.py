"""Smooth random fields on a lesion box by separable cubic B-spline interpolation of a coarse grid.

The field value at a voxel is ``sum_abc Wx[i, a] Wy[j, b] Wz[k, c] C[a, b, c]`` and is computed as three
small matrix products, so its cost is linear in the box size and needs no Gaussian filtering.
Uniform cubic B-splines reproduce linear functions exactly, which lets a control grid also carry the
affine ellipsoid coordinates (see :mod:`tumor_synth.shape`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def _cubic_bspline(t: np.ndarray) -> np.ndarray:
    t = np.abs(t)
    out = np.zeros_like(t)
    near = t < 1
    far = (t >= 1) & (t < 2)
    out[near] = (4 - 6 * t[near] ** 2 + 3 * t[near] ** 3) / 6
    out[far] = (2 - t[far]) ** 3 / 6
    return out


def control_positions(n_vox: int, n_ctrl: int) -> np.ndarray:
    """Voxel positions (float, box index units) of ``n_ctrl`` interior control points plus one pad each side."""
    n_ctrl = max(int(n_ctrl), 2)
    step = max(n_vox - 1, 1) / (n_ctrl - 1)
    return (np.arange(-1, n_ctrl + 1) * step).astype(np.float64)


@lru_cache(maxsize=512)
def interpolation_matrix(n_vox: int, n_ctrl: int) -> np.ndarray:
    """(n_vox, n_ctrl + 2) float32 weights mapping padded control values to the voxels of one box axis.

    Cached: callers must not modify the returned array.
    """
    n_ctrl = max(int(n_ctrl), 2)
    step = max(n_vox - 1, 1) / (n_ctrl - 1)
    t = np.arange(n_vox, dtype=np.float64)[:, None] / step
    k = np.arange(-1, n_ctrl + 1, dtype=np.float64)[None, :]
    return _cubic_bspline(t - k).astype(np.float32)


def evaluate(ctrl: np.ndarray, weights: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Interpolates control grids to the box.

    Args:
        ctrl: (F, G0, G1, G2) control values (F fields evaluated together).
        weights: per-axis matrices from :func:`interpolation_matrix`, shapes (n_d, G_d).

    Returns:
        (F, n0, n1, n2) float32 fields.
    """
    w0, w1, w2 = weights
    f, g0 = ctrl.shape[0], ctrl.shape[1]
    t = ctrl.astype(np.float32, copy=False) @ w2.T  # (F, G0, G1, n2)
    t = np.matmul(w1, t)  # (F, G0, n1, n2)
    n1, n2 = t.shape[2], t.shape[3]
    out = np.matmul(w0, t.reshape(f, g0, n1 * n2))  # (F, n0, n1*n2)
    return out.reshape(f, w0.shape[0], n1, n2)
