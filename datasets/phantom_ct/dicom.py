"""DICOM CT series writer (CT Image Storage, Explicit VR Little Endian), deterministic UIDs.

Slice k of the series is the array plane ``ct[:, :, k]``: DICOM columns follow array axis 0 and rows
array axis 1, so ``ImageOrientationPatient`` is read straight off the (LPS-converted) affine.
Stored values are ``HU + 1024`` (uint16) with RescaleIntercept -1024, RescaleSlope 1.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def deterministic_uid(seed: int, *parts) -> str:
    """A valid UID ``2.25.<128-bit integer>`` derived only from the seed and ``parts`` (SHA-256)."""
    text = "/".join(["atlasforge-phantom", str(int(seed))] + [str(p) for p in parts])
    value = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:16], "big")
    return f"2.25.{value}"


def _series_dataset(meta: dict, shape, spacing) -> Dataset:
    seed = meta["seed"]
    ds = Dataset()
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.Modality = "CT"
    ds.PatientName = f"Phantom^{seed}"
    ds.PatientID = f"PHANTOM-{seed}"
    ds.PatientSex = "M" if meta["sex"] == "male" else "F"
    ds.PatientBirthDate = ""
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.Manufacturer = "AtlasForge phantom_ct"
    ds.StudyDescription = "Synthetic abdominal CT phantom"
    ds.SeriesDescription = f"Abdomen {meta['phase']}"
    ds.StudyInstanceUID = deterministic_uid(seed, "study")
    ds.SeriesInstanceUID = deterministic_uid(seed, "series")
    ds.FrameOfReferenceUID = deterministic_uid(seed, "frame-of-reference")
    ds.PositionReferenceIndicator = ""
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.KVP = "120"
    ds.ContrastBolusAgent = "" if meta["phase"] == "non_contrast" else "IODINATED"
    ds.PatientPosition = "FFS"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(shape[1]), int(shape[0])
    ds.PixelSpacing = [f"{spacing[1]:.6g}", f"{spacing[0]:.6g}"]     # row spacing, column spacing
    ds.SliceThickness = f"{spacing[2]:.6g}"
    ds.SpacingBetweenSlices = f"{spacing[2]:.6g}"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    return ds


def write_dicom_series(folder: Path, ct: np.ndarray, affine: np.ndarray, meta: dict) -> None:
    """Write ``ct`` (int16 HU, NIfTI RAS+ affine) as one DICOM file per slice into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True)
    lps = RAS_TO_LPS @ affine
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    row_dir, col_dir = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    base = _series_dataset(meta, ct.shape, spacing)
    base.ImageOrientationPatient = [f"{v:.6f}" for v in np.concatenate([row_dir, col_dir])]
    stored = (np.clip(ct, -1024, 64511).astype(np.int32) + 1024).astype(np.uint16)
    for k in range(ct.shape[2]):
        position = lps @ np.array([0.0, 0.0, k, 1.0])
        sop_uid = deterministic_uid(meta["seed"], "sop", k)
        file_meta = FileMetaDataset()
        file_meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        file_meta.MediaStorageSOPInstanceUID = sop_uid
        file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = FileDataset(str(folder / f"slice_{k:04d}.dcm"), Dataset(), file_meta=file_meta, preamble=b"\0" * 128)
        ds.update(base)
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position[:3]]
        ds.SliceLocation = f"{position[2]:.4f}"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        ds.is_little_endian, ds.is_implicit_VR = True, False
        pydicom.dcmwrite(folder / f"slice_{k:04d}.dcm", ds, write_like_original=False)
