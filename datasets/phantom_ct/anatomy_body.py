"""Body wall (skin, subcutaneous fat, muscle), trunk muscles, lung bases, diaphragm, heart, table.

Canonical frame (mm): x to the patient's right, y anterior, z superior; the body axis is x = y = 0,
the lung bases are at the top (z ~ +60 ... +160) and the femoral heads at the bottom (z ~ -130).
"""
from __future__ import annotations

import numpy as np

from .geometry import Canvas
from .intensity import TISSUE_IDS
from .label_space import class_index
from .painter import paint, protect_lut
from .shapes import Capsule, Ellipsoid, tube


def diaphragm_z_mm(X, Y):
    """Height of the diaphragm surface (canonical mm): right dome higher than the left."""
    right = 128.0 - 0.009 * ((X - 55.0) ** 2 + (Y - 5.0) ** 2)
    left = 118.0 - 0.009 * ((X + 60.0) ** 2 + (Y - 5.0) ** 2)
    return np.maximum(np.maximum(right, left), np.float32(72.0))


def below_diaphragm(X, Y, Z):
    """Clip for abdominal organs: below the diaphragm muscle."""
    return Z < diaphragm_z_mm(X, Y) - 5.0


def paint_body_wall(canvas: Canvas, fat_mm: dict) -> None:
    """Skin, subcutaneous fat, muscle ring and visceral fat (inside the body's voxel box).

    Args:
        fat_mm: subcutaneous fat thickness ``{"lateral", "anterior", "posterior"}`` in mm.
    """
    box = canvas.box((-180, -132, -400), (180, 120, 400))
    if box is None:
        return
    X, Y, Z = canvas.coords(box)
    zn = Z * np.float32(0.01)
    zn *= zn
    anterior = Y > 0
    inv_x = 1.0 / (np.float32(150.0) + np.float32(8.0) * zn)
    semi_y = np.float32(-16.0) - np.float32(5.0) * zn      # 112 - 5 zn anteriorly, 128 posteriorly
    semi_y *= anterior
    semi_y += np.float32(128.0)
    rr = X * inv_x
    rr *= rr
    q = Y / semi_y
    q *= q
    rr += q
    rho = X * X
    rho += Y * Y
    np.sqrt(rho, out=rho)
    depth = rho / np.sqrt(np.maximum(rr, np.float32(1e-6)))
    depth -= rho                                           # mm below the skin along the ray
    del rho, q, zn, inv_x, semi_y
    k_ant = (fat_mm["anterior"] - fat_mm["lateral"]) / 112.0
    k_post = (fat_mm["lateral"] - fat_mm["posterior"]) / 128.0
    fat = anterior * np.float32(k_ant - k_post)
    fat += np.float32(k_post)
    fat *= Y
    fat += np.float32(fat_mm["lateral"])                   # subcutaneous fat thickness here
    code = (depth < 2.5).view(np.uint8)                    # 0 visceral fat, 1 muscle, 2 fat, 3 skin, >=4 air
    depth -= fat
    code = code + (depth < 0.0).view(np.uint8)
    code += (depth < 13.0).view(np.uint8)
    code += (rr > 1.0).view(np.uint8) * np.uint8(4)
    lut = np.array([TISSUE_IDS[n] for n in ("fat_visceral", "muscle", "fat_subcutaneous", "skin")]
                   + [TISSUE_IDS["air"]] * 4, dtype=np.uint8)
    canvas.tissue[box] = lut[code]


def paint_table(canvas: Canvas) -> None:
    """Curved CT table under the patient's back (only where there is air)."""
    box = canvas.box((-210, -150, -200), (210, -90, 200))
    if box is None:
        return
    X, Y, Z = canvas.coords(box)
    top = -131.0 + 0.0006 * X * X
    mask = (Y < top) & (Y > top - 9.0) & (np.abs(X) < 200)
    mask &= canvas.tissue[box] == TISSUE_IDS["air"]
    canvas.tissue[box][mask] = TISSUE_IDS["table"]


def paint_trunk_muscles(canvas: Canvas) -> None:
    """Paraspinal, quadratus lumborum, psoas, iliacus and gluteal muscles (inside the wall)."""
    inner = protect_lut(("air", "skin", "fat_subcutaneous"))
    for side in (1.0, -1.0):
        paint(canvas, tube([(side * 36, -88, 175), (side * 40, -92, 40), (side * 34, -92, -60)], [26, 30, 22]),
              "muscle", protect=inner)
        paint(canvas, [Capsule((side * 62, -68, 55), (side * 72, -70, -30), 10, 15)], "muscle", protect=inner)
        paint(canvas, tube([(side * 28, -45, 65), (side * 42, -38, 0), (side * 58, -28, -70),
                            (side * 75, -2, -125)], [7, 18, 22, 15]), "muscle", protect=inner)
        paint(canvas, [Ellipsoid((side * 80, -22, -85), (22, 28, 32), (0, 0, -side * 40))], "muscle", protect=inner)
        paint(canvas, [Ellipsoid((side * 100, -72, -125), (55, 38, 55))], "muscle", protect=inner)


def paint_thorax(canvas: Canvas) -> None:
    """Lung bases above the diaphragm, the diaphragm muscle and the heart."""
    right, left = class_index("lung_right"), class_index("lung_left")
    lung_id, muscle_id = TISSUE_IDS["lung"], TISSUE_IDS["muscle"]

    def cavity(X, Y):
        return (X / 128.0) ** 2 + ((Y + 5.0) / 92.0) ** 2 <= 1.0

    box = canvas.box((-140, -110, 50), (140, 100, 200))
    if box is None:
        return
    X, Y, Z = canvas.coords(box)
    dz = diaphragm_z_mm(X, Y)
    inside = cavity(X, Y)
    mediastinum = (np.abs(X + 10.0) < 38.0) & (Y > -45.0)
    lung = inside & (Z > dz) & ~mediastinum
    canvas.tissue[box][lung] = lung_id
    canvas.labels[box][lung & (X > 0)] = right
    canvas.labels[box][lung & (X <= 0)] = left
    dia = inside & (Z <= dz) & (Z > dz - 5.0)
    canvas.tissue[box][dia] = muscle_id
    paint(canvas, [Ellipsoid((-20, 30, 178), (72, 55, 68), (0, 0, 30))], "heart",
          clip=lambda X, Y, Z: Z > diaphragm_z_mm(X, Y), protect=protect_lut(("air", "skin", "fat_subcutaneous")))


def paint_body(canvas: Canvas, rng: np.random.Generator) -> dict:
    """Paint everything in this module; returns the drawn body parameters for meta.json."""
    fat_mm = {"lateral": float(rng.uniform(10, 35)), "anterior": float(rng.uniform(12, 40)),
              "posterior": float(rng.uniform(8, 25))}
    paint_body_wall(canvas, fat_mm)
    paint_table(canvas)
    paint_thorax(canvas)
    paint_trunk_muscles(canvas)
    return {"subcutaneous_fat_mm": {k: round(v, 1) for k, v in fat_mm.items()}}


__all__ = ["paint_body", "below_diaphragm", "diaphragm_z_mm"]
