"""Tissue classes, their CT numbers per contrast phase, and rendering of the CT volume.

The HU table below is the one documented (with its literature sources) in ``docs/phantoms.md``.
Each row gives the nominal mean HU in the non-contrast (NC), arterial (ART) and portal-venous
(PV) phase. A case draws one contrast-timing factor ``f`` in [0.85, 1.1] and a per-tissue offset
in [-6, 6] HU: ``HU = NC + f * (phase - NC) + offset``. Partial-volume blur and Gaussian
noise (10-25 HU standard deviation) are applied to the whole volume.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

PHASES = ("non_contrast", "arterial", "portal_venous")

# name: (NC, ART, PV) nominal mean HU. Ranges and sources: docs/phantoms.md, "HU table".
HU_TABLE: dict[str, tuple[float, float, float]] = {
    "air": (-1000, -1000, -1000),
    "skin": (40, 50, 60),
    "fat_subcutaneous": (-105, -105, -105),
    "fat_visceral": (-100, -100, -100),
    "muscle": (50, 60, 65),
    "cortical_bone": (900, 900, 900),
    "cancellous_bone": (230, 230, 230),
    "lung": (-850, -850, -850),
    "gas": (-950, -950, -950),
    "bowel_fluid": (15, 15, 15),
    "stool": (10, 10, 10),
    "bowel_wall": (40, 90, 85),
    "liver": (58, 75, 112),
    "spleen": (47, 115, 120),
    "kidney_cortex": (32, 170, 170),
    "kidney_medulla": (32, 80, 160),
    "pancreas": (45, 115, 95),
    "adrenal": (25, 60, 65),
    "bile": (8, 8, 8),
    "urine": (8, 8, 8),
    "prostate": (40, 60, 75),
    "uterus": (45, 85, 100),
    "arterial_blood": (42, 300, 165),
    "systemic_venous_blood": (40, 90, 145),
    "portal_venous_blood": (42, 125, 180),
    "hepatic_venous_blood": (42, 60, 160),
    "csf": (10, 10, 10),
    "disc": (85, 85, 85),
    "heart": (45, 220, 145),
    "cartilage": (110, 110, 110),
    "table": (150, 150, 150),
}

TISSUE_IDS: dict[str, int] = {name: i for i, name in enumerate(HU_TABLE)}
LESION_TISSUE_BASE = 128       # tissue ids >= this are individual lesions (one id per lesion)
HU_MIN, HU_MAX = -1024, 3071


def tissue_id(name: str) -> int:
    """Integer id of a tissue (``KeyError`` naming the tissue when unknown)."""
    try:
        return TISSUE_IDS[name]
    except KeyError:
        raise KeyError(f"unknown tissue {name!r}; known: {sorted(TISSUE_IDS)}") from None


def phase_hu_table(phase: str, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Per-case look-up table tissue id -> HU (float32, 256 entries) and the contrast factor."""
    if phase not in PHASES:
        raise ValueError(f"unknown contrast phase {phase!r}; expected one of {PHASES}")
    column = PHASES.index(phase)
    factor = 1.0 if column == 0 else float(rng.uniform(0.85, 1.1))
    lut = np.full(256, -1000.0, dtype=np.float32)
    for name, values in HU_TABLE.items():
        base = values[0]
        offset = 0.0 if abs(base) >= 800 else float(rng.uniform(-6, 6))
        lut[TISSUE_IDS[name]] = base + factor * (values[column] - base) + offset
    return lut, factor


def partial_volume_blur(volume: np.ndarray, axis: int, sigma_vox: float) -> np.ndarray:
    """Gaussian blur along one axis (edges: nearest). Sigmas up to 0.75 voxel use an exact
    3-tap kernel with numpy slicing (the same kernel scipy uses at ``truncate=2``, but faster)."""
    if sigma_vox > 0.75 or volume.shape[axis] < 2:
        return ndimage.gaussian_filter1d(volume, sigma_vox, axis=axis, mode="nearest", truncate=2.0)
    side = float(np.exp(-0.5 / sigma_vox ** 2))
    w_side, w_centre = np.float32(side / (1 + 2 * side)), np.float32(1 / (1 + 2 * side))

    def cut(start, stop):
        index = [slice(None)] * volume.ndim
        index[axis] = slice(start, stop)
        return tuple(index)

    out = volume * w_centre
    out[cut(1, None)] += volume[cut(None, -1)] * w_side
    out[cut(None, -1)] += volume[cut(1, None)] * w_side
    out[cut(0, 1)] += volume[cut(0, 1)] * w_side
    out[cut(-1, None)] += volume[cut(-1, None)] * w_side
    return out


def render_ct(tissue: np.ndarray, lut: np.ndarray, spacing_mm, noise_std_hu: float,
              rng: np.random.Generator) -> np.ndarray:
    """CT volume (int16 HU) from a tissue-id volume: look-up, partial-volume blur, noise.

    Args:
        tissue: uint8 tissue ids.
        lut: float32 (256,) HU per tissue id (lesion ids included).
        spacing_mm: voxel size; the blur is ~0.8 mm in-plane and ~1 mm through-plane.
        noise_std_hu: standard deviation of the additive Gaussian noise.
        rng: random generator for the noise.
    """
    hu = lut[tissue]
    sigma_vox = [max(0.8 / spacing_mm[0], 0.3), max(0.8 / spacing_mm[1], 0.3), max(1.0 / spacing_mm[2], 0.3)]
    for axis, sigma in enumerate(sigma_vox):
        hu = partial_volume_blur(hu, axis, sigma)
    noise = rng.standard_normal(size=hu.shape, dtype=np.float32)
    noise *= np.float32(noise_std_hu)
    hu += noise
    np.clip(hu, HU_MIN, HU_MAX, out=hu)
    return np.rint(hu).astype(np.int16)
