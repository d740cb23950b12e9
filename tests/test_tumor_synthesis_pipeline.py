"""SynthesizeTumord inside a normal MONAI training pipeline and a multi-worker DataLoader."""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    LoadImaged,
    RandCropByPosNegLabeld,
    ScaleIntensityRanged,
    Spacingd,
)
from monai.utils import set_determinism

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "tumor_synthesis"
sys.path.insert(0, str(BUNDLE))

from tumor_synth import SynthesizeTumord, lesion_records  # noqa: E402
from tumor_synth.testing import make_abdomen  # noqa: E402


@pytest.fixture(scope="module")
def nifti_cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("cases")
    items = []
    for i, spacing in enumerate([(0.9, 0.9, 2.0), (1.3, 1.3, 1.5)]):
        img, lab = make_abdomen((56, 56, 30), spacing, seed=i)
        affine = np.diag([*spacing, 1.0])
        d = root / f"case_{i}"
        d.mkdir()
        nib.save(nib.Nifti1Image(np.rint(img[0]).astype(np.int16), affine), d / "ct.nii.gz")
        nib.save(nib.Nifti1Image(lab[0], affine), d / "combined_labels.nii.gz")
        items.append({"image": str(d / "ct.nii.gz"), "label": str(d / "combined_labels.nii.gz")})
    return items


def pipeline() -> Compose:
    return Compose(
        [
            LoadImaged(keys=["image", "label"]),
            EnsureChannelFirstd(keys=["image", "label"]),
            Spacingd(keys=["image", "label"], pixdim=(1.5, 1.5, 1.5), mode=("bilinear", "nearest")),
            SynthesizeTumord(keys="image", label_key="label", organ="liver", prob=1.0),
            ScaleIntensityRanged(keys="image", a_min=-100, a_max=250, b_min=0.0, b_max=1.0, clip=True),
            RandCropByPosNegLabeld(
                keys=["image", "label"], label_key="label", spatial_size=(24, 24, 16), pos=1, neg=1, num_samples=2
            ),
        ]
    )


def run_loader(items, workers: int) -> list[dict]:
    set_determinism(seed=0)
    loader = DataLoader(Dataset(items, transform=pipeline()), batch_size=2, num_workers=workers)
    batches = list(loader)
    set_determinism(seed=None)
    return batches


def test_compose_with_metatensor_pipeline(nifti_cases):
    t = pipeline().set_random_state(7)
    out = t(nifti_cases[0])
    assert len(out) == 2
    for crop in out:
        assert crop["image"].shape == (1, 24, 24, 16)
        assert lesion_records(crop["image"]), "lesion records travel with the crop's metadata"
        assert np.allclose(crop["image"].pixdim.numpy(), 1.5)
    out2 = pipeline().set_random_state(7)(nifti_cases[0])
    assert all(torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"]) for a, b in zip(out, out2))


def test_dataloader_with_workers_is_reproducible(nifti_cases):
    first = run_loader(nifti_cases, workers=2)
    second = run_loader(nifti_cases, workers=2)
    assert len(first) == len(second) == 1  # 2 cases x 2 crops, flattened into one batch of 4
    for a, b in zip(first, second):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
        assert a["image"].shape[0] == 4
        assert len(a["synthetic_tumors"]) == 4 and lesion_records(a["synthetic_tumors"])
    labels = torch.cat([b["label"] for b in first])
    assert (labels == 27).any(), "synthetic liver tumors reach the batches"
