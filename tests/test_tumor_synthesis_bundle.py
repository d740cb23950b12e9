"""The tumor_synthesis bundle through the real `python -m monai.bundle` CLI (subprocesses, tiny settings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "tumor_synthesis"
PHANTOMS = REPO / "datasets" / "phantoms.py"
sys.path.insert(0, str(BUNDLE))

from tumor_synth.testing import make_abdomen  # noqa: E402

TINY = ["--roi_size", "[32,32,32]", "--num_workers", "0"]


def bundle(*args: str, timeout: int = 400) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=BUNDLE, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def write_fixture_cases(root: Path, n: int) -> None:
    """AbdomenAtlas-style cases with liver (6), pancreas (11) and kidneys (2, 3), when phantoms are unavailable."""
    organs = {6: ((0.35, 0.45, 0.5), (30.0, 25.0, 25.0), 100.0), 11: ((0.7, 0.55, 0.5), (15.0, 8.0, 8.0), 110.0),
              2: ((0.3, 0.8, 0.5), (10.0, 10.0, 14.0), 170.0), 3: ((0.7, 0.8, 0.5), (10.0, 10.0, 14.0), 170.0)}
    for i in range(n):
        img, lab = make_abdomen((48, 48, 32), (3.0, 3.0, 3.0), organs=organs, seed=i)
        d = root / f"case_{i:04d}"
        d.mkdir(parents=True)
        nib.save(nib.Nifti1Image(np.rint(img[0]).astype(np.int16), np.diag([3.0, 3.0, 3.0, 1.0])), d / "ct.nii.gz")
        nib.save(nib.Nifti1Image(lab[0], np.diag([3.0, 3.0, 3.0, 1.0])), d / "combined_labels.nii.gz")


def make_cases(root: Path, n: int, seed: int, healthy: bool) -> Path:
    if PHANTOMS.is_file():
        cmd = [sys.executable, str(PHANTOMS), "--out", str(root), "--cases", str(n), "--seed", str(seed),
               "--shape", "96,96,64", "--spacing", "4,4,5"] + (["--healthy"] if healthy else [])
        subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    else:
        write_fixture_cases(root, n)
    return root


@pytest.fixture(scope="module")
def healthy(tmp_path_factory) -> Path:
    return make_cases(tmp_path_factory.mktemp("healthy"), 2, 1, healthy=True)


@pytest.fixture(scope="module")
def with_lesions(tmp_path_factory) -> Path:
    return make_cases(tmp_path_factory.mktemp("lesions"), 1, 7, healthy=False)


def test_synthesize_config_writes_dataset(healthy, tmp_path):
    out = tmp_path / "synthetic"
    bundle("run", "--config_file", "configs/synthesize.json", "--input_dir", str(healthy), "--output_dir", str(out))
    datalist = json.loads((out / "datalist.json").read_text())
    assert len(datalist["training"]) == 2
    assert not [p for p in out.rglob("*") if ".tmp" in p.name], "temporary files left behind"
    for entry in datalist["training"]:
        case = out / entry["case"]
        ct, lab = nib.load(case / "ct.nii.gz"), nib.load(case / "combined_labels.nii.gz")
        src = nib.load(healthy / entry["case"] / "ct.nii.gz")
        assert ct.shape == src.shape and np.allclose(ct.affine, src.affine)
        assert ct.get_data_dtype() == np.int16 and lab.get_data_dtype() == np.uint8
        labels = np.asarray(lab.dataobj)
        meta = json.loads((case / "meta.json").read_text())
        assert meta["synthetic_tumors"], "lesions are recorded in meta.json"
        for rec in meta["synthetic_tumors"]:
            assert {"centre_mm", "diameter_mm", "mean_hu", "organ", "size_class"} <= set(rec)
        present = {r["tumor_label"] for r in meta["synthetic_tumors"]}
        names = {27: "liver_tumor", 28: "pancreas_tumor", 26: "kidney_tumor"}
        for value in present:
            mask = np.asarray(nib.load(case / "segmentations" / f"{names[value]}.nii.gz").dataobj)
            assert np.array_equal(mask > 0, labels == value)


def test_train_evaluate_inference_validate_configs(healthy, with_lesions, tmp_path):
    models, evald = tmp_path / "models", tmp_path / "eval"
    bundle("run", "--config_file", "configs/train.json", "--dataset_dir", str(healthy), "--ckpt_dir", str(models),
           "--epochs", "1", "--epoch_length", "1", "--batch_size", "1", *TINY)
    assert (models / "model.pt").is_file()
    bundle("run", "--config_file", "['configs/train.json','configs/evaluate.json']", "--eval_dataset_dir",
           str(with_lesions), "--ckpt_dir", str(models), "--output_dir", str(evald), *TINY)
    report = json.loads((evald / "lesion_report.json").read_text())
    assert report["cases"] == 1 and set(report["classes"]) == {"Liver Tumor", "Pancreas Tumor", "Kidney Tumor"}
    assert "<10 mm" in report["all_tumors"]["sensitivity_by_diameter"]
    bundle("run", "--config_file", "configs/inference.json", "--input_dir", str(with_lesions), "--ckpt_dir",
           str(models), "--output_dir", str(tmp_path / "inf"), "--roi_size", "[32,32,32]")
    (out,) = list((tmp_path / "inf").rglob("*_tumors.nii.gz"))
    src = nib.load(next(with_lesions.glob("*/ct.nii.gz")))
    pred = nib.load(out)
    assert pred.shape == src.shape and np.allclose(pred.affine, src.affine, atol=1e-3)
    assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 26, 27, 28}
    bundle("run", "--config_file", "configs/validate_synthetic.json", "--dataset_dir", str(healthy), "--ckpt_path",
           str(models / "model.pt"), "--output_dir", str(evald / "val"), "--roi_size", "[32,32,32]",
           "--diameters_mm", "[10,25]", "--contrasts_hu", "[-60]", "--max_cases", "1")
    val = json.loads((evald / "val" / "validation_report.json").read_text())
    assert len(val["lesions"]) >= 1 and set(val["by_diameter"]) == {"10", "25"}
    assert (evald / "val" / "sensitivity_vs_size_contrast.png").read_bytes()[:4] == b"\x89PNG"


def test_datalist_with_lesion_filter(tmp_path):
    from tumor_synth.data import load_datalist

    write_fixture_cases(tmp_path, 3)
    lab_path = tmp_path / "case_0001" / "combined_labels.nii.gz"
    lab = nib.load(lab_path)
    data = np.asarray(lab.dataobj).copy()
    data[tuple(np.argwhere(data == 6)[0])] = 27  # one liver voxel becomes a liver tumor
    nib.save(nib.Nifti1Image(data, lab.affine), lab_path)
    assert [d["case"] for d in load_datalist(str(tmp_path), with_lesion=27)] == ["case_0001"]  # read from labels
    (tmp_path / "case_0002" / "meta.json").write_text(json.dumps({"classes_present": [6, 27]}))
    assert [d["case"] for d in load_datalist(str(tmp_path), with_lesion=27)] == ["case_0001", "case_0002"]
    assert len(load_datalist(str(tmp_path), with_lesion=28)) == 0
    (tmp_path / "case_0002" / "meta.json").write_text("{broken")
    with pytest.raises(ValueError, match="case_0002/meta.json"):
        load_datalist(str(tmp_path), with_lesion=27)


@pytest.mark.parametrize("overlay, classes, inference_args", [
    ("liver_only", {"Liver Tumor"}, ["--class_labels", "[27]"]),
    ("liver_and_tumor", {"Liver", "Liver Tumor"}, ["--class_labels", "[6,27]", "--keep_in_organ_classes", "[1,2]"]),
])
def test_liver_experiment_overlays(overlay, classes, inference_args, healthy, with_lesions, tmp_path):
    """The A-vs-B overlays: liver tumors only, or liver + liver tumor kept inside the liver (the paper's protocol)."""
    cfg = f"configs/{overlay}.json"
    models, evald = tmp_path / "models", tmp_path / "eval"
    bundle("run", "--config_file", f"['configs/train.json','{cfg}']", "--dataset_dir", str(healthy),
           "--ckpt_dir", str(models), "--epochs", "1", "--epoch_length", "1", "--batch_size", "1", *TINY)
    bundle("run", "--config_file", f"['configs/train.json','{cfg}','configs/evaluate.json']",
           "--eval_dataset_dir", str(with_lesions), "--ckpt_dir", str(models), "--output_dir", str(evald), *TINY)
    report = json.loads((evald / "lesion_report.json").read_text())
    assert set(report["classes"]) == classes
    assert "sensitivity_by_diameter" in report["classes"]["Liver Tumor"]
    assert "sensitivity_by_diameter" not in report["classes"].get("Liver", {})  # the host organ gets Dice only
    bundle("run", "--config_file", "configs/inference.json", "--input_dir", str(with_lesions), "--ckpt_dir",
           str(models), "--output_dir", str(tmp_path / "inf"), "--roi_size", "[32,32,32]", *inference_args)
    (out,) = list((tmp_path / "inf").rglob("*_tumors.nii.gz"))
    assert set(np.unique(np.asarray(nib.load(out).dataobj))) <= {0} | set(json.loads(inference_args[1]))


def test_liver_subtle_overlay_sets_the_synthesis_intensity():
    """configs/liver_subtle.json swaps only the intensity modes of the liver preset used for synthesis."""
    from monai.bundle import ConfigParser

    from tumor_synth.presets import get_preset

    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / f) for f in ("train.json", "liver_and_tumor.json", "liver_subtle.json")])
    (synth,) = parser.get_parsed_content("train#synthesis")
    preset, liver = synth.synth.preset, get_preset("liver")
    assert preset["intensity"] == parser["subtle_liver_intensity"] != liver["intensity"]
    assert {k: v for k, v in preset.items() if k != "intensity"} == {k: v for k, v in liver.items() if k != "intensity"}


def test_shipped_liver_model_fits_the_liver_and_tumor_overlay():
    """models/liver_and_tumor/model.pt loads (weights_only, strict) into the overlay's 3-class network."""
    import torch
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / f) for f in ("train.json", "liver_and_tumor.json")])
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(BUNDLE / "models" / "liver_and_tumor" / "model.pt", weights_only=True), strict=True)
    assert net(torch.zeros(1, 1, 32, 32, 32)).shape[1] == 3
