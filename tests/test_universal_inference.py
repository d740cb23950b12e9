"""End-to-end inference of universal_abdomen_ct_segmentation through the real CLI (tiny random-weight network).

``python -m monai.bundle run --config_file configs/inference.json --dataset_dir D --output_dir O`` on an LPS,
anisotropic NIfTI and on a DICOM series folder; prompt subsets; corrupt and non-3D inputs.
"""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from universal_helpers import (
    REPO_ROOT,
    TINY_NET_ARGS,
    lps_affine,
    make_tiny_model,
    run_bundle,
    write_dicom_series,
    write_nifti,
)

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("model") / "model.pt")


def _infer(dataset, out, model, *extra):
    res = run_bundle("inference.json", "--dataset_dir", dataset, "--output_dir", out, "--ckpt_path", model,
                     *TINY_NET_ARGS, *extra)
    return res


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, model_file):
    """All classes on an LPS anisotropic NIfTI (``D/lps_case.nii.gz``), a DICOM series (``D/dicom_case/``) and a
    phantom in the AbdomenAtlas layout (``D/case_0000/ct.nii.gz`` + ``D/datalist.json``)."""
    root = tmp_path_factory.mktemp("full")
    rng = np.random.default_rng(0)
    ct = rng.normal(0, 60, (40, 36, 18)).astype(np.int16)
    write_nifti(root / "data" / "lps_case.nii.gz", ct, lps_affine())
    write_dicom_series(root / "data" / "dicom_case", rng.normal(0, 60, (30, 34, 12)).astype(np.int16))
    gen = subprocess.run([sys.executable, str(REPO_ROOT / "datasets" / "phantoms.py"), "--out", str(root / "data"),
                          "--cases", "1", "--seed", "3", "--shape", "48,48,32", "--quiet"], capture_output=True, text=True)
    assert gen.returncode == 0, gen.stderr[-3000:]
    res = _infer(root / "data", root / "out", model_file)
    assert res.returncode == 0, res.stderr[-4000:]
    return root


def test_original_space_lps_anisotropic(full_run):
    src = nib.load(str(full_run / "data" / "lps_case.nii.gz"))
    case = full_run / "out" / "lps_case"
    combined = nib.load(str(case / "combined_labels.nii.gz"))
    assert combined.shape == src.shape
    np.testing.assert_allclose(combined.affine, src.affine, atol=1e-5)
    assert combined.get_data_dtype() == np.uint8
    masks = sorted(p.name for p in (case / "segmentations").iterdir())
    assert len(masks) == 32 and "liver_tumor.nii.gz" in masks and "kidney_left.nii.gz" in masks
    liver = nib.load(str(case / "segmentations" / "liver.nii.gz"))
    assert liver.shape == src.shape and np.allclose(liver.affine, src.affine, atol=1e-5)
    assert set(np.unique(np.asarray(liver.dataobj))) <= {0, 1}
    assert (case / "overview.png").stat().st_size > 1000
    assert not [p for p in case.rglob("*") if p.name.startswith(".")], "temporary files left behind"


def test_report_content(full_run):
    report = json.loads((full_run / "out" / "lps_case" / "report.json").read_text())
    assert report["case"] == "lps_case" and report["orientation"] == "LPS"
    assert report["shape"] == [40, 36, 18]
    assert report["spacing_mm"] == pytest.approx([1.2, 0.9, 3.0])
    liver = report["classes"]["liver"]
    assert set(liver) >= {"index", "name", "volume_ml", "mean_hu", "voxels"}
    assert liver["volume_ml"] == pytest.approx(liver["voxels"] * 1.2 * 0.9 * 3.0 / 1000, rel=1e-3)
    tumor = report["classes"]["liver_tumor"]
    assert tumor["num_lesions"] == len(tumor["lesions"])
    for lesion in tumor["lesions"]:
        assert lesion["diameter_mm"] > 0 and lesion["host_organ"] in ("Liver", None)
        assert "mm" in lesion["description"]


def test_dicom_series_input(full_run):
    case = full_run / "out" / "dicom_case"
    combined = nib.load(str(case / "combined_labels.nii.gz"))
    assert combined.shape == (34, 30, 12)  # columns, rows, slices
    np.testing.assert_allclose(np.linalg.norm(combined.affine[:3, :3], axis=0), [0.8, 0.7, 2.5], atol=1e-4)
    report = json.loads((case / "report.json").read_text())
    assert report["input"].endswith("dicom_case")


def test_prompt_subset(tmp_path, model_file):
    write_nifti(tmp_path / "data" / "case1.nii.gz", np.zeros((24, 24, 16), np.int16), np.diag([1.5, 1.5, 2.0, 1]))
    res = _infer(tmp_path / "data", tmp_path / "out", model_file, "--prompts", "['liver','liver tumor']")
    assert res.returncode == 0, res.stderr[-4000:]
    masks = sorted(p.name for p in (tmp_path / "out" / "case1" / "segmentations").iterdir())
    assert masks == ["liver.nii.gz", "liver_tumor.nii.gz"]
    report = json.loads((tmp_path / "out" / "case1" / "report.json").read_text())
    assert sorted(report["classes"]) == ["liver", "liver_tumor"]
    assert report["class_indices"] == [5, 26]


def test_unknown_prompt_lists_valid_names(tmp_path, model_file):
    write_nifti(tmp_path / "data" / "case1.nii.gz", np.zeros((16, 16, 16), np.int16), np.eye(4))
    res = _infer(tmp_path / "data", tmp_path / "out", model_file, "--prompts", "['brain']")
    assert res.returncode != 0
    assert "unknown class 'brain'" in res.stderr and "Pancreas Tumor" in res.stderr


@pytest.mark.parametrize("kind", ["corrupt", "not3d"])
def test_bad_input_names_the_file(tmp_path, model_file, kind):
    data = tmp_path / "data"
    data.mkdir()
    if kind == "corrupt":
        bad = data / "broken.nii.gz"
        bad.write_bytes(b"this is not a nifti file")
        expect = "cannot read NIfTI"
    else:
        bad = write_nifti(data / "flat.nii.gz", np.zeros((16, 16), np.int16), np.eye(4))
        expect = "expected a 3D CT volume"
    res = _infer(data, tmp_path / "out", model_file)
    assert res.returncode != 0
    assert str(bad) in res.stderr and expect in res.stderr, res.stderr[-3000:]


def test_phantom_case_then_evaluate(full_run):
    """The phantom case is segmented; evaluate.json scores it against the phantom's ground truth."""
    case = full_run / "out" / "case_0000"
    src = nib.load(str(full_run / "data" / "case_0000" / "ct.nii.gz"))
    assert nib.load(str(case / "combined_labels.nii.gz")).shape == src.shape
    res = run_bundle("evaluate.json", "--dataset_dir", full_run / "data", "--prediction_dir", full_run / "out",
                     "--datalist_key", "all", "--metrics_dir", full_run / "metrics")
    assert res.returncode == 0, res.stderr[-4000:]
    metrics = json.loads((full_run / "metrics" / "metrics.json").read_text())
    assert metrics["cases"] == 1 and "case_0000" in metrics["per_case"]
