"""Organ presets for tumor synthesis: plain data loaded from ``presets.json``.

A preset is a dictionary (see ``presets.json`` for the documented keys). To add an organ, either
add an entry to ``presets.json`` or pass a dictionary with the same keys as ``preset=`` to
:class:`~tumor_synth.array.SynthesizeTumor`; :func:`validate_preset` checks it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

PRESETS_FILE = Path(__file__).with_name("presets.json")
SIZE_CLASSES = ("tiny", "small", "medium", "large")
SIZE_DRAWS = SIZE_CLASSES + ("mix",)
_REQUIRED = (
    "organ_labels",
    "tumor_label",
    "vessel_labels",
    "erosion_mm",
    "size_class_probabilities",
    "size_classes",
    "mix",
    "intensity",
    "edge_blur_mm",
    "mass_effect",
)


def load_presets(path: str | Path = PRESETS_FILE) -> dict[str, dict[str, Any]]:
    """Reads and validates every organ preset of a presets JSON file.

    Args:
        path: JSON file mapping organ name to preset (keys starting with ``_`` are comments).

    Returns:
        Mapping organ name -> validated preset dictionary.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read tumor presets ({err})") from err
    return {name: validate_preset(p, f"{path}:{name}") for name, p in raw.items() if not name.startswith("_")}


def get_preset(organ: str | dict[str, Any]) -> dict[str, Any]:
    """Returns a validated copy of the preset for ``organ`` (a name in ``presets.json`` or a dict)."""
    if isinstance(organ, dict):
        return validate_preset(copy.deepcopy(organ), "preset")
    presets = load_presets()
    if organ not in presets:
        raise ValueError(f"{PRESETS_FILE}: no tumor preset named {organ!r}; available: {sorted(presets)}")
    return presets[organ]


def _check_range(value: Any, where: str, lo: float | None = None) -> None:
    ok = isinstance(value, (list, tuple)) and len(value) == 2 and value[0] <= value[1]
    if not ok or (lo is not None and value[0] < lo):
        extra = "" if lo is None else f" and min >= {lo}"
        raise ValueError(f"{where}: expected [min, max] with min <= max{extra}, got {value!r}")


def validate_preset(preset: dict[str, Any], where: str = "preset") -> dict[str, Any]:
    """Checks the keys, ranges and probabilities of one preset; raises ``ValueError`` naming the problem."""
    missing = [k for k in _REQUIRED if k not in preset]
    if missing:
        raise ValueError(f"{where}: missing keys {missing}")
    if not preset["organ_labels"]:
        raise ValueError(f"{where}: organ_labels is empty")
    probs = preset["size_class_probabilities"]
    unknown = set(probs) - set(SIZE_DRAWS)
    if unknown or any(p < 0 for p in probs.values()) or sum(probs.values()) <= 0:
        raise ValueError(f"{where}: size_class_probabilities must be non-negative over {SIZE_DRAWS}, got {probs}")
    for name in SIZE_CLASSES:
        sc = preset["size_classes"].get(name)
        if sc is None:
            raise ValueError(f"{where}: size_classes.{name} is missing")
        if sc["radius_mm"] <= 0:
            raise ValueError(f"{where}: size_classes.{name}.radius_mm must be > 0")
        _check_range(sc["count"], f"{where}: size_classes.{name}.count", 0)
        _check_range(sc["elastic_sigma_mm"], f"{where}: size_classes.{name}.elastic_sigma_mm", 0)
        _check_range(preset["mix"].get(name, [0, 0]), f"{where}: mix.{name}", 0)
    if not preset["intensity"] or sum(m["probability"] for m in preset["intensity"]) <= 0:
        raise ValueError(f"{where}: intensity needs at least one mode with probability > 0")
    for mode in preset["intensity"]:
        _check_range(mode["hu_shift"], f"{where}: intensity.{mode.get('name')}.hu_shift")
        _check_range(mode["texture_cv"], f"{where}: intensity.{mode.get('name')}.texture_cv", 0)
    _check_range(preset["edge_blur_mm"], f"{where}: edge_blur_mm", 0)
    _check_range(preset["mass_effect"]["strength"], f"{where}: mass_effect.strength", 0)
    if preset["erosion_mm"] < 0:
        raise ValueError(f"{where}: erosion_mm must be >= 0")
    return preset


def diameter_range_mm(preset: dict[str, Any], size_class: str) -> tuple[float, float]:
    """Nominal diameter range (mm) of a size class: 2 x U(0.75 r0, 1.25 r0)."""
    r0 = preset["size_classes"][size_class]["radius_mm"]
    return 1.5 * r0, 2.5 * r0
