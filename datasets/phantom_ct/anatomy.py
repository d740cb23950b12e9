"""Assemble the whole phantom anatomy on a canvas, in painter's order.

Order: body wall & thorax -> skeleton -> liver (gallbladder, hepatic vessels) -> hollow organs
-> spleen -> pancreas -> kidneys & adrenals -> pelvic organs -> great vessels.
"""
from __future__ import annotations

import numpy as np

from .anatomy_body import paint_body
from .anatomy_bones import paint_skeleton
from .anatomy_gut import paint_gut
from .anatomy_organs import (make_variation, paint_kidneys, paint_liver, paint_pancreas,
                             paint_pelvic_organs, paint_spleen)
from .anatomy_vessels import paint_vessels
from .geometry import Canvas


def build_anatomy(canvas: Canvas, rng: np.random.Generator, sex: str) -> dict:
    """Paint labels and tissues of one case; returns anatomy parameters for meta.json.

    Args:
        canvas: an empty canvas (its transform already holds the case's pose and deformation).
        rng: the case's random generator.
        sex: ``"male"`` or ``"female"`` (prostate vs uterus).
    """
    body = paint_body(canvas, rng)
    paint_skeleton(canvas)
    vary = make_variation(rng)
    paint_liver(canvas, vary)
    paint_gut(canvas, vary, rng)
    paint_spleen(canvas, vary)
    paint_pancreas(canvas, vary)
    paint_kidneys(canvas, vary)
    paint_pelvic_organs(canvas, vary, sex)
    paint_vessels(canvas, vary)
    return body
