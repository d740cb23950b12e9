"""Writes a synthetic-tumor dataset (AbdomenAtlas layout) from a folder of healthy CTs with organ labels.

Output per case: ``<case>/ct.nii.gz`` (int16 HU), ``<case>/combined_labels.nii.gz`` (uint8 label-space indices),
``<case>/segmentations/<name>.nii.gz`` (the input case's masks copied, tumor masks written), ``<case>/meta.json``
(the input meta plus ``synthetic_tumors`` records); ``datalist.json`` at the root. Each case is built in a
temporary folder and renamed into place, and every file is written under a temporary name first.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import nibabel as nib
import numpy as np
import torch
from tqdm import tqdm

from .array import lesion_records
from .presets import get_preset


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` via a temporary file and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_json(path: Path, obj) -> None:
    """Writes ``obj`` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def save_figure(fig, path: Path, dpi: int = 100) -> None:
    """Renders a matplotlib figure to PNG in memory and writes it atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png")
    atomic_write_bytes(path, buffer.getvalue())


def save_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    """Saves a 3D array as NIfTI atomically (temporary name with the same suffix, then rename)."""
    tmp = path.with_name(f".tmp{os.getpid()}.{path.name}")
    nib.save(nib.Nifti1Image(array, affine), str(tmp))
    os.replace(tmp, path)


def find_cases(input_dir: Path) -> list[dict[str, str]]:
    """Cases of an AbdomenAtlas-style folder: from ``datalist.json`` (all splits) or ``*/ct.nii.gz``."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"{input_dir}: input folder of healthy CTs does not exist")
    datalist = input_dir / "datalist.json"
    if datalist.is_file():
        try:
            splits = json.loads(datalist.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{datalist}: not valid JSON ({err})") from err
        items = [it for v in splits.values() if isinstance(v, list) for it in v]
        cases = [
            {"case": it.get("case", Path(it["image"]).parent.name), "image": it["image"], "label": it["label"]}
            for it in items
        ]
    else:
        cases = [
            {"case": n, "image": f"{n}/ct.nii.gz", "label": f"{n}/combined_labels.nii.gz"}
            for n in sorted(p.parent.name for p in input_dir.glob("*/ct.nii.gz"))
        ]
    if not cases:
        raise ValueError(f"{input_dir}: no cases found (expected datalist.json or <case>/ct.nii.gz)")
    for c in cases:
        for key in ("image", "label"):
            if not (input_dir / c[key]).is_file():
                raise FileNotFoundError(f"{input_dir / c[key]}: {key} file of case {c['case']} is missing")
    return cases


class SyntheticTumorDatasetWriter:
    """Runs a synthesis transform over healthy cases and writes the synthetic-tumor dataset.

    Args:
        input_dir: folder of healthy cases (AbdomenAtlas layout).
        output_dir: folder to write (created; existing cases of the same name are replaced).
        transform: callable on ``{"image": path, "label": path}`` returning MetaTensor ``image``/``label``
            with ``meta["synthetic_tumors"]`` (e.g. LoadImaged -> EnsureChannelFirstd -> SynthesizeTumord ...).
        organs: preset names whose tumor masks are written to ``segmentations/``.
        copies_per_case: synthetic versions written per healthy case (``<case>_syn<k>``).
        seed: base seed; case ``i`` copy ``k`` uses ``seed + 1000 * i + k`` so results do not depend on order.
        progress: show a tqdm progress bar.
    """

    def __init__(
        self,
        input_dir: str,
        output_dir: str,
        transform: Callable[[dict], dict],
        organs: list[str] = ("liver",),
        copies_per_case: int = 1,
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        self.input_dir, self.output_dir = Path(input_dir), Path(output_dir)
        self.transform = transform
        self.presets = [get_preset(o) for o in organs]
        self.copies = int(copies_per_case)
        self.seed = int(seed)
        self.progress = progress

    def run(self) -> list[dict[str, Any]]:
        """Writes every case and ``datalist.json``; returns the datalist entries."""
        cases = find_cases(self.input_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        jobs = [(i, c, k) for i, c in enumerate(cases) for k in range(self.copies)]
        entries = []
        for i, case, k in tqdm(jobs, desc="synthetic tumors", unit="case", disable=not self.progress):
            name = case["case"] if self.copies == 1 else f"{case['case']}_syn{k}"
            entries.append(self.write_case(case, name, self.seed + 1000 * i + k))
        body = json.dumps({"training": entries, "validation": [], "test": []}, indent=2) + "\n"
        atomic_write_bytes(self.output_dir / "datalist.json", body.encode())
        return entries

    def write_case(self, case: dict[str, str], name: str, seed: int) -> dict[str, Any]:
        """Synthesizes and writes one case folder atomically (temporary folder renamed into place)."""
        if hasattr(self.transform, "set_random_state"):
            self.transform.set_random_state(seed)
        src = self.input_dir / Path(case["image"]).parent
        try:
            data = self.transform({k: str(self.input_dir / case[k]) for k in ("image", "label")})
        except Exception as err:
            raise RuntimeError(f"{self.input_dir / case['image']}: tumor synthesis failed ({err})") from err
        image, label = data["image"], data["label"]
        affine = np.asarray(image.affine, dtype=float)
        ct = np.clip(np.rint(_np(image)[0]), -32768, 32767).astype(np.int16)
        lab = _np(label)[0].astype(np.uint8)
        records = lesion_records(image)
        tmp = self.output_dir / f".{name}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "segmentations").mkdir(parents=True)
        save_nifti(tmp / "ct.nii.gz", ct, affine)
        save_nifti(tmp / "combined_labels.nii.gz", lab, affine)
        if (src / "segmentations").is_dir():
            for f in sorted((src / "segmentations").glob("*.nii.gz")):
                shutil.copyfile(f, tmp / "segmentations" / f.name)
        for preset in self.presets:
            mask = lab == preset["tumor_label"]
            if mask.any():
                save_nifti(tmp / "segmentations" / f"{preset['tumor_file_name']}.nii.gz", mask.astype(np.uint8), affine)
        meta = json.loads((src / "meta.json").read_text()) if (src / "meta.json").is_file() else {}
        meta.update({"source_case": case["case"], "synthesis_seed": seed, "synthetic_tumors": records})
        atomic_write_bytes(tmp / "meta.json", (json.dumps(meta, indent=2) + "\n").encode())
        final = self.output_dir / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        return {"case": name, "image": f"{name}/ct.nii.gz", "label": f"{name}/combined_labels.nii.gz",
                "n_synthetic_tumors": len(records)}


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
