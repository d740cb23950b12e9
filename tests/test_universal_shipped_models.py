"""Both shipped weights files, through the real inference CLI with their own configs, segment a phantom they never
saw in training (seed 4242, the held-out seed): the organs of the issue's Dice targets come out where they are."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from universal_train_data import BUNDLE, REPO_ROOT

ORGANS = ("liver", "spleen", "kidney_left", "kidney_right", "stomach", "aorta")


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    out = tmp_path_factory.mktemp("held")
    subprocess.run([sys.executable, str(REPO_ROOT / "datasets" / "phantoms.py"), "--out", str(out), "--cases", "1",
                    "--seed", "4242", "--shape", "128,128,108", "--spacing", "3,3,3", "--quiet"], check=True)
    return out / "case_0000"


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


@pytest.mark.slow
@pytest.mark.parametrize("configs", [
    "configs/inference.json",
    "['configs/inference.json','configs/inference_whole_grid.json']",
])
def test_shipped_weights_segment_a_held_out_phantom(phantom, tmp_path, configs):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", configs,
                        "--dataset_dir", str(phantom / "ct.nii.gz"), "--output_dir", str(out),
                        "--prompts", str(list(ORGANS))], cwd=BUNDLE, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    for organ in ORGANS:
        pred = np.asarray(nib.load(out / "case_0000" / "segmentations" / f"{organ}.nii.gz").dataobj) > 0
        truth = np.asarray(nib.load(phantom / "segmentations" / f"{organ}.nii.gz").dataobj) > 0
        assert _dice(pred, truth) > 0.85, (configs, organ, _dice(pred, truth))
