"""Solid abdominal organs and the pelvic organs, in canonical mm (x right, y anterior, z up).

Each organ is a small group of implicit shapes; a case varies every group by its own scale and
shift (``variation``) before painting. Organs never overwrite bone, lung or the abdominal wall.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .geometry import Canvas
from .label_space import class_index
from .painter import PROTECT_ORGANS, paint
from .shapes import Ellipsoid, shrink, tube, vary_all
from .anatomy_body import below_diaphragm

Variation = Callable[[str, list], list]


def liver_shapes() -> list:
    """Right lobe, medial and lateral left lobe, caudate lobe."""
    return [Ellipsoid((72, -2, 78), (68, 80, 60), (0, 0, -10)),
            Ellipsoid((12, 35, 90), (55, 45, 33), (0, 0, 20)),
            Ellipsoid((-42, 45, 97), (42, 30, 20), (0, 0, 25)),
            Ellipsoid((25, -20, 82), (22, 22, 28))]


def hepatic_vessel_shapes() -> list:
    """Intrahepatic portal branches and the three hepatic veins (as two groups)."""
    porta = (35, 5, 66)
    portal = (tube([porta, (70, 0, 68), (102, 12, 60)], [5, 4, 2.5])
              + tube([(70, 0, 68), (96, -25, 86)], [3.5, 2.5])
              + tube([(70, 0, 68), (86, 10, 40)], [3.5, 2.5])
              + tube([porta, (0, 25, 80), (-38, 42, 92)], [4.5, 3.5, 2.5])
              + tube([(0, 25, 80), (-4, 55, 82)], [3, 2.5]))
    ivc = (25, -15, 108)
    veins = (tube([ivc, (96, -6, 104)], [5.5, 2.5]) + tube([ivc, (46, 42, 100)], [5, 2.5])
             + tube([ivc, (-18, 38, 102)], [4.5, 2.5]))
    return [portal, veins]


def paint_liver(canvas: Canvas, vary: Variation) -> None:
    """Liver, gallbladder and the hepatic vessels (which stay inside the liver)."""
    liver = class_index("liver")
    shapes = liver_shapes()
    about = np.array([50.0, 5.0, 80.0])
    varied = vary("liver", shapes + [s for group in hepatic_vessel_shapes() for s in group], about)
    paint(canvas, varied[:len(shapes)], "liver", label=liver, clip=below_diaphragm, protect=PROTECT_ORGANS)
    n_portal = len(hepatic_vessel_shapes()[0])
    rest = varied[len(shapes):]
    vessel = class_index("hepatic_vessel")
    paint(canvas, rest[:n_portal], "portal_venous_blood", label=vessel, only_labels=(liver,))
    paint(canvas, rest[n_portal:], "hepatic_venous_blood", label=vessel, only_labels=(liver,))
    gallbladder = vary("gall_bladder", [Ellipsoid((52, 50, 48), (15, 17, 32), (35, 0, 10))])
    paint(canvas, gallbladder, "bile", label=class_index("gall_bladder"), protect=PROTECT_ORGANS)


def paint_spleen(canvas: Canvas, vary: Variation) -> None:
    """Spleen: a curved ellipsoid with a concave hilum, high in the left upper quadrant."""
    body, hilum = vary("spleen", [Ellipsoid((-100, -45, 80), (27, 55, 47), (0, 0, -35)),
                                  Ellipsoid((-60, -22, 80), (24, 30, 36))])
    paint(canvas, [body], "spleen", label=class_index("spleen"), protect=PROTECT_ORGANS,
          clip=lambda X, Y, Z: below_diaphragm(X, Y, Z) & ~hilum.inside(X, Y, Z))


def paint_kidneys(canvas: Canvas, vary: Variation) -> None:
    """Kidneys (cortex + medulla, sinus fat at the hilum) with the adrenal glands on top."""
    for side in (1.0, -1.0):
        name = "kidney_right" if side > 0 else "kidney_left"
        zc = 28.0 if side > 0 else 40.0
        kidney, sinus = vary(name, [Ellipsoid((side * 62, -52, zc), (25, 22, 52), (0, -side * 12, side * 30)),
                                    Ellipsoid((side * 47, -44, zc), (13, 11, 25), (0, -side * 12, 0))])
        label = class_index(name)
        paint(canvas, [kidney], "kidney_cortex", label=label, protect=PROTECT_ORGANS)
        paint(canvas, shrink([kidney], 7.0), "kidney_medulla", label=label, protect=PROTECT_ORGANS)
        paint(canvas, [sinus], "fat_visceral", label=0, protect=PROTECT_ORGANS,
              only_labels=(label,))
        adrenal_name = "adrenal_gland_right" if side > 0 else "adrenal_gland_left"
        ax = 40.0 if side > 0 else -38.0
        az = 92.0 if side > 0 else 86.0
        limbs = vary(adrenal_name, [Ellipsoid((ax, -36, az), (3.5, 13, 19), (0, 0, side * 20)),
                                    Ellipsoid((ax + side * 6, -43, az - 3), (3.5, 12, 15), (0, 0, -side * 25))])
        paint(canvas, limbs, "adrenal", label=class_index(adrenal_name), protect=PROTECT_ORGANS)


def paint_pancreas(canvas: Canvas, vary: Variation) -> None:
    """Pancreas from the head in the duodenal C-loop across the midline to the splenic hilum."""
    shapes = vary("pancreas", tube([(28, 2, 18), (32, 8, 32), (8, 22, 42), (-30, 15, 48), (-70, -10, 58),
                                    (-86, -28, 64)], [13, 17, 11, 12, 11, 8]))
    paint(canvas, shapes, "pancreas", label=class_index("pancreas"), protect=PROTECT_ORGANS)


def paint_pelvic_organs(canvas: Canvas, vary: Variation, sex: str) -> None:
    """Uterus (female, unlabelled), urinary bladder and prostate (male)."""
    if sex == "female":
        paint(canvas, vary("uterus", [Ellipsoid((0, 5, -100), (32, 22, 40), (40, 0, 0))]), "uterus",
              protect=PROTECT_ORGANS)
    bladder = vary("bladder", [Ellipsoid((0, 35, -112), (40, 30, 24))])
    paint(canvas, bladder, "bowel_wall", label=class_index("bladder"), protect=PROTECT_ORGANS)
    paint(canvas, shrink(bladder, 3.0), "urine", label=class_index("bladder"), protect=PROTECT_ORGANS)
    if sex == "male":
        paint(canvas, vary("prostate", [Ellipsoid((0, 24, -149), (18, 14, 13))]), "prostate",
              label=class_index("prostate"), protect=PROTECT_ORGANS)


def make_variation(rng: np.random.Generator, scale_range=(0.88, 1.12), shift_std_mm: float = 4.0) -> Variation:
    """A function that varies each named organ group by its own random scale and shift.

    Draws are made once per name, in call order, so a case is reproducible from its seed.
    """
    def vary(name: str, shapes: list, about=None) -> list:
        base = rng.uniform(*scale_range)
        scale = base * rng.uniform(0.95, 1.05, size=3)
        shift = np.clip(rng.normal(0.0, shift_std_mm, size=3), -2 * shift_std_mm, 2 * shift_std_mm)
        return vary_all(shapes, scale, shift, about)
    return vary
