"""A simple, self-contained lesion model for the phantom (classes 26-32 of the label space).

Each lesion is a randomly oriented ellipsoid (semi-axes r, a*r, b*r with a, b in [0.75, 1]) of
3-50 mm placed entirely inside its host organ: its centre is drawn among host voxels whose
distance to the host boundary exceeds the radius plus a two-voxel margin (so lesions never
touch each other or leave the organ). Attenuation is homogeneous per lesion, hypo- or
hyper-attenuating depending on the lesion type and phase (docs/phantoms.md, "Lesions").

This model is deliberately independent of the tumour-synthesis bundle.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .geometry import rotation_matrix
from .intensity import LESION_TISSUE_BASE, PHASES
from .label_space import class_index, classes_by_index

# file_name: (draw weight, (min, max) nominal diameter mm, [(type, (NC, ART, PV) HU), ...])
LESION_MODELS = {
    "liver_tumor": (0.28, (5, 50), [("hypoattenuating metastasis", (40, 55, 65)),
                                   ("arterially enhancing (HCC-like)", (45, 125, 80))]),
    "kidney_cyst": (0.20, (5, 40), [("simple cyst", (8, 8, 8))]),
    "kidney_tumor": (0.14, (10, 45), [("hyperenhancing solid mass", (35, 150, 115)),
                                     ("hypoenhancing solid mass", (35, 70, 85))]),
    "pancreas_tumor": (0.10, (8, 35), [("hypoattenuating mass", (40, 65, 65))]),
    "hepatic_vessel_tumor": (0.08, (6, 35), [("hypoattenuating perivascular mass", (38, 55, 60))]),
    "colon_tumor": (0.10, (10, 35), [("enhancing wall mass", (40, 85, 90))]),
    "lung_tumor": (0.10, (4, 30), [("solid nodule", (35, 60, 65))]),
}
COUNT_PROBABILITIES = (0.25, 0.35, 0.25, 0.15)       # P(0, 1, 2, 3 lesions) per non-healthy case
MIN_DIAMETER_MM, MAX_DIAMETER_MM = 3.0, 50.0


@dataclass
class Lesion:
    """One placed lesion: where (RAS-array voxel box + mask), what, and its nominal size."""

    class_index: int
    host_index: int
    kind: str
    hu: float
    box: tuple
    mask: np.ndarray
    nominal_diameter_mm: float

    def diameter_mm(self, spacing_mm) -> float:
        """Largest extent of the mask along the array axes, in mm (voxel count x spacing)."""
        extents = [np.flatnonzero(self.mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
        return float(max((e[-1] - e[0] + 1) * spacing_mm[ax] for ax, e in enumerate(extents)))

    def centre_index(self) -> np.ndarray:
        """Centroid of the mask in RAS-array voxel indices."""
        idx = np.argwhere(self.mask).mean(axis=0)
        return idx + np.array([s.start for s in self.box])


def _host_distance(labels: np.ndarray, host: int, spacing_mm):
    """Distance (mm) to the host boundary inside the host's bounding box, and that box."""
    mask = labels == host
    if not mask.any():
        return None, None
    lo, hi = [], []
    for ax in range(3):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))
        lo.append(max(int(idx[0]) - 1, 0))
        hi.append(min(int(idx[-1]) + 2, labels.shape[ax]))
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    padded = np.pad(mask[box], 1)                  # outside the volume counts as outside the host
    dist = ndimage.distance_transform_edt(padded, sampling=spacing_mm)[1:-1, 1:-1, 1:-1]
    return dist, box


def _ellipsoid_mask(radius_mm: float, spacing_mm, rng: np.random.Generator) -> np.ndarray:
    """Boolean ellipsoid on a voxel patch centred on its middle voxel (always non-empty)."""
    radii = radius_mm * np.array([1.0, rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0)])
    rot = rotation_matrix(tuple(rng.uniform(0, np.pi, size=3)))
    half = [int(np.ceil(radius_mm / s)) for s in spacing_mm]
    grids = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, spacing_mm)], indexing="ij")
    local = np.stack(grids, axis=-1) @ rot
    mask = ((local / radii) ** 2).sum(axis=-1) <= 1.0
    mask[tuple(half)] = True
    return mask


def place_lesion(labels, spacing_mm, host: int, diameter_mm: float,
                 rng: np.random.Generator, near_label: int | None = None):
    """Place one lesion inside ``host``; returns (box, mask, diameter) or None if it cannot fit."""
    dist, hbox = _host_distance(labels, host, spacing_mm)
    if dist is None:
        return None
    margin = 2.0 * float(max(spacing_mm))
    radius = min(diameter_mm / 2.0, float(dist.max()) - margin - 0.25 * float(min(spacing_mm)))
    if radius < MIN_DIAMETER_MM / 2.0:
        return None
    ok = dist > radius + margin
    if near_label is not None:
        vessel_dist = ndimage.distance_transform_edt(labels[hbox] != near_label, sampling=spacing_mm)
        near = ok & (vessel_dist < radius + 8.0)
        ok = near if near.any() else ok
    candidates = np.flatnonzero(ok)
    if len(candidates) == 0:
        return None
    centre = np.array(np.unravel_index(candidates[rng.integers(len(candidates))], ok.shape))
    centre += np.array([s.start for s in hbox])
    mask = _ellipsoid_mask(radius, spacing_mm, rng)
    half = np.array(mask.shape) // 2
    box = tuple(slice(int(c - h), int(c + h + 1)) for c, h in zip(centre, half))
    return box, mask & (labels[box] == host), 2.0 * radius


def add_lesions(labels: np.ndarray, tissue: np.ndarray, spacing_mm, phase: str,
                rng: np.random.Generator) -> list[Lesion]:
    """Draw 0-3 lesions and paint them into ``labels`` and ``tissue`` (lesion ids from 128)."""
    names = list(LESION_MODELS)
    weights = np.array([LESION_MODELS[n][0] for n in names])
    classes = classes_by_index()
    count = int(rng.choice(len(COUNT_PROBABILITIES), p=COUNT_PROBABILITIES))
    lesions: list[Lesion] = []
    for _ in range(count):
        name = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        _, (d_min, d_max), kinds = LESION_MODELS[name]
        kind, hu_by_phase = kinds[int(rng.integers(len(kinds)))]
        diameter = float(np.exp(rng.uniform(np.log(d_min), np.log(d_max))))
        hu = float(hu_by_phase[PHASES.index(phase)] + rng.uniform(-8, 8))
        idx = class_index(name)
        hosts = list(classes[idx]["host_organs"])
        rng.shuffle(hosts)
        near = class_index("hepatic_vessel") if name == "hepatic_vessel_tumor" else None
        for host in hosts:
            placed = place_lesion(labels, spacing_mm, int(host), diameter, rng, near_label=near)
            if placed is None:
                continue
            box, mask, nominal = placed
            lesion_id = LESION_TISSUE_BASE + len(lesions)
            labels[box][mask] = idx
            tissue[box][mask] = lesion_id
            lesions.append(Lesion(idx, int(host), kind, hu, box, mask, round(nominal, 2)))
            break
    return lesions
