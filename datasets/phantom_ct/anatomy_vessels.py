"""Great vessels and visceral branches, in canonical mm (x right, y anterior, z up).

Labelled: aorta, postcava (IVC), portal + splenic vein, celiac trunk. Unlabelled but painted
for realism: iliac arteries/veins, renal arteries/veins, SMA, SMV, hepatic and splenic arteries.
Vessels overwrite soft tissue but never bone.
"""
from __future__ import annotations

from .geometry import Canvas
from .label_space import class_index
from .painter import PROTECT_VESSELS, paint
from .shapes import tube

ARTERY, VEIN, PORTAL = "arterial_blood", "systemic_venous_blood", "portal_venous_blood"


def paint_vessels(canvas: Canvas, vary) -> None:
    """Paint veins first, then arteries, then the labelled portal system."""
    ivc = vary("postcava", tube([(20, -5, 172), (25, -18, 110), (22, -24, 60), (20, -25, 0), (14, -25, -48)],
                                [13, 13, 12, 11, 10]))
    paint(canvas, ivc, VEIN, label=class_index("postcava"), protect=PROTECT_VESSELS)
    for side in (1.0, -1.0):
        paint(canvas, tube([(14, -25, -48), (side * 42, -25, -90), (side * 68, 0, -125)], [9, 7, 6]), VEIN,
              protect=PROTECT_VESSELS)
        paint(canvas, tube([(-8, -22, -45), (side * 40, -13, -90), (side * 70, 12, -125)], [7, 6, 5]), ARTERY,
              protect=PROTECT_VESSELS)
    paint(canvas, tube([(50, -40, 26), (22, -25, 28)], 5), VEIN, protect=PROTECT_VESSELS)
    paint(canvas, tube([(-50, -40, 36), (-12, -8, 34), (20, -20, 32)], 5), VEIN, protect=PROTECT_VESSELS)
    aorta = vary("aorta", tube([(-8, -22, 175), (-10, -24, 100), (-12, -24, 40), (-8, -22, -45)], [13, 12, 11, 9.5]))
    paint(canvas, aorta, ARTERY, label=class_index("aorta"), protect=PROTECT_VESSELS)
    paint(canvas, tube([(-12, -24, 30), (50, -44, 28)], 3.5), ARTERY, protect=PROTECT_VESSELS)
    paint(canvas, tube([(-12, -24, 32), (-50, -44, 38)], 3.5), ARTERY, protect=PROTECT_VESSELS)
    paint(canvas, tube([(-12, -18, 50), (-10, 5, 38), (-6, 18, 0), (-4, 25, -40)], 4), ARTERY,
          protect=PROTECT_VESSELS)
    paint(canvas, tube([(-10, 2, 66), (25, 8, 62), (35, 5, 68)], 3), ARTERY, protect=PROTECT_VESSELS)
    paint(canvas, tube([(-10, 2, 66), (-45, 0, 68), (-80, -25, 72)], 3), ARTERY, protect=PROTECT_VESSELS)
    paint(canvas, tube([(-12, -20, 60), (-10, 2, 66)], 4.5), ARTERY, label=class_index("celiac_trunk"),
          protect=PROTECT_VESSELS)
    paint(canvas, tube([(3, 20, -40), (4, 14, 0), (5, 5, 38)], 5.5), PORTAL, protect=PROTECT_VESSELS)
    portal = tube([(-82, -30, 66), (-60, -12, 56), (-30, 2, 46), (5, 5, 40)], 5) + \
        tube([(5, 5, 40), (22, 8, 55), (35, 5, 66)], [7.5, 7.5, 6.5])
    paint(canvas, portal, PORTAL, label=class_index("portal_vein_and_splenic_vein"), protect=PROTECT_VESSELS)
