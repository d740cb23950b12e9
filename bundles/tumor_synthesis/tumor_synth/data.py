"""Datalists for the bundle configs: absolute image/label paths of an AbdomenAtlas-style folder."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from .writer import find_cases


def load_datalist(
    dataset_dir: str, max_cases: int | None = None, first: int = 0, with_lesion: int | None = None
) -> list[dict[str, str]]:
    """``[{"case", "image", "label"}]`` with absolute paths, from ``datalist.json`` or ``*/ct.nii.gz``.

    Args:
        dataset_dir: dataset folder.
        max_cases: keep at most this many cases (after ``first``); None keeps all.
        first: skip this many cases (simple hold-out splits in configs).
        with_lesion: keep only cases whose label holds this label-space index (e.g. 27, liver tumor), checked in
            the phantom's ``<case>/meta.json`` when there is one, else in the label volume.
    """
    root = Path(dataset_dir)
    cases = find_cases(root)
    if with_lesion is not None:
        cases = [c for c in cases if _has_label(root, c, int(with_lesion))]
    cases = cases[first:]
    if max_cases is not None:
        cases = cases[: int(max_cases)]
    return [{"case": c["case"], "image": str(root / c["image"]), "label": str(root / c["label"])} for c in cases]


def _has_label(root: Path, case: dict[str, str], index: int) -> bool:
    meta = (root / case["label"]).parent / "meta.json"
    if meta.is_file():
        try:
            return index in json.loads(meta.read_text()).get("classes_present", [])
        except (json.JSONDecodeError, AttributeError) as err:
            raise ValueError(f"{meta}: not a phantom meta.json with a 'classes_present' list ({err})") from err
    return bool((np.asarray(nib.load(root / case["label"]).dataobj) == index).any())


def image_list(input_dir: str) -> list[dict[str, str]]:
    """``[{"image": path}]`` for inference: ``*/ct.nii.gz`` cases or ``*.nii.gz`` files of a folder."""
    root = Path(input_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: inference input folder does not exist")
    files = sorted(root.glob("*/ct.nii.gz")) or sorted(root.glob("*.nii.gz"))
    if not files:
        raise ValueError(f"{root}: no CT found (expected <case>/ct.nii.gz or *.nii.gz)")
    return [{"image": str(f)} for f in files]
