"""Helpers shared by the universal_abdomen_ct_segmentation inference / post-processing / evaluation tests.

Tiny inputs only: a random-weight light U-Net (feature_size 4, depth 2, 32^3 ROI) saved to a tmp model file, small
NIfTI volumes written with nibabel and a DICOM series written with pydicom.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLE = REPO_ROOT / "bundles" / "universal_abdomen_ct_segmentation"
if str(BUNDLE) not in sys.path:
    sys.path.insert(0, str(BUNDLE))

#: CLI overrides making the real network tiny (random weights, 32^3 windows).
TINY_NET_ARGS = [
    "--roi_size", "[32,32,32]",
    "--encoding", "learned",
    "--feature_size", "4",
    "--network_def#backbone_kwargs", "{'depth': 2}",
]


def make_tiny_model(path: Path, seed: int = 0) -> Path:
    """Save the state dict of the tiny network (matching ``TINY_NET_ARGS``) to ``path``."""
    import torch

    from universal_model.network import UniversalModel

    torch.manual_seed(seed)
    net = UniversalModel(backbone="unet", img_size=(32, 32, 32), encoding="learned", feature_size=4,
                         backbone_kwargs={"depth": 2})
    torch.save(net.state_dict(), path)
    return path


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def lps_affine(spacing=(1.2, 0.9, 3.0), origin=(20.0, 30.0, -40.0)) -> np.ndarray:
    """An affine whose voxel axes run to patient Left, Posterior, Superior (NIfTI world is RAS)."""
    aff = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    aff[:3, 3] = origin
    return aff


def write_dicom_series(folder: Path, vol: np.ndarray, spacing=(0.8, 0.7, 2.5), origin=(-100.0, -120.0, 50.0)) -> Path:
    """One CT slice file per ``vol[:, :, k]`` (``vol`` is ``[rows, cols, slices]`` in HU, int16)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for k in range(vol.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta, ds.is_little_endian, ds.is_implicit_VR = meta, True, False
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID = "CT", "PHANTOM"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * spacing[2]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [spacing[1], spacing[0]]
        ds.SliceThickness = spacing[2]
        ds.Rows, ds.Columns = vol.shape[0], vol.shape[1]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = (vol[:, :, k].astype(np.int16) + 1024).astype(np.int16).tobytes()
        ds.save_as(str(folder / f"slice{k:03d}.dcm"), write_like_original=False)
    return folder


def run_bundle(config: str | list[str], *args, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run --config_file configs/<config> ...`` from the bundle folder (a list of configs is
    merged in order, as ``--config_file "['configs/a.json','configs/b.json']"``)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    files = [f"configs/{c}" for c in ([config] if isinstance(config, str) else config)]
    config_arg = files[0] if len(files) == 1 else str(files)
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_arg, *map(str, args)]
    return subprocess.run(cmd, cwd=BUNDLE, env=env, capture_output=True, text=True, timeout=timeout)
