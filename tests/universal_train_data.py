"""Tiny synthetic CT cases for the universal bundle's training tests (boxes of organs, lesions drawn over them)."""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np

# (label index, lo, hi) in voxels of a 40^3 grid; lesions come after their host organ (drawn over it)
BOXES = [
    (6, (4, 4, 4), (20, 24, 30)),  # liver
    (27, (8, 8, 10), (12, 12, 14)),  # liver tumour
    (1, (24, 4, 6), (34, 14, 20)),  # spleen
    (2, (4, 28, 8), (12, 36, 18)),  # right kidney
    (3, (26, 28, 8), (34, 36, 18)),  # left kidney
    (26, (27, 30, 10), (30, 33, 13)),  # kidney tumour (in the left kidney)
    (11, (14, 16, 20), (26, 22, 26)),  # pancreas
    (8, (18, 26, 2), (21, 29, 38)),  # aorta
]
REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLE = REPO_ROOT / "bundles" / "universal_abdomen_ct_segmentation"
if str(BUNDLE) not in sys.path:
    sys.path.insert(0, str(BUNDLE))

#: CLI overrides of configs/train.json for a one-iteration CPU run.
TINY_TRAIN_ARGS = [
    "--roi_size", "[32,32,32]", "--pixdim", "[3.0,3.0,3.0]", "--max_epochs", "1", "--val_interval", "1",
    "--feature_size", "4", "--num_samples", "1", "--network_def#backbone_kwargs", "{'depth': 2}",
]

HU = {6: 60, 27: 20, 1: 50, 2: 150, 3: 150, 26: 40, 11: 40, 8: 200}


def write_case(folder: Path, seed: int, shape=(40, 40, 40), spacing=(3.0, 3.0, 3.0)) -> Path:
    """Write ``folder/{ct.nii.gz, combined_labels.nii.gz}`` and return ``folder``."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.uint8)
    shift = rng.integers(-2, 3, size=3)
    for idx, lo, hi in BOXES:
        sl = tuple(slice(max(0, lo[i] + shift[i]), min(shape[i], hi[i] + shift[i])) for i in range(3))
        lab[sl] = idx
    ct = np.full(shape, -1000.0, np.float32)
    ct[2:-2, 2:-2, :] = 0.0  # body
    for idx, hu in HU.items():
        ct[lab == idx] = hu
    ct += rng.normal(0, 10, size=shape).astype(np.float32)
    affine = np.diag([*spacing, 1.0])
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(ct.astype(np.int16), affine), folder / "ct.nii.gz")
    nib.save(nib.Nifti1Image(lab, affine), folder / "combined_labels.nii.gz")
    return folder


def write_phantoms(root: Path, cases: int = 4, seed: int = 0) -> Path:
    """``cases`` tiny cases under ``root/case_XXX``."""
    for i in range(cases):
        write_case(root / f"case_{i:03d}", seed + i)
    return root
