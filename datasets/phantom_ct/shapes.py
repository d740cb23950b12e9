"""Implicit shapes in canonical mm, evaluated vectorised inside their bounding boxes.

Every shape offers ``lo``/``hi`` (its canonical bounding box), ``inside(X, Y, Z)`` (a boolean
array for canonical coordinate arrays of any common shape) and ``varied(scale, shift_mm,
about_mm)`` (a copy scaled about a point and shifted: the per-case organ variation).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .geometry import rotation_matrix


def _vary_point(p, scale, shift_mm, about_mm):
    return (np.asarray(p, float) - about_mm) * scale + about_mm + shift_mm


@dataclass
class Ellipsoid:
    """Ellipsoid with centre, semi-axes (radii) and rotation angles in degrees (about x, y, z)."""

    centre_mm: tuple
    radii_mm: tuple
    angles_deg: tuple = (0.0, 0.0, 0.0)
    _rot: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        self.centre_mm = np.asarray(self.centre_mm, float)
        self.radii_mm = np.asarray(self.radii_mm, float)
        self._rot = rotation_matrix(tuple(np.deg2rad(self.angles_deg)))
        extent = np.sqrt((self._rot ** 2) @ (self.radii_mm ** 2))
        self.lo, self.hi = self.centre_mm - extent, self.centre_mm + extent

    def inside(self, X, Y, Z):
        """Boolean mask of points inside the ellipsoid."""
        d = [X - np.float32(self.centre_mm[0]), Y - np.float32(self.centre_mm[1]), Z - np.float32(self.centre_mm[2])]
        total = None
        for axis in range(3):
            r = self._rot[:, axis]
            q = (np.float32(r[0] / self.radii_mm[axis]) * d[0] + np.float32(r[1] / self.radii_mm[axis]) * d[1]
                 + np.float32(r[2] / self.radii_mm[axis]) * d[2])
            q *= q
            total = q if total is None else total + q
        return total <= 1.0

    def varied(self, scale, shift_mm, about_mm):
        """Copy scaled by ``scale`` about ``about_mm`` and shifted by ``shift_mm``."""
        return replace(self, centre_mm=_vary_point(self.centre_mm, scale, shift_mm, about_mm),
                       radii_mm=self.radii_mm * scale)


@dataclass
class Capsule:
    """Tapered capsule: segment from ``p0_mm`` to ``p1_mm`` with radius going ``r0_mm`` -> ``r1_mm``."""

    p0_mm: tuple
    p1_mm: tuple
    r0_mm: float
    r1_mm: float

    def __post_init__(self):
        self.p0_mm = np.asarray(self.p0_mm, float)
        self.p1_mm = np.asarray(self.p1_mm, float)
        r = max(self.r0_mm, self.r1_mm)
        self.lo = np.minimum(self.p0_mm, self.p1_mm) - r
        self.hi = np.maximum(self.p0_mm, self.p1_mm) + r

    def inside(self, X, Y, Z):
        """Boolean mask of points within the tapered radius of the segment."""
        d = self.p1_mm - self.p0_mm
        length2 = max(float(d @ d), 1e-9)
        dx, dy, dz = X - np.float32(self.p0_mm[0]), Y - np.float32(self.p0_mm[1]), Z - np.float32(self.p0_mm[2])
        t = np.float32(d[0] / length2) * dx + np.float32(d[1] / length2) * dy + np.float32(d[2] / length2) * dz
        np.clip(t, 0.0, 1.0, out=t)
        ex = dx - np.float32(d[0]) * t
        ey = dy - np.float32(d[1]) * t
        ez = dz - np.float32(d[2]) * t
        radius = np.float32(self.r0_mm) + np.float32(self.r1_mm - self.r0_mm) * t
        return ex * ex + ey * ey + ez * ez <= radius * radius

    def varied(self, scale, shift_mm, about_mm):
        """Copy scaled about ``about_mm`` (radii by the mean scale) and shifted."""
        s = float(np.mean(scale))
        return replace(self, p0_mm=_vary_point(self.p0_mm, scale, shift_mm, about_mm),
                       p1_mm=_vary_point(self.p1_mm, scale, shift_mm, about_mm),
                       r0_mm=self.r0_mm * s, r1_mm=self.r1_mm * s)


def tube(points_mm, radii_mm) -> list[Capsule]:
    """A smooth tube through ``points_mm`` as a chain of tapered capsules (one per segment)."""
    pts = [np.asarray(p, float) for p in points_mm]
    radii = list(radii_mm) if np.ndim(radii_mm) else [float(radii_mm)] * len(pts)
    return [Capsule(pts[i], pts[i + 1], radii[i], radii[i + 1]) for i in range(len(pts) - 1)]


def shrink(shapes: list, by_mm: float) -> list:
    """Same shapes with every radius reduced by ``by_mm`` (the lumen of a hollow organ)."""
    out = []
    for s in shapes:
        if isinstance(s, Capsule):
            out.append(replace(s, r0_mm=max(s.r0_mm - by_mm, 0.5), r1_mm=max(s.r1_mm - by_mm, 0.5)))
        else:
            out.append(replace(s, radii_mm=np.maximum(s.radii_mm - by_mm, 0.5)))
    return out


def vary_all(shapes: list, scale, shift_mm, about_mm=None) -> list:
    """Apply one organ-level variation to a group of shapes (about their common centre)."""
    if about_mm is None:
        about_mm = (np.min([s.lo for s in shapes], axis=0) + np.max([s.hi for s in shapes], axis=0)) / 2
    return [s.varied(np.asarray(scale, float), np.asarray(shift_mm, float), np.asarray(about_mm, float))
            for s in shapes]
