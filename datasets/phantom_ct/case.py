"""One phantom case in memory: :func:`generate_case` (pure, no I/O) and :class:`PhantomCase`."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .anatomy import build_anatomy
from .geometry import Canvas, CaseTransform
from .intensity import LESION_TISSUE_BASE, PHASES, phase_hu_table, render_ct
from .label_space import classes_by_index
from .lesions import add_lesions

DEFAULT_SHAPE = (256, 256, 160)
DEFAULT_SPACING_MM = (1.5, 1.5, 2.0)
ORIENTATIONS = ("RAS", "LPS")
SEXES = ("male", "female")
GENERATOR_VERSION = "phantom_ct 1.0"


@dataclass
class PhantomCase:
    """A generated case.

    Attributes:
        ct: int16 HU volume in the stored array orientation.
        labels: uint8 label-space indices (lesions painted over their host organ).
        affine: 4x4 float64 voxel -> world (NIfTI RAS+ mm) matrix, shared by ``ct`` and ``labels``.
        meta: JSON-ready description (seed, phase, sex, spacing, orientation, lesions ...).
        organ_labels: like ``labels`` but with each lesion's voxels still carrying the host organ.
        lesion_signal: float32 HU, the noiseless CT minus the same noiseless CT without lesions (what the lesions
            add to the image); only when ``generate_case(..., lesion_signal=True)``.
    """

    ct: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    meta: dict
    organ_labels: np.ndarray = field(default=None, repr=False)
    lesion_signal: np.ndarray = field(default=None, repr=False)


def validate_geometry(shape, spacing) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Check a grid request; raises ``ValueError`` naming the problem."""
    if len(shape) != 3 or any(int(s) != s or s < 16 or s > 1024 for s in shape):
        raise ValueError(f"shape {tuple(shape)}: expected three integers between 16 and 1024")
    if len(spacing) != 3 or any(not (0.2 <= float(s) <= 10.0) for s in spacing):
        raise ValueError(f"spacing {tuple(spacing)}: expected three values between 0.2 and 10 mm")
    if int(np.prod(shape)) > 512 * 512 * 512:
        raise ValueError(f"shape {tuple(shape)}: more than 512^3 voxels does not fit in memory")
    return tuple(int(s) for s in shape), tuple(float(s) for s in spacing)


def _choose(value, options, drawn, what):
    """``value`` when given (checked against ``options``), else the value drawn from the seed."""
    if value is None:
        return drawn
    if value not in options:
        raise ValueError(f"{what} {value!r}: expected one of {options}")
    return value


def _orient(case_arrays: list[np.ndarray], canvas: Canvas, orientation: str):
    """Arrays and affine for the stored orientation (the world anatomy never changes)."""
    sx, sy, sz = canvas.spacing_mm
    ox, oy, oz = canvas.origin_mm
    if orientation == "RAS":
        return case_arrays, np.array([[sx, 0, 0, ox], [0, sy, 0, oy], [0, 0, sz, oz], [0, 0, 0, 1]], float)
    flipped = [np.ascontiguousarray(a[::-1, ::-1, :]) for a in case_arrays]
    ex, ey = ox + (canvas.shape[0] - 1) * sx, oy + (canvas.shape[1] - 1) * sy
    return flipped, np.array([[-sx, 0, 0, ex], [0, -sy, 0, ey], [0, 0, sz, oz], [0, 0, 0, 1]], float)


