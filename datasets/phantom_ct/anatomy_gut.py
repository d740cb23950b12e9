"""Hollow organs: esophagus, stomach, duodenum, small intestine, colon, rectum.

Each is a tube with a ~3-4 mm enhancing wall around its contents. Contents depend on the organ:
gas rises anteriorly (the patient lies supine, so +y is up) above a per-case air-fluid level,
the colon holds stool with scattered gas bubbles, the small bowel fluid with a few bubbles.
"""
from __future__ import annotations

import numpy as np

from .geometry import Canvas
from .intensity import TISSUE_IDS
from .label_space import class_index
from .painter import PROTECT_ORGANS, paint, protect_lut
from .shapes import Ellipsoid, shrink, tube
from .anatomy_body import below_diaphragm

GAS, FLUID, STOOL = TISSUE_IDS["gas"], TISSUE_IDS["bowel_fluid"], TISSUE_IDS["stool"]
ONLY_CONTENTS = protect_lut(name for name in TISSUE_IDS if name not in ("bowel_fluid", "stool"))


def fluid_level(level_y_mm: float):
    """Contents: gas anterior to ``level_y_mm`` (air-fluid level), fluid below it."""
    def contents(X, Y, Z):
        return np.where(Y > level_y_mm, GAS, FLUID).astype(np.uint8)
    return contents


def bubbles_along(path_mm: list, radii_mm: list, count: int, size_mm: tuple, rng: np.random.Generator) -> list:
    """Small gas bubbles at random points inside a tube (mottled stool, bowel contents)."""
    pts, radii = np.asarray(path_mm, float), np.asarray(radii_mm, float) * np.ones(len(path_mm))
    out = []
    for _ in range(count):
        seg = int(rng.integers(len(pts) - 1))
        t = rng.uniform()
        centre = pts[seg] + t * (pts[seg + 1] - pts[seg])
        reach = 0.6 * (radii[seg] + t * (radii[seg + 1] - radii[seg]))
        offset = rng.normal(size=3)
        centre = centre + offset / max(np.linalg.norm(offset), 1e-6) * reach * rng.uniform()
        r = rng.uniform(*size_mm)
        out.append(Ellipsoid(centre, (r, r * rng.uniform(0.6, 1.0), r * rng.uniform(0.6, 1.0))))
    return out


def _hollow(canvas: Canvas, shapes: list, label: int, wall_mm: float, contents, clip=None,
            bubbles: list | None = None) -> None:
    paint(canvas, shapes, "bowel_wall", label=label, clip=clip, protect=PROTECT_ORGANS)
    paint(canvas, shrink(shapes, wall_mm), contents, label=label, clip=clip, protect=PROTECT_ORGANS)
    if bubbles:
        paint(canvas, bubbles, "gas", label=label, protect=ONLY_CONTENTS, only_labels=(label,))


def stool(level_y_mm: float):
    """Stool contents with gas anterior to ``level_y_mm``."""
    def contents(X, Y, Z):
        return np.where(Y > level_y_mm, GAS, STOOL).astype(np.uint8)
    return contents


def small_bowel_path(rng: np.random.Generator) -> list:
    """Meandering path of small-bowel loops filling the central and lower abdomen."""
    points = []
    for row, z in enumerate((-8.0, -32.0, -56.0, -80.0)):
        xs = np.array([-62.0, -22.0, 22.0, 62.0])
        if row % 2:
            xs = xs[::-1]
        for i, x in enumerate(xs):
            y = 28.0 + 18.0 * np.sin(i * 2.1 + row) + rng.uniform(-8, 8)
            points.append((x + rng.uniform(-8, 8), y, z + rng.uniform(-6, 6)))
    return points


def paint_gut(canvas: Canvas, vary, rng: np.random.Generator) -> None:
    """Paint all hollow organs (the order makes junctions belong to the downstream organ)."""
    esophagus = vary("esophagus", tube([(-4, -2, 175), (-10, 4, 130), (-25, 10, 105), (-45, 12, 92)], [9, 9, 9, 10]))
    _hollow(canvas, esophagus, class_index("esophagus"), 6.0, GAS)
    gastric_level = float(rng.uniform(30, 55))
    stomach = vary("stomach", tube([(-62, -5, 100), (-65, 20, 82), (-50, 45, 62), (-10, 55, 46), (20, 45, 42)],
                                   [34, 33, 28, 20, 11]))
    _hollow(canvas, stomach, class_index("stomach"), 4.0, fluid_level(gastric_level), clip=below_diaphragm)
    duodenum = vary("duodenum", tube([(20, 45, 42), (42, 30, 45), (58, 10, 38), (60, 5, 15), (45, 0, 2), (10, 0, 0),
                                      (-20, 2, 5), (-30, 8, 20)], 11))
    _hollow(canvas, duodenum, class_index("duodenum"), 3.0, fluid_level(float(rng.uniform(15, 40))))
    path = small_bowel_path(rng)
    bowel = vary("intestine", tube(path, 12.5))
    _hollow(canvas, bowel, class_index("intestine"), 3.0, fluid_level(45.0),
            bubbles=bubbles_along(path, [9.0] * len(path), 14, (2.0, 5.0), rng))
    colon_pts = [(75, 15, -55), (82, 0, -20), (80, -5, 12), (68, 20, 24), (25, 65, 18), (-25, 65, 22),
                 (-78, 20, 55), (-88, -15, 30), (-88, -15, -20), (-75, 5, -65), (-35, 25, -85), (0, -20, -95),
                 (0, -46, -100)]
    colon_r = [28, 24, 24, 22, 20, 20, 20, 18, 18, 16, 15, 15, 16]
    colon = vary("colon", tube(colon_pts, colon_r))
    _hollow(canvas, colon, class_index("colon"), 3.0, stool(float(rng.uniform(35, 60))),
            bubbles=bubbles_along(colon_pts, colon_r, 220, (1.5, 4.5), rng))
    rectum_pts = [(0, -46, -100), (0, -45, -130), (0, -35, -165)]
    rectum = vary("rectum", tube(rectum_pts, [16, 18, 15]))
    _hollow(canvas, rectum, class_index("rectum"), 3.0, stool(1e6),
            bubbles=bubbles_along(rectum_pts, [16, 18, 15], 8, (1.5, 4.0), rng))
