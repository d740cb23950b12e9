"""AbdomenAtlas layout writer: ``<output_dir>/<case>/combined_labels.nii.gz`` + ``segmentations/<file_name>.nii.gz``.

Every file is written to a temporary name in the destination folder and moved into place with ``os.replace``, so a
reader never sees a half-written output. Masks are ``uint8`` NIfTI on the input's original grid and affine. Masks of
label-space classes that the current run did not segment are removed from ``segmentations/`` (a re-run with fewer
``--prompts`` leaves no stale mask).

``combined_labels`` paints organs, vessels and bones in increasing label index (a higher index wins where two
overlap), then lesions in increasing index: **a lesion always wins over its host organ** (a liver tumor voxel is 27,
not 6), matching the AbdomenAtlas convention where tumors are drawn inside organs.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Hashable, Mapping, Sequence

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from .io import safe_name
from .label_space import classes as ls_classes

__all__ = ["atomic_write", "save_nifti", "save_json", "combine_labels", "case_dir", "SaveAbdomenAtlasd"]


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` for a temporary file beside ``path`` (same suffixes), then ``os.replace`` it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}-", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_nifti(path: str | os.PathLike, array: np.ndarray, affine: np.ndarray) -> Path:
    """Write a ``uint8`` NIfTI atomically with ``affine`` as both sform and qform (code 1, scanner)."""
    img = nib.Nifti1Image(np.asarray(array, dtype=np.uint8), np.asarray(affine, dtype=np.float64))
    img.set_sform(img.affine, code=1)
    img.set_qform(img.affine, code=1)
    img.header.set_xyzt_units("mm")
    return atomic_write(path, lambda tmp: nib.save(img, tmp))


def save_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically."""

    def _write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")

    return atomic_write(path, _write)


def case_dir(output_dir: str | os.PathLike, case: str) -> Path:
    """``output_dir/<case>`` with ``case`` sanitised to one safe path component."""
    return Path(output_dir) / safe_name(case)


def combine_labels(masks: np.ndarray, classes: Sequence[int], lesion_classes: Sequence[int]) -> np.ndarray:
    """One ``uint8`` label map from per-class masks: organs by increasing index, then lesions on top."""
    lesions = set(lesion_classes)
    order = sorted(range(len(classes)), key=lambda c: (classes[c] in lesions, classes[c]))
    out = np.zeros(masks.shape[1:], np.uint8)
    for c in order:
        out[masks[c] > 0] = classes[c]
    return out


class SaveAbdomenAtlasd(MapTransform):
    """Write per-class masks and ``combined_labels`` of one case in the AbdomenAtlas layout.

    Args:
        keys: mask keys, ``uint8`` ``[K, X, Y, Z]`` on the original grid (``InvertToOriginalSpaced``).
        output_dir: root output folder.
        label_space: label-space dict or path (file names and kinds).
        case_key: key of the case id (sanitised before use as a folder name).
        classes_key: key of the 1-based class index of each channel.
        combined_key: output key receiving the combined label map (for the report and the picture).
    """

    def __init__(self, keys: KeysCollection, output_dir: str, label_space=None, case_key: str = "case",
                 classes_key: str = "pred_classes", combined_key: str = "combined_labels",
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.output_dir = output_dir
        recs = ls_classes(label_space)
        self.file_names = {int(c["index"]): safe_name(c["file_name"]) for c in recs}
        self.lesions = [int(c["index"]) for c in recs if c.get("kind") == "lesion"]
        self.case_key, self.classes_key, self.combined_key = case_key, classes_key, combined_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            t = d[key]
            masks = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
            affine = t.affine.numpy() if hasattr(t, "affine") else np.eye(4)
            classes = list(d[self.classes_key])
            out = case_dir(self.output_dir, str(d[self.case_key]))
            for c, idx in enumerate(classes):
                save_nifti(out / "segmentations" / f"{self.file_names[idx]}.nii.gz", masks[c], affine)
            self._remove_stale_masks(out / "segmentations", classes)
            combined = combine_labels(masks, classes, self.lesions)
            save_nifti(out / "combined_labels.nii.gz", combined, affine)
            d[self.combined_key] = combined
        return d

    def _remove_stale_masks(self, folder: Path, classes: Sequence[int]) -> None:
        """Delete masks of label-space classes not written by this run (e.g. a full run, then ``--prompts``), so
        ``segmentations/`` agrees with ``combined_labels`` and the report; other files in the folder are kept."""
        for idx, name in self.file_names.items():
            if idx not in classes:
                (folder / f"{name}.nii.gz").unlink(missing_ok=True)
