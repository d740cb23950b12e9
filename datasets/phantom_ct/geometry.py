"""Voxel grid, per-case spatial transform and the painting canvas.

Conventions (all lengths in mm):

* World coordinates are NIfTI RAS+ (nibabel's convention): x grows towards the patient's
  Right, y towards Anterior, z towards Superior. DICOM (LPS+) negates x and y.
* The anatomy is described in a *canonical* frame with the same axes, centred on the body.
  A case maps world points to canonical points with ``c = S^-1 R^T (p - t) + u(p)``: a body
  scale ``S``, a small rotation ``R``, a shift ``t`` and a smooth elastic displacement ``u``
  (a coarse random control grid upsampled with cubic B-splines).
* The volume is built as a RAS-ordered array (index i grows with x); LPS storage flips axes
  0 and 1 at the end (see :mod:`phantom_ct.case`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _cubic_bspline(t: np.ndarray) -> np.ndarray:
    """Uniform cubic B-spline kernel evaluated at ``t`` (in control-point units)."""
    a = np.abs(t)
    out = np.zeros_like(a)
    near = a < 1
    far = (a >= 1) & (a < 2)
    out[near] = 2.0 / 3.0 - a[near] ** 2 + 0.5 * a[near] ** 3
    out[far] = (2.0 - a[far]) ** 3 / 6.0
    return out


def _bspline_matrix(positions_mm: np.ndarray, start_mm: float, step_mm: float, n_ctrl: int) -> np.ndarray:
    """Weights (len(positions), n_ctrl) that interpolate a control grid at ``positions_mm``."""
    s = (positions_mm - start_mm) / step_mm
    return _cubic_bspline(s[:, None] - np.arange(n_ctrl)[None, :]).astype(np.float32)


def smooth_displacement(axes_mm: list[np.ndarray], rng: np.random.Generator, amplitude_mm: float,
                        control_step_mm: float = 70.0) -> tuple[list[np.ndarray], float]:
    """Smooth random displacement field on a rectilinear grid.

    Args:
        axes_mm: world coordinates of the voxel centres along x, y, z.
        rng: random generator (all draws come from it).
        amplitude_mm: standard deviation of the control-point displacements.
        control_step_mm: spacing of the coarse control grid.

    Returns:
        Three float32 arrays (one per component) of shape (nx, ny, nz), and the bound on |u| in mm.
    """
    mats, sizes = [], []
    for ax in axes_mm:
        start = float(ax.min()) - control_step_mm
        n_ctrl = int(np.ceil((ax.max() - start) / control_step_mm)) + 2
        mats.append(_bspline_matrix(ax, start, control_step_mm, n_ctrl))
        sizes.append(n_ctrl)
    bound = 2.5 * amplitude_mm
    fields = []
    for _ in range(3):
        ctrl = np.clip(rng.normal(0.0, amplitude_mm, size=sizes), -bound, bound).astype(np.float32)
        tmp = np.einsum("abc,kc->abk", ctrl, mats[2])
        tmp = np.einsum("abk,jb->ajk", tmp, mats[1])
        nx, ny, nz = len(axes_mm[0]), len(axes_mm[1]), len(axes_mm[2])
        field = (mats[0] @ tmp.reshape(sizes[0], ny * nz)).reshape(nx, ny, nz)
        fields.append(np.ascontiguousarray(field, dtype=np.float32))
    return fields, bound


def rotation_matrix(angles_rad: tuple[float, float, float]) -> np.ndarray:
    """Rotation R = Rz @ Ry @ Rx for angles about x, y, z (radians)."""
    ax, ay, az = angles_rad
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass
class CaseTransform:
    """World -> canonical mapping parameters of one case (see the module docstring)."""

    scale: np.ndarray          # (3,) body scale factors S
    rotation: np.ndarray       # (3, 3) rotation R
    shift_mm: np.ndarray       # (3,) translation t
    elastic_mm: float          # std of the elastic control displacements

    @staticmethod
    def draw(rng: np.random.Generator) -> "CaseTransform":
        """Random case transform: body size, small rotation, shift, elastic amplitude."""
        lateral = rng.uniform(0.86, 1.05)
        scale = np.array([lateral, lateral * rng.uniform(0.9, 1.08), rng.uniform(0.93, 1.04)])
        angles = np.deg2rad([rng.uniform(-3, 3), rng.uniform(-3, 3), rng.uniform(-6, 6)])
        shift = np.array([rng.uniform(-10, 10), rng.uniform(-10, 10), rng.uniform(-8, 8)])
        return CaseTransform(scale, rotation_matrix(tuple(angles)), shift, rng.uniform(2.0, 4.5))


class Canvas:
    """The RAS-ordered voxel grid being painted: canonical coordinates, labels, tissues.

    Shapes are evaluated only inside the voxel box that can contain them (see :meth:`box`),
    on views of the precomputed canonical coordinate arrays ``X, Y, Z`` (float32, mm).
    """

    def __init__(self, shape: tuple[int, int, int], spacing_mm: tuple[float, float, float],
                 transform: CaseTransform, rng: np.random.Generator):
        self.shape = tuple(int(s) for s in shape)
        self.spacing_mm = np.asarray(spacing_mm, dtype=np.float64)
        self.origin_mm = -(np.asarray(self.shape) - 1) / 2.0 * self.spacing_mm
        self.axes_mm = [self.origin_mm[a] + np.arange(self.shape[a]) * self.spacing_mm[a] for a in range(3)]
        self.transform = transform
        disp, self.disp_bound_mm = smooth_displacement(self.axes_mm, rng, transform.elastic_mm)
        m = np.diag(1.0 / transform.scale) @ transform.rotation.T     # world -> canonical linear part
        self.world_to_canon = m
        self.canon_to_world = np.linalg.inv(m)
        rel = [ax - transform.shift_mm[a] for a, ax in enumerate(self.axes_mm)]
        coords = []
        for row in range(3):
            c = (np.float32(m[row, 0]) * rel[0].astype(np.float32)[:, None, None]
                 + np.float32(m[row, 1]) * rel[1].astype(np.float32)[None, :, None])
            c = c + np.float32(m[row, 2]) * rel[2].astype(np.float32)[None, None, :]
            c += disp[row]
            coords.append(c)
        self.X, self.Y, self.Z = coords
        self.labels = np.zeros(self.shape, dtype=np.uint8)
        self.tissue = np.zeros(self.shape, dtype=np.uint8)

    def box(self, lo_mm, hi_mm) -> tuple[slice, slice, slice] | None:
        """Voxel slices covering the canonical box [lo_mm, hi_mm], or None when outside the grid."""
        lo, hi = np.asarray(lo_mm, float), np.asarray(hi_mm, float)
        corners = np.array([[lo[0] if i & 1 else hi[0], lo[1] if i & 2 else hi[1], lo[2] if i & 4 else hi[2]]
                            for i in range(8)])
        world = corners @ self.canon_to_world.T + self.transform.shift_mm
        margin = self.disp_bound_mm * float(self.transform.scale.max()) + self.spacing_mm
        wlo, whi = world.min(axis=0) - margin, world.max(axis=0) + margin
        first = np.floor((wlo - self.origin_mm) / self.spacing_mm).astype(int)
        last = np.ceil((whi - self.origin_mm) / self.spacing_mm).astype(int) + 1
        first = np.maximum(first, 0)
        last = np.minimum(last, self.shape)
        if np.any(last <= first):
            return None
        return tuple(slice(int(a), int(b)) for a, b in zip(first, last))

    def coords(self, box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Canonical coordinate views (X, Y, Z) of a voxel box."""
        return self.X[box], self.Y[box], self.Z[box]

    def world_centres(self, box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World (RAS, mm) coordinates of the voxel centres of a box, as broadcastable 1D arrays."""
        return (self.axes_mm[0][box[0]][:, None, None], self.axes_mm[1][box[1]][None, :, None],
                self.axes_mm[2][box[2]][None, None, :])
