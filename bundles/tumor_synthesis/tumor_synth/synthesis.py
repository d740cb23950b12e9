"""Core of the tumor synthesis: plan lesion sizes, place them and paint each one in its own small box.

Works on numpy views in place; :class:`tumor_synth.array.SynthesizeTumor` handles types, copies and metadata.
All random numbers come from the ``rng`` passed in (the transform's ``self.R``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import mass_effect, placement, shape, texture
from .presets import SIZE_CLASSES, SIZE_DRAWS


def plan_sizes(preset: dict[str, Any], rng: np.random.RandomState, draw: str | None = None) -> tuple[str, list[str]]:
    """Draws the size class ('tiny' ... 'mix') and the list of lesion size classes to place, largest first."""
    if draw is None:
        p = np.array([preset["size_class_probabilities"].get(n, 0.0) for n in SIZE_DRAWS], dtype=float)
        draw = SIZE_DRAWS[rng.choice(len(SIZE_DRAWS), p=p / p.sum())]
    counts = preset["mix"] if draw == "mix" else {draw: preset["size_classes"][draw]["count"]}
    plan = []
    for name in reversed(SIZE_CLASSES):
        if name in counts:
            lo, hi = counts[name]
            plan += [name] * int(rng.randint(lo, hi + 1))
    return draw, plan


def draw_shape(
    preset: dict[str, Any], size_class: str, centre: np.ndarray, rng: np.random.RandomState
) -> shape.LesionShape:
    """Random ellipsoid semi-axes U(0.75 r0, 1.25 r0) mm, rotation, elastic sigma and edge blur for one lesion."""
    sc = preset["size_classes"][size_class]
    r0 = sc["radius_mm"]
    return shape.LesionShape(
        centre_vox=centre.astype(float),
        semi_axes_mm=rng.uniform(0.75 * r0, 1.25 * r0, size=3),
        rotation=shape.random_rotation(rng),
        elastic_sigma_mm=float(rng.uniform(*sc["elastic_sigma_mm"])),
        edge_blur_mm=float(rng.uniform(*preset["edge_blur_mm"])),
    )


def _smallest_bound_mm(preset: dict[str, Any], size_class: str) -> float:
    """Lower bound of the bounding radius ``max semi-axis + 2 elastic sigma`` that :func:`draw_shape` can draw."""
    sc = preset["size_classes"][size_class]
    return 0.75 * sc["radius_mm"] + 2.0 * sc["elastic_sigma_mm"][0]


def draw_intensity(preset: dict[str, Any], rng: np.random.RandomState) -> tuple[str, float, float]:
    """Attenuation mode name, mean HU shift relative to the organ, and texture coefficient of variation."""
    modes = preset["intensity"]
    p = np.array([m["probability"] for m in modes], dtype=float)
    mode = modes[rng.choice(len(modes), p=p / p.sum())]
    return mode["name"], float(rng.uniform(*mode["hu_shift"])), float(rng.uniform(*mode["texture_cv"]))


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> float:
    """Mean of ``values`` over ``mask``; on a 2x subsample for big boxes (speed)."""
    if mask.size > 200_000:
        sub = (slice(None, None, 2),) * 3
        if mask[sub].any():
            values, mask = values[sub], mask[sub]
    return float(values[mask].mean(dtype=np.float64))


def _write(view: np.ndarray, values: np.ndarray) -> None:
    """Writes float values into an image view, rounding and clipping for integer images."""
    if np.issubdtype(view.dtype, np.integer):
        info = np.iinfo(view.dtype)
        values = np.clip(np.rint(values), info.min, info.max)
    view[...] = values


def _forbidden_near_centre(
    label: np.ndarray, geo: shape.LesionShape, spacing: np.ndarray, forbidden: list[int]
) -> bool:
    """Cheap early rejection: a forbidden voxel lies surely inside the lesion (closer than its inner radius)."""
    inner = float(geo.semi_axes_mm.min()) - 2.0 * geo.elastic_sigma_mm
    if not forbidden or inner <= 0:
        return False
    c = np.round(geo.centre_vox).astype(int)
    r = np.floor(inner / spacing).astype(int)
    lo = np.maximum(c - r, 0)
    sub = tuple(slice(a, b) for a, b in zip(lo, np.minimum(c + r + 1, label.shape)))
    near = placement.in_labels(label[sub], forbidden)
    if not near.any():
        return False
    idx = np.nonzero(near)
    d2 = sum(((i + o - cc) * sp) ** 2 for i, o, cc, sp in zip(idx, lo, geo.centre_vox, spacing))
    return bool(d2.min() < inner**2)


def paint_lesion(
    image: np.ndarray,
    label: np.ndarray,
    geo: shape.LesionShape,
    preset: dict[str, Any],
    spacing: np.ndarray,
    rng: np.random.RandomState,
    forbidden: list[int],
) -> dict[str, Any] | None:
    """Paints one lesion into ``image`` (C, X, Y, Z) and ``label`` (X, Y, Z) in place, inside its box only.

    Returns:
        The lesion record, or None when the lesion would touch a forbidden label (vessel, other lesion)
        or does not overlap the organ; nothing is written then.
    """
    box = shape.lesion_box(geo, spacing, label.shape)
    if box is None or _forbidden_near_centre(label, geo, spacing, forbidden):
        return None
    box, u = shape.lesion_field(geo, box, spacing, rng)
    lab_box = label[box]
    soft, hard = shape.soft_mask(u, geo)
    if forbidden:
        near = placement.in_labels(lab_box, forbidden)
        if near.any() and (soft[near] > 0.01).any():
            return None
    organ = placement.in_labels(lab_box, preset["organ_labels"])
    hard &= organ
    if not hard.any():
        return None
    mode, hu_shift, cv = draw_intensity(preset, rng)
    me = preset["mass_effect"]
    push = float(rng.uniform(*me["strength"])) if rng.uniform() < me["probability"] else 0.0
    view = image[(slice(None),) + box]
    organ_hu = _masked_mean(view[0], organ)
    if push > 0:
        local_centre = geo.centre_vox - np.array([s.start for s in box])
        warped, lab_warped = mass_effect.radial_push(
            view.astype(np.float32), lab_box, local_centre, 1.3 * geo.diameter_mm / 2, push, spacing
        )
        _write(view, warped)
        lab_box[...] = lab_warped
        organ = placement.in_labels(lab_box, preset["organ_labels"])
        hard &= organ
    tex, tex_params = texture.lesion_texture(list(soft.shape), spacing, cv, rng)
    soft *= organ
    soft *= tex
    soft *= hu_shift
    if np.issubdtype(image.dtype, np.integer):
        _write(view, view.astype(np.float32) + soft[None])
    else:
        view += soft[None]
    np.copyto(lab_box, preset["tumor_label"], where=hard, casting="unsafe")
    intensity = {"organ_hu": organ_hu, "hu_shift": hu_shift, "attenuation": mode, "push": push, "texture": tex_params}
    return _record(geo, hard, _masked_mean(view[0], hard), spacing, intensity)


def _record(
    geo: shape.LesionShape, hard: np.ndarray, mean_hu: float, spacing: np.ndarray, drawn: dict[str, Any]
) -> dict[str, Any]:
    """JSON-ready description of one painted lesion (lengths in mm, intensities in HU)."""
    n_vox = int(np.count_nonzero(hard))
    volume = n_vox * float(np.prod(spacing))
    organ_hu = drawn["organ_hu"]
    return {
        "centre_vox": [float(v) for v in geo.centre_vox],
        "diameter_mm": round(geo.diameter_mm, 3),
        "semi_axes_mm": [round(float(a), 3) for a in geo.semi_axes_mm],
        "equivalent_diameter_mm": round((6.0 * volume / np.pi) ** (1.0 / 3.0), 3),
        "volume_mm3": round(volume, 2),
        "n_voxels": n_vox,
        "mean_hu": round(mean_hu, 2),
        "organ_hu": round(organ_hu, 2),
        "contrast_hu": round(mean_hu - organ_hu, 2),
        "hu_shift": round(drawn["hu_shift"], 2),
        "attenuation": drawn["attenuation"],
        "edge_blur_mm": round(geo.edge_blur_mm, 3),
        "elastic_sigma_mm": round(geo.elastic_sigma_mm, 3),
        "mass_effect_strength": round(drawn["push"], 3),
        "texture": {k: round(v, 3) for k, v in drawn["texture"].items()},
    }


def synthesize(
    image: np.ndarray,
    label: np.ndarray,
    sampler: placement.OrganSampler,
    preset: dict[str, Any],
    spacing: np.ndarray,
    rng: np.random.RandomState,
    avoid_vessels: bool = True,
    max_tries: int = 20,
    size_class: str | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """Places and paints all lesions of one draw.

    Args:
        image: (C, X, Y, Z) float or integer HU array, written in place.
        label: (X, Y, Z) label map, written in place; ``sampler`` must read this array.
        sampler: organ centre sampler on ``label``.
        preset: validated organ preset.
        spacing: (3,) voxel size in mm.
        rng: random state.
        avoid_vessels: reject lesions touching the preset's vessel labels (first half of the tries; later
            tries let a lesion enclose vessels, which are left unpainted).
        max_tries: candidate centres tried per lesion before giving it up.
        size_class: force a size draw ('tiny' ... 'mix'); None draws it from the preset.

    Returns:
        (size draw name, list of lesion records with ``size_class`` set).
    """
    draw, plan = plan_sizes(preset, rng, size_class)
    forbidden = [preset["tumor_label"]] + (list(preset["vessel_labels"]) if avoid_vessels else [])
    placed: list[tuple[np.ndarray, float]] = []
    records = []
    for name in plan:
        for attempt in range(max_tries):
            # vessels are avoided during the first half of the tries; after that a lesion may enclose vessels,
            # which stay unpainted (they are not organ voxels) - big lesions in vessel-rich organs need this
            avoid = forbidden if attempt < max_tries // 2 else forbidden[:1]
            centre = sampler.draw()
            if centre is None:
                return draw, records
            # most candidates of a crowded organ are rejected for collisions: test the smallest possible bounding
            # sphere of this size class before anything else (no random draw, no label lookups)
            if placement.collides(centre * spacing, _smallest_bound_mm(preset, name), placed):
                continue
            if not sampler.deep_enough(centre, preset["erosion_mm"], spacing):
                continue
            geo = draw_shape(preset, name, centre, rng)
            bound = float(geo.semi_axes_mm.max() + 2.0 * geo.elastic_sigma_mm)
            if placement.collides(centre * spacing, bound, placed):
                continue
            rec = paint_lesion(image, label, geo, preset, spacing, rng, avoid)
            if rec is not None:
                rec["size_class"] = name
                placed.append((centre * spacing, bound))
                records.append(rec)
                break
    return draw, records
