"""Deterministic, atomic writing of a case in the AbdomenAtlas layout.

Files are gzip-compressed slice by slice (:mod:`phantom_ct.gzip_blocks`) with ``mtime=0`` and no
file name in the gzip header, so the same case gives byte-identical files. A case is written into
a hidden temporary folder (``.<case>.partial-<pid>``) and renamed into place only when complete.
"""
from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np

from .gzip_blocks import gzip_volume
from .label_space import classes_by_index



def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def json_bytes(obj) -> bytes:
    """Stable JSON encoding (sorted keys, two-space indent, trailing newline)."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")


def nifti_header_bytes(shape, dtype, affine: np.ndarray) -> bytes:
    """The 352-byte single-file NIfTI-1 header (qform = sform = ``affine``, mm units, no scaling)."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_xyzt_units("mm", "sec")
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header["vox_offset"] = 352
    header["scl_slope"], header["scl_inter"] = 1.0, 0.0
    return header.binaryblock + b"\0\0\0\0"


def nifti_gz_bytes(array: np.ndarray, affine: np.ndarray, pool: ThreadPoolExecutor | None = None,
                   transposed: np.ndarray | None = None) -> bytes:
    """A .nii.gz file as bytes (data in NIfTI/Fortran order; deterministic gzip, see gzip_blocks).

    ``transposed`` may pass ``array.T`` already made C-contiguous, to skip that copy.
    """
    data_zyx = np.ascontiguousarray(array.T) if transposed is None else transposed
    return gzip_volume(nifti_header_bytes(array.shape, array.dtype, affine), data_zyx, pool)


def _mask_jobs(case) -> tuple[np.ndarray, list[tuple[str, np.ndarray, int]]]:
    """Transposed labels, and (file name, transposed source labels, class index) per class present."""
    labels_t = np.ascontiguousarray(case.labels.T)
    no_lesions = case.organ_labels is None or not case.meta.get("lesions")
    organ_t = labels_t if no_lesions else np.ascontiguousarray(case.organ_labels.T)
    jobs = []
    for index, entry in classes_by_index().items():
        lesion = entry["kind"] == "lesion"
        present = case.meta["classes_present"]
        if not lesion:
            present = case.meta.get("organs_present", present)
        if index in present:
            jobs.append((entry["file_name"], labels_t if lesion else organ_t, index))
    return labels_t, jobs


def _write_case_files(case, folder: Path, dicom: bool, preview: bool, title: str) -> None:
    """Every file of a case into ``folder`` (meta.json last)."""
    (folder / "segmentations").mkdir(parents=True)
    header = nifti_header_bytes(case.labels.shape, np.uint8, case.affine)
    labels_t, jobs = _mask_jobs(case)
    with ThreadPoolExecutor(max_workers=2) as pool:
        (folder / "ct.nii.gz").write_bytes(nifti_gz_bytes(case.ct, case.affine, pool))
        (folder / "combined_labels.nii.gz").write_bytes(
            nifti_gz_bytes(case.labels, case.affine, pool, transposed=labels_t))
        for name, source_t, index in jobs:
            mask_t = (source_t == index).view(np.uint8)
            (folder / "segmentations" / f"{name}.nii.gz").write_bytes(gzip_volume(header, mask_t, pool))
    if dicom:
        from .dicom import write_dicom_series
        write_dicom_series(folder / "dicom", case.ct, case.affine, case.meta)
    if preview:
        from .preview import render_preview
        (folder / "preview.png").write_bytes(render_preview(case.ct, case.labels, case.affine, title))
    (folder / "meta.json").write_bytes(json_bytes(case.meta))


def write_case(case, out_dir, case_id: str, dicom: bool = False, preview: bool = False) -> Path:
    """Write one case to ``out_dir/case_id`` atomically; returns the case folder.

    Layout: ``ct.nii.gz`` (int16 HU), ``combined_labels.nii.gz`` (uint8), ``segmentations/<file_name>.nii.gz``
    (one binary mask per class present; an organ's mask includes its lesions), ``meta.json``,
    optionally ``dicom/`` (CT series) and ``preview.png``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / case_id
    partial = out_dir / f".{case_id}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        _write_case_files(case, partial, dicom, preview, f"{case_id}  {case.meta['sex']}  {case.meta['phase']}")
        if final.exists():
            old = out_dir / f".{case_id}.old-{os.getpid()}"
            os.replace(final, old)
            shutil.rmtree(old)
        os.replace(partial, final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return final