def generate_case(seed: int, shape=DEFAULT_SHAPE, spacing=DEFAULT_SPACING_MM, healthy: bool = False,
                  sex: str | None = None, phase: str | None = None, orientation: str | None = None,
                  lesion_signal: bool = False) -> PhantomCase:
    """Generate one phantom case (pure function of its arguments).

    Args:
        seed: case seed; every random draw comes from ``numpy.random.default_rng(seed)``.
        shape: voxels along x, y, z (the default covers lung bases to femoral heads).
        spacing: voxel size in mm.
        healthy: no lesions when True.
        sex: ``"male"``/``"female"``; drawn from the seed when None.
        phase: ``"non_contrast"``/``"arterial"``/``"portal_venous"``; drawn when None.
        orientation: ``"RAS"``/``"LPS"`` array orientation; drawn when None.
        lesion_signal: also render the case twice without noise, with and without its lesions, and return the
            difference as ``lesion_signal`` (``phantom_ct.detectability``). The case itself is unchanged: those
            renders draw nothing from the case's random generator.
    """
    shape, spacing = validate_geometry(shape, spacing)
    rng = np.random.default_rng(int(seed))
    sex = _choose(sex, SEXES, SEXES[int(rng.integers(2))], "sex")
    phase = _choose(phase, PHASES, PHASES[int(rng.integers(3))], "phase")
    orientation = _choose(orientation, ORIENTATIONS, ORIENTATIONS[int(rng.integers(2))], "orientation")
    noise_std_hu = float(rng.uniform(10, 25))
    transform = CaseTransform.draw(rng)
    canvas = Canvas(shape, spacing, transform, rng)
    body = build_anatomy(canvas, rng, sex)
    organ_labels = canvas.labels.copy()
    tissue_without_lesions = canvas.tissue.copy() if lesion_signal else None
    lesions = [] if healthy else add_lesions(canvas.labels, canvas.tissue, spacing, phase, rng)
    lut, contrast_factor = phase_hu_table(phase, rng)
    for k, lesion in enumerate(lesions):
        lut[LESION_TISSUE_BASE + k] = lesion.hu
    arrays = [canvas.labels, organ_labels]
    if lesion_signal:
        arrays.append(_noiseless(canvas.tissue, lut, spacing) - _noiseless(tissue_without_lesions, lut, spacing))
    ct = render_ct(canvas.tissue, lut, spacing, noise_std_hu, rng)
    records = _lesion_records(lesions, ct, canvas)
    (ct, labels, organ_labels, *signal), affine = _orient([ct, *arrays], canvas, orientation)
    present = _present(labels)
    meta = {
        "generator": GENERATOR_VERSION, "seed": int(seed), "phase": phase, "sex": sex,
        "orientation": orientation, "shape": list(shape), "spacing_mm": list(spacing),
        "affine": affine.tolist(), "world_coordinates": "NIfTI RAS+ mm (DICOM LPS: x and y negated)",
        "noise_std_hu": round(noise_std_hu, 2), "contrast_factor": round(contrast_factor, 3),
        "body_scale": [round(float(s), 3) for s in transform.scale],
        "shift_mm": [round(float(s), 2) for s in transform.shift_mm], "body": body,
        "organs_present": _present(organ_labels),
        "classes_present": present, "lesions": records,
    }
    return PhantomCase(ct=ct, labels=labels, affine=affine, meta=meta, organ_labels=organ_labels,
                       lesion_signal=signal[0] if signal else None)


def _noiseless(tissue: np.ndarray, lut: np.ndarray, spacing) -> np.ndarray:
    """float32 CT of ``tissue`` without noise (its own generator, so the case's random stream is untouched)."""
    return render_ct(tissue, lut, spacing, 0.0, np.random.default_rng(0)).astype(np.float32)


def _present(labels: np.ndarray) -> list[int]:
    """Sorted non-zero label values present in a uint8 volume."""
    flags = np.zeros(256, dtype=bool)
    flags[labels.reshape(-1)] = True
    return [int(i) for i in np.flatnonzero(flags[1:]) + 1]


def _interior(mask: np.ndarray) -> np.ndarray:
    """The mask eroded by one voxel (the whole mask when that leaves nothing): where a lesion's
    HU is measured without the partial-volume rim."""
    inner = ndimage.binary_erosion(mask)
    return inner if inner.any() else mask


def _lesion_records(lesions, ct: np.ndarray, canvas: Canvas) -> list[dict]:
    """meta.json records of the lesions (centre in world RAS mm, measured diameter and HU)."""
    classes = classes_by_index()
    records = []
    for lesion in lesions:
        centre_mm = canvas.origin_mm + lesion.centre_index() * canvas.spacing_mm
        records.append({
            "class_index": lesion.class_index, "class_name": classes[lesion.class_index]["name"],
            "host_index": lesion.host_index, "host_name": classes[lesion.host_index]["name"],
            "type": lesion.kind, "centre_mm": [round(float(c), 2) for c in centre_mm],
            "diameter_mm": round(lesion.diameter_mm(canvas.spacing_mm), 2),
            "nominal_diameter_mm": lesion.nominal_diameter_mm,
            "mean_hu": round(float(ct[lesion.box][_interior(lesion.mask)].mean()), 1),
            "voxels": int(lesion.mask.sum()),
        })
    return records
