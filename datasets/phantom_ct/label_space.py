"""Access to the AtlasForge label space (``datasets/label_space.json``).

The JSON file is the single source of truth for class indices, names and mask file names;
this module only parses it and offers look-ups by name.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

LABEL_SPACE_PATH = Path(__file__).resolve().parent.parent / "label_space.json"


@functools.lru_cache(maxsize=4)
def _load(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read the label space: {error}") from error
    if "classes" not in data:
        raise ValueError(f"{path}: no 'classes' list in the label space")
    return data


def load_label_space(path: str | Path | None = None) -> dict[str, Any]:
    """Return the parsed label space (a fresh copy; callers may modify it).

    Args:
        path: the JSON file; defaults to ``datasets/label_space.json`` next to this package.
    """
    return json.loads(json.dumps(_load(str(path or LABEL_SPACE_PATH))))


def class_index(file_name: str) -> int:
    """Label index of the class whose ``file_name`` (e.g. ``"liver"``) is given."""
    for entry in _load(str(LABEL_SPACE_PATH))["classes"]:
        if entry["file_name"] == file_name:
            return int(entry["index"])
    raise KeyError(f"{LABEL_SPACE_PATH}: no class with file_name {file_name!r}")


def classes_by_index() -> dict[int, dict[str, Any]]:
    """Map label index -> class entry (name, file_name, kind, host_organs ...)."""
    return {int(c["index"]): dict(c) for c in _load(str(LABEL_SPACE_PATH))["classes"]}


def organ_indices() -> list[int]:
    """Indices of every non-lesion class (organs, vessels, bones)."""
    return [i for i, c in classes_by_index().items() if c["kind"] != "lesion"]


def lesion_indices() -> list[int]:
    """Indices of the lesion classes."""
    return [i for i, c in classes_by_index().items() if c["kind"] == "lesion"]
