"""Read the bundle's label space (``configs/label_space.json``), the single source of class facts.

Class ``index`` is 1-based (0 is background); output channel ``c`` of the network is class ``c + 1``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .jsonfile import read_json

__all__ = [
    "DEFAULT_LABEL_SPACE",
    "load_label_space",
    "classes",
    "class_names",
    "file_names",
    "prompts",
    "channel_def",
    "lesion_hosts",
]

#: ``configs/label_space.json`` beside this package (the bundle's own copy of datasets/label_space.json).
DEFAULT_LABEL_SPACE = Path(__file__).resolve().parent.parent / "configs" / "label_space.json"


def load_label_space(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Parse a label-space JSON file and check its basic shape.

    Args:
        path: the JSON file; ``None`` means the bundle's ``configs/label_space.json``.

    Returns:
        the parsed dict (keys ``classes``, ``background``, ...); ``classes`` sorted by ``index``.

    Raises:
        FileNotFoundError / ValueError naming the file and the problem.
    """
    path = Path(path) if path is not None else DEFAULT_LABEL_SPACE
    data = read_json(path, "label space file")
    cls = data.get("classes") if isinstance(data, dict) else None
    if not isinstance(cls, list) or not cls:
        raise ValueError(f"{path}: expected a dict with a non-empty 'classes' list")
    cls = sorted(cls, key=lambda c: int(c["index"]))
    expected = list(range(1, len(cls) + 1))
    if [int(c["index"]) for c in cls] != expected:
        raise ValueError(f"{path}: class indices must be 1..{len(cls)} without gaps")
    data["classes"] = cls
    return data


def _space(label_space: dict | str | os.PathLike | None) -> dict[str, Any]:
    return label_space if isinstance(label_space, dict) else load_label_space(label_space)


def classes(label_space: dict | str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """The class records, ordered by channel (index 1 first)."""
    return list(_space(label_space)["classes"])


def class_names(label_space: dict | str | os.PathLike | None = None) -> list[str]:
    """Human-readable names in channel order, e.g. ``["Spleen", "Right Kidney", ...]``."""
    return [c["name"] for c in classes(label_space)]


def file_names(label_space: dict | str | os.PathLike | None = None) -> list[str]:
    """AbdomenAtlas mask names in channel order, e.g. ``["spleen", "kidney_right", ...]``."""
    return [c["file_name"] for c in classes(label_space)]


def prompts(label_space: dict | str | os.PathLike | None = None) -> list[str]:
    """Text prompts in channel order (the rows of the prompt-embedding matrix)."""
    return [c["prompt"] for c in classes(label_space)]


def channel_def(label_space: dict | str | os.PathLike | None = None) -> dict[str, str]:
    """``{"0": "Spleen", ...}``: output channel -> class name (metadata.json ``channel_def``)."""
    return {str(i): n for i, n in enumerate(class_names(label_space))}


def lesion_hosts(label_space: dict | str | os.PathLike | None = None) -> dict[int, list[int]]:
    """``{lesion label index: [host organ label indices]}`` (1-based), e.g. ``{27: [6], ...}``."""
    return {int(c["index"]): [int(h) for h in c["host_organs"]] for c in classes(label_space) if c.get("host_organs")}
