"""Skeleton: lumbar/lower thoracic spine with canal, ribs, sacrum, pelvis, proximal femurs.

Bones get a cortical shell (~2.5 mm) around cancellous bone; intervertebral discs and the
spinal canal (CSF) are painted as their own tissues. Canonical mm (x right, y anterior, z up).
"""
from __future__ import annotations

import numpy as np

from .geometry import Canvas
from .label_space import class_index
from .painter import paint, protect_lut
from .shapes import Capsule, Ellipsoid, shrink, tube

CORTEX_MM = 2.5
SPINE_Y_MM = -55.0
CANAL_Y_MM = -88.0
_KEEP_SKIN = protect_lut(("air", "skin", "fat_subcutaneous"))


def _bone(canvas: Canvas, shapes: list, label: int | None = None, clip=None) -> None:
    """Cortical shell + cancellous core for a group of shapes."""
    paint(canvas, shapes, "cortical_bone", label=label, clip=clip, protect=_KEEP_SKIN)
    paint(canvas, shrink(shapes, CORTEX_MM), "cancellous_bone", label=label, clip=clip, protect=_KEEP_SKIN)


def paint_spine(canvas: Canvas) -> None:
    """Vertebrae T10-L5 (bodies, discs, arches, processes), canal, sacrum and coccyx."""
    height_mm, disc_mm = 27.0, 6.0
    centres = np.arange(160.0 - 14.0, -50.0, -(height_mm + disc_mm))
    for zc in centres:
        lumbar = zc < 60
        rx, ry = (25.0, 19.0) if lumbar else (20.0, 16.0)
        half = height_mm / 2
        _bone(canvas, [Ellipsoid((0, CANAL_Y_MM, zc), (19, 17, half + 1))])
        _bone(canvas, [Capsule((0, CANAL_Y_MM - 10, zc), (0, CANAL_Y_MM - 32, zc - 10), 6, 5)])
        reach = 52.0 if lumbar else 38.0
        for side in (1.0, -1.0):
            _bone(canvas, [Capsule((side * 12, CANAL_Y_MM + 4, zc), (side * reach, CANAL_Y_MM + 8, zc), 6, 4.5)])
        body = Ellipsoid((0, SPINE_Y_MM, zc), (rx, ry, half * 1.6))
        _bone(canvas, [body], clip=lambda X, Y, Z, zc=zc, half=half: np.abs(Z - zc) < half)
        disc = Ellipsoid((0, SPINE_Y_MM, zc - half - disc_mm / 2), (rx - 1, ry - 1, disc_mm / 2 + 0.5))
        paint(canvas, [disc], "disc", protect=_KEEP_SKIN)
    paint(canvas, [Capsule((0, CANAL_Y_MM, 210), (0, CANAL_Y_MM - 4, -70), 8.5, 7)], "csf")
    sacrum = Ellipsoid((0, -80, -88), (46, 17, 42), (-25, 0, 0))
    _bone(canvas, [sacrum])
    _bone(canvas, tube([(0, -92, -122), (0, -86, -140), (0, -75, -152)], [7, 5, 4]))


def paint_ribs(canvas: Canvas) -> None:
    """Lower ribs (8-12) on both sides: posterior heads high, running down anteriorly."""
    rib_heads_z = (165.0, 137.0, 109.0, 82.0, 56.0)
    anterior_end = (0.22, 0.26, 0.33, 0.45, 0.62)     # in units of pi (0 = anterior midline)
    for z0, t_end in zip(rib_heads_z, anterior_end):
        t = np.linspace(0.93 * np.pi, t_end * np.pi, 9)
        for side in (1.0, -1.0):
            ys = np.where(np.cos(t) > 0, 97.0, 98.0) * np.cos(t) - 3.0
            xs = side * 128.0 * np.sin(t)
            zs = z0 - 62.0 * ((0.93 * np.pi - t) / (0.93 * np.pi)) ** 0.8
            pts = list(zip(xs, ys, zs))
            _bone(canvas, tube(pts, 5.5))
            if t_end < 0.4:
                tc = np.linspace(t_end * np.pi, 0.12 * np.pi, 4)
                cart = list(zip(side * 128.0 * np.sin(tc), 97.0 * np.cos(tc) - 3.0,
                                np.full(4, zs[-1]) - np.linspace(0, 12, 4)))
                paint(canvas, tube(cart, 5.0), "cartilage", protect=_KEEP_SKIN)


def paint_pelvis(canvas: Canvas) -> None:
    """Iliac wings, acetabula, pubic and ischial rami and the labelled proximal femurs."""
    for side in (1.0, -1.0):
        femur = class_index("femur_right") if side > 0 else class_index("femur_left")
        head = np.array([side * 88.0, 0.0, -128.0])
        _bone(canvas, [Ellipsoid((side * 84, -32, -68), (9, 58, 42), (0, 0, -side * 41))])
        _bone(canvas, [Capsule((side * 80, -35, -92), head + np.array([side * 4, -8, 8]), 12, 14)])
        normal = np.array([-side * 0.45, 0.0, 0.9])

        def roof(X, Y, Z, head=head, normal=normal):
            return ((X - head[0]) * normal[0] + (Z - head[2]) * normal[2]) > -6.0

        _bone(canvas, [Ellipsoid(head, (30, 30, 30))], clip=roof)
        paint(canvas, [Ellipsoid(head, (25.5, 25.5, 25.5))], "cartilage", clip=roof, protect=_KEEP_SKIN)
        _bone(canvas, [Capsule((side * 68, 18, -140), (side * 10, 46, -150), 8, 8)])
        _bone(canvas, [Capsule((side * 84, -26, -140), (side * 58, -42, -178), 13, 11)])
        _bone(canvas, [Ellipsoid(head, (23, 23, 23)),
                       Capsule(head, (side * 125, -6, -158), 15, 15),
                       Ellipsoid((side * 132, -10, -162), (19, 22, 22))], label=femur)


def paint_skeleton(canvas: Canvas) -> None:
    """Paint every bone of the phantom."""
    paint_ribs(canvas)
    paint_pelvis(canvas)
    paint_spine(canvas)
