"""Lesion shape: a randomly rotated ellipsoid with a smooth elastic boundary and a blurred edge, in mm.

Everything is evaluated on a small box around the lesion. The ellipsoid coordinates
``u = diag(1/a) (R (x - c) + d(x))`` (``a`` semi-axes in mm, ``R`` a rotation, ``d`` a smooth random
displacement in mm) are carried by one coarse B-spline control grid, so the deformed shape costs three
matrix products plus a few element-wise operations per voxel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import bspline

N_ELASTIC_CTRL = 4  # interior control points per axis: a 3x3x3-cell displacement grid
EDGE_WIDTH_PER_SIGMA = 3.76  # smoothstep width matching the centre slope of a Gaussian-blurred edge
COARSE_STRIDE = 4  # voxel stride of the pre-pass that tightens large lesion boxes
COARSE_MIN_VOXELS = 24**3  # boxes smaller than this skip the pre-pass


@dataclass
class LesionShape:
    """Geometry of one lesion in the voxel grid of the volume.

    Attributes:
        centre_vox: (3,) centre in voxel indices of the (spatial) volume.
        semi_axes_mm: (3,) ellipsoid semi-axes in mm before deformation.
        rotation: (3, 3) rotation from volume axes to ellipsoid axes.
        elastic_sigma_mm: std of the boundary displacement at the control points, mm.
        edge_blur_mm: Gaussian-equivalent width of the soft rim, mm.
    """

    centre_vox: np.ndarray
    semi_axes_mm: np.ndarray
    rotation: np.ndarray
    elastic_sigma_mm: float
    edge_blur_mm: float

    @property
    def diameter_mm(self) -> float:
        """Nominal diameter: twice the geometric mean of the semi-axes (mm)."""
        return float(2.0 * np.prod(self.semi_axes_mm) ** (1.0 / 3.0))

    def half_extent_mm(self) -> np.ndarray:
        """Half size of the axis-aligned box holding the deformed, blurred lesion (mm, per volume axis)."""
        ellipsoid = np.sqrt(((self.rotation.T * self.semi_axes_mm[None, :]) ** 2).sum(axis=1))
        return ellipsoid + 2.0 * self.elastic_sigma_mm + 0.5 * EDGE_WIDTH_PER_SIGMA * self.edge_blur_mm + 1.0


def random_rotation(rng: np.random.RandomState) -> np.ndarray:
    """Uniform random 3D rotation matrix from a random unit quaternion."""
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def lesion_box(shape: LesionShape, spacing: np.ndarray, vol_shape: tuple[int, ...]) -> tuple[slice, ...] | None:
    """Voxel slices of the lesion box clipped to the volume, or None when the box misses it."""
    half = np.ceil(shape.half_extent_mm() / spacing).astype(int)
    centre = np.round(shape.centre_vox).astype(int)
    lo = np.maximum(centre - half, 0)
    hi = np.minimum(centre + half + 1, np.asarray(vol_shape))
    if np.any(hi - lo < 1):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def lesion_field(
    shape: LesionShape, box: tuple[slice, ...], spacing: np.ndarray, rng: np.random.RandomState
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Deformed ellipsoid coordinates ``u`` on a tightened box; the lesion is ``|u| <= 1``.

    The field is first evaluated every ``COARSE_STRIDE`` voxels to shrink the box to the part where the
    lesion (plus rim and a safety margin) can be, then at full resolution on that part only.

    Returns:
        (tight box slices in volume voxels, u as float32 (3, *tight box)).
    """
    dims = [s.stop - s.start for s in box]
    m = shape.rotation / shape.semi_axes_mm[:, None]  # u = M (x - c) + d / a
    ctrl_pos = [bspline.control_positions(n, N_ELASTIC_CTRL) for n in dims]
    rel = [(p + s.start - c) * sp for p, s, c, sp in zip(ctrl_pos, box, shape.centre_vox, spacing)]
    g = [len(p) for p in ctrl_pos]
    ctrl = (
        m[:, 0, None, None, None] * rel[0][None, :, None, None]
        + m[:, 1, None, None, None] * rel[1][None, None, :, None]
        + m[:, 2, None, None, None] * rel[2][None, None, None, :]
    )
    disp = np.clip(rng.normal(0.0, 1.0, size=(3, *g)), -2.0, 2.0) * shape.elastic_sigma_mm
    ctrl = (ctrl + disp / shape.semi_axes_mm[:, None, None, None]).astype(np.float32)
    weights = [bspline.interpolation_matrix(n, N_ELASTIC_CTRL) for n in dims]
    if np.prod(dims) > COARSE_MIN_VOXELS:
        st = COARSE_STRIDE
        coarse = bspline.evaluate(ctrl, tuple(w[::st] for w in weights))
        q = np.sqrt((coarse**2).sum(axis=0))
        a_min = float(shape.semi_axes_mm.min())
        # a voxel is within half a coarse cell diagonal of a sample; |grad q| <= ~1.5 / a_min
        reach = 0.5 * EDGE_WIDTH_PER_SIGMA * shape.edge_blur_mm + 0.75 * st * float(np.linalg.norm(spacing))
        idx = np.nonzero(q <= 1.0 + reach / a_min)
        if len(idx[0]) == 0:
            idx = np.nonzero(q <= q.min())
        lo = [max(int(i.min()) * st - st, 0) for i in idx]
        hi = [min(int(i.max()) * st + st + 1, n) for i, n in zip(idx, dims)]
        weights = [w[a:b] for w, a, b in zip(weights, lo, hi)]
        box = tuple(slice(s.start + a, s.start + b) for s, a, b in zip(box, lo, hi))
    return box, bspline.evaluate(ctrl, tuple(weights))


def soft_mask(u: np.ndarray, shape: LesionShape) -> tuple[np.ndarray, np.ndarray]:
    """Soft lesion occupancy in [0, 1] and its hard core ``|u| <= 1``.

    The rim is a smoothstep of the approximate signed distance ``(1 - |u|) * a_eff`` (mm) with a width
    matching a Gaussian edge blur of ``shape.edge_blur_mm``.

    Returns:
        (soft float32 (*box), hard bool (*box)).
    """
    q = u[0] * u[0]
    q += u[1] * u[1]
    q += u[2] * u[2]
    np.sqrt(q, out=q)
    hard = q <= 1.0
    a_eff = shape.diameter_mm / 2.0
    width = max(EDGE_WIDTH_PER_SIGMA * shape.edge_blur_mm, 1e-3)
    # t = 0.5 + (1 - q) * a_eff / width, clipped, then smoothstep t^2 (3 - 2t)
    q *= -a_eff / width
    q += 0.5 + a_eff / width
    np.clip(q, 0.0, 1.0, out=q)
    soft = q * q
    q *= -2.0
    q += 3.0
    soft *= q
    return soft, hard
