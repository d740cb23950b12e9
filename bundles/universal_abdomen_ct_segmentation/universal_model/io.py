"""Input side of inference: find cases, read a CT (NIfTI file or DICOM series folder), load weights.

Every error names the file and the problem (STYLE.md), e.g. ``ValueError("x.nii.gz: expected a 3D CT volume,
got shape (4, 4)")``.
"""

from __future__ import annotations

import copy
import os
import re
import time
from pathlib import Path
from typing import Any, Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import LoadImage, MapTransform

__all__ = ["find_cases", "case_name", "safe_name", "LoadCTd", "load_weights", "NIFTI_SUFFIXES"]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str) -> str:
    """A file-system-safe single path component made from ``name`` (no separators, no ``..``, not empty)."""
    out = _SAFE.sub("_", str(name)).strip("._")
    return out or "case"


def _strip_nifti(name: str) -> str:
    for suf in NIFTI_SUFFIXES:
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return name


def _is_dicom_file(path: Path) -> bool:
    """DICOM Part-10 preamble (``DICM`` at byte 128) or a ``.dcm`` suffix."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _is_dicom_dir(path: Path) -> bool:
    """True when ``path`` is a folder whose first few files are DICOM (a DICOM series folder)."""
    if not path.is_dir():
        return False
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    return bool(files) and any(_is_dicom_file(p) for p in files[:5])


def case_name(path: str | os.PathLike) -> str:
    """Case id of an input: ``D/x.nii.gz`` -> ``x``; ``D/<case>/ct.nii.gz`` and ``D/<case>/dicom/`` -> ``<case>``."""
    p = Path(path)
    stem = _strip_nifti(p.name)
    if stem.lower() in ("ct", "image", "dicom", "imaging") and p.parent.name:
        stem = p.parent.name
    return safe_name(stem)


def find_cases(dataset_dir: str | os.PathLike) -> list[dict[str, str]]:
    """List the CTs under ``dataset_dir`` as ``[{"image": path, "case": id}]`` sorted by case id.

    Accepted layouts: NIfTI files directly in ``dataset_dir``; ``<case>/ct.nii.gz`` (AbdomenAtlas / phantom layout,
    a ``<case>/dicom`` folder is then ignored); DICOM series folders ``<case>/`` or ``<case>/dicom/``. A single NIfTI
    file or a single DICOM folder may also be given as ``dataset_dir``.

    Raises:
        FileNotFoundError naming ``dataset_dir`` when it does not exist or holds no CT.
    """
    root = Path(dataset_dir)
    if not root.exists():
        raise FileNotFoundError(f"{root}: dataset_dir does not exist")
    if root.is_file() or _is_dicom_dir(root):
        return [{"image": str(root), "case": case_name(root)}]
    found: list[Path] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.name.lower().endswith(NIFTI_SUFFIXES):
            found.append(entry)
        elif entry.is_dir():
            ct = [entry / n for n in ("ct.nii.gz", "ct.nii") if (entry / n).is_file()]
            if ct:
                found.append(ct[0])
            elif _is_dicom_dir(entry / "dicom"):
                found.append(entry / "dicom")
            elif _is_dicom_dir(entry):
                found.append(entry)
    if not found:
        raise FileNotFoundError(f"{root}: no NIfTI file (*.nii.gz, *.nii) or DICOM series folder found")
    cases = [{"image": str(p), "case": case_name(p)} for p in found]
    names = [c["case"] for c in cases]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{root}: several inputs map to the same case id(s) {dup}")
    return cases


class LoadCTd(MapTransform):
    """Read a CT volume (NIfTI file or DICOM series folder) into a channel-first ``MetaTensor`` in Hounsfield units.

    The meta data keeps ``original_affine`` (RAS world, mm) and ``spatial_shape`` of the file; the inverse step
    (``InvertToOriginalSpaced``) writes outputs back onto that grid. Unlike ``LoadImaged``, every failure is raised
    as one ``ValueError`` / ``FileNotFoundError`` naming the file.

    Args:
        keys: keys holding the input path.
        dtype: array dtype (float32; HU fit exactly).
        copy_to: optional key receiving the loaded (original-space) volume for the report's mean HU. It shares the
            voxel storage (no copy) but has its own meta data, so spatial transforms on ``keys`` leave it unchanged
            (MONAI transforms return new tensors rather than writing in place).
    """

    def __init__(self, keys: KeysCollection, dtype=np.float32, copy_to: str | None = None, allow_missing_keys=False):
        super().__init__(keys, allow_missing_keys)
        self.dtype = dtype
        self.copy_to = copy_to
        self._nifti = LoadImage(reader="NibabelReader", image_only=True, ensure_channel_first=True, dtype=dtype)
        self._dicom = LoadImage(reader="ITKReader", image_only=True, ensure_channel_first=True, dtype=dtype)

    def load(self, path: str | os.PathLike) -> MetaTensor:
        """Read one input; raises naming ``path`` when it is missing, unreadable or not a 3D volume."""
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"{p}: input CT not found")
        if p.is_dir():
            if not _is_dicom_dir(p):
                raise ValueError(f"{p}: folder holds no DICOM files")
            loader, kind = self._dicom, "DICOM series"
        elif p.name.lower().endswith(NIFTI_SUFFIXES):
            loader, kind = self._nifti, "NIfTI"
        else:
            raise ValueError(f"{p}: not a NIfTI file (.nii/.nii.gz) nor a DICOM series folder")
        try:
            img = loader(str(p))
        except Exception as e:  # readers raise many types; one message naming the file
            raise ValueError(f"{p}: cannot read {kind} ({type(e).__name__}: {e})") from e
        shape = tuple(img.shape[1:])
        if img.ndim != 4 or img.shape[0] != 1 or min(shape) < 2:
            raise ValueError(f"{p}: expected a 3D CT volume, got array shape {tuple(img.shape)} (channel first)")
        if not torch.isfinite(img.as_tensor()).all():
            raise ValueError(f"{p}: volume contains NaN or infinite values")
        img.meta["filename_or_obj"] = str(p)
        return img

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        d.setdefault("start_time", time.time())  # the report states the seconds spent per case
        for key in self.key_iterator(d):
            d[key] = self.load(d[key])
            if self.copy_to:
                d[self.copy_to] = MetaTensor(d[key].as_tensor(), meta=copy.deepcopy(d[key].meta))
        return d


def load_weights(network: torch.nn.Module, path: str | os.PathLike, strict: bool = True) -> torch.nn.Module:
    """Load a state dict (``torch.load(..., weights_only=True)``) into ``network`` and set it to eval mode.

    Accepts a plain state dict or a dict with a ``"model"`` / ``"state_dict"`` / ``"network"`` entry.

    Raises:
        FileNotFoundError / ValueError naming ``path``.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: model weights not found (train the bundle or download models/model.pt)")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{p}: cannot read weights ({type(e).__name__}: {e})") from e
    if isinstance(state, dict):
        for k in ("model", "state_dict", "network"):
            if k in state and isinstance(state[k], dict):
                state = state[k]
                break
    if not isinstance(state, dict):
        raise ValueError(f"{p}: expected a state dict, got {type(state).__name__}")
    try:
        network.load_state_dict(state, strict=strict)
    except RuntimeError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0] if lines else type(e).__name__
        raise ValueError(f"{p}: weights do not fit the network ({detail})") from e
    return network.eval()
