"""Datalists for the bundle configs: absolute image/label paths of an AbdomenAtlas-style folder."""

from __future__ import annotations

from pathlib import Path

from .writer import find_cases


def load_datalist(dataset_dir: str, max_cases: int | None = None, first: int = 0) -> list[dict[str, str]]:
    """``[{"case", "image", "label"}]`` with absolute paths, from ``datalist.json`` or ``*/ct.nii.gz``.

    Args:
        dataset_dir: dataset folder.
        max_cases: keep at most this many cases (after ``first``); None keeps all.
        first: skip this many cases (simple hold-out splits in configs).
    """
    root = Path(dataset_dir)
    cases = find_cases(root)[first:]
    if max_cases is not None:
        cases = cases[: int(max_cases)]
    return [{"case": c["case"], "image": str(root / c["image"]), "label": str(root / c["label"])} for c in cases]


def image_list(input_dir: str) -> list[dict[str, str]]:
    """``[{"image": path}]`` for inference: ``*/ct.nii.gz`` cases or ``*.nii.gz`` files of a folder."""
    root = Path(input_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: inference input folder does not exist")
    files = sorted(root.glob("*/ct.nii.gz")) or sorted(root.glob("*.nii.gz"))
    if not files:
        raise ValueError(f"{root}: no CT found (expected <case>/ct.nii.gz or *.nii.gz)")
    return [{"image": str(f)} for f in files]
