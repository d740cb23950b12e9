"""Converters of public datasets (MSD, KiTS, AbdomenAtlas) on tiny fixtures written here in each layout."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

import universal_train_data  # noqa: F401  (puts the bundle on sys.path)
from conftest import REPO_ROOT, run_cli
from universal_model.convert import convert_dataset, main as convert_main
from universal_model.transforms import UNLABELLED, LabelToChannelsd

SHAPE = (24, 20, 16)


def _save(path, array, affine, dtype=np.int16):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array, dtype=dtype), affine), str(path))


def _ct(path, affine):
    _save(path, np.random.default_rng(0).integers(-100, 200, SHAPE), affine)


def _load(path):
    return np.asarray(nib.load(str(path)).dataobj)


def _kits(root, affine):
    """One KiTS case: kidney blobs at low and high voxel x, a tumour (2) and a cyst (3) in the high-x kidney."""
    lab = np.zeros(SHAPE, np.uint8)
    lab[2:7, 8:13, 5:11] = 1
    lab[16:22, 8:13, 5:11] = 1
    lab[18:20, 10:12, 7:9] = 2
    lab[16, 8, 5] = 3
    _ct(root / "case_00000" / "imaging.nii.gz", affine)
    _save(root / "case_00000" / "segmentation.nii.gz", lab, affine, np.uint8)
    return lab


@pytest.mark.parametrize("x_sign, high_x_side", [(2.0, 2), (-2.0, 3)])
def test_kits_kidneys_are_split_right_left_by_world_position(tmp_path, x_sign, high_x_side):
    affine = np.diag([x_sign, 2.0, 2.0, 1.0])
    src = _kits(tmp_path / "kits", affine)
    datalist = json.loads(convert_dataset("kits", tmp_path / "kits", tmp_path / "out").read_text())
    (entry,) = datalist["training"]
    assert entry["dataset"] == "KiTS" and entry["labels_present"] == [2, 3, 26, 32]
    out = _load(entry["label"])
    assert np.allclose(nib.load(entry["label"]).affine, affine)
    other = 5 - high_x_side  # RAS+: +x is the patient's right, so high voxel x is right when the axis is not flipped
    assert (out[16:22, 8:13, 5:11][src[16:22, 8:13, 5:11] == 1] == high_x_side).all()
    assert (out[2:7, 8:13, 5:11] == other).all()
    assert (out[18:20, 10:12, 7:9] == 26).all() and out[16, 8, 5] == 32
    # in training channels, the tumour and cyst also count as the kidney that holds them
    d = LabelToChannelsd("label")({"label": torch.as_tensor(out[None]), "labels_present": entry["labels_present"]})
    assert d["label"][high_x_side - 1][18:20, 10:12, 7:9].eq(1).all()
    assert d["label"][5].eq(UNLABELLED).all()  # liver is not a KiTS class


def _msd(root, label, rel_label="./labelsTr/liver_0.nii.gz"):
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    _ct(root / "imagesTr" / "liver_0.nii.gz", affine)
    _save(root / "labelsTr" / "liver_0.nii.gz", label, affine, np.uint8)
    (root / "dataset.json").write_text(
        json.dumps({"name": "Liver", "training": [{"image": "./imagesTr/liver_0.nii.gz", "label": rel_label}]})
    )


def test_msd_liver_maps_to_liver_and_liver_tumour(tmp_path):
    lab = np.zeros(SHAPE, np.uint8)
    lab[4:20, 4:16, 4:12] = 1
    lab[8:10, 8:10, 6:8] = 2
    _msd(tmp_path / "Task03_Liver", lab)
    path = convert_dataset("msd_liver", tmp_path / "Task03_Liver", tmp_path / "out")
    (entry,) = json.loads(path.read_text())["training"]
    out = _load(entry["label"])
    assert entry["case"] == "liver_0" and entry["labels_present"] == [6, 27]
    assert set(np.unique(out).tolist()) == {0, 6, 27}
    assert (out == 27).sum() == 8 and (out == 6).sum() == (lab == 1).sum()


def test_abdomenatlas_masks_combine_and_labelled_classes_come_from_the_files(tmp_path):
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    case = tmp_path / "atlas" / "BDMAP_00000001"
    _ct(case / "ct.nii.gz", affine)
    liver, spleen, tumour = (np.zeros(SHAPE, np.uint8) for _ in range(3))
    liver[2:12, 2:10, 2:10] = 1
    spleen[14:20, 2:8, 2:8] = 1
    tumour[4:6, 4:6, 4:6] = 1
    for name, m in (("liver", liver), ("spleen", spleen), ("liver_tumor", tumour)):
        _save(case / "segmentations" / f"{name}.nii.gz", m, affine, np.uint8)
    (entry,) = json.loads(convert_dataset("abdomenatlas", tmp_path / "atlas", tmp_path / "out").read_text())["training"]
    out = _load(entry["label"])
    assert entry["labels_present"] == [1, 6, 27]
    assert (out[4:6, 4:6, 4:6] == 27).all() and (out == 6).sum() == liver.sum() - 8 and (out == 1).sum() == spleen.sum()


def test_bad_inputs_stop_with_the_file_named(tmp_path):
    lab = np.zeros(SHAPE, np.uint8)
    lab[2:4, 2:4, 2:4] = 7  # MSD liver defines 0, 1, 2 only
    _msd(tmp_path / "bad_value", lab)
    with pytest.raises(ValueError, match=r"liver_0\.nii\.gz: label values \[7\]"):
        convert_dataset("msd_liver", tmp_path / "bad_value", tmp_path / "out1")

    _msd(tmp_path / "escape", np.zeros(SHAPE, np.uint8), rel_label="../../etc/passwd")
    with pytest.raises(ValueError, match="points outside"):
        convert_dataset("msd_liver", tmp_path / "escape", tmp_path / "out2")

    root = tmp_path / "kits_grid"
    _ct(root / "case_00001" / "imaging.nii.gz", np.eye(4))
    _save(root / "case_00001" / "segmentation.nii.gz", np.zeros((8, 8, 8)), np.eye(4), np.uint8)
    with pytest.raises(ValueError, match=r"segmentation\.nii\.gz: label grid \(8, 8, 8\) does not match"):
        convert_dataset("kits", root, tmp_path / "out3")
    assert not (tmp_path / "out3").exists() or not any((tmp_path / "out3").rglob("*.nii.gz"))


def test_cli_converts_and_reports_errors_in_one_line(tmp_path, capsys):
    _kits(tmp_path / "kits", np.diag([2.0, 2.0, 2.0, 1.0]))
    ok = run_cli(
        ["-m", "universal_model.convert", "--source", "kits", "--input", tmp_path / "kits", "--out", tmp_path / "out"],
        cwd=REPO_ROOT / "bundles" / "universal_abdomen_ct_segmentation",
    )
    assert ok.returncode == 0, ok.stderr
    assert "1 training, 0 validation" in ok.stdout
    assert (tmp_path / "out" / "case_00000" / "combined_labels.nii.gz").is_file()
    assert convert_main(["--source", "btcv", "--input", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "missing: dataset folder not found" in capsys.readouterr().err

    lab = np.zeros(SHAPE, np.uint8)
    lab[4:8, 4:8, 4:8] = 1
    _msd(tmp_path / "Task03_Liver", lab)
    assert (
        convert_main(
            ["--source", "msd_liver", "--input", str(tmp_path / "Task03_Liver"), "--out", str(tmp_path / "liver")]
        )
        == 0
    )
    lists = [str(tmp_path / "out" / "datalist_partial.json"), str(tmp_path / "liver" / "datalist_partial.json")]
    assert convert_main(["--merge", *lists, "--out", str(tmp_path / "all")]) == 0
    merged = json.loads((tmp_path / "all" / "datalist_partial.json").read_text())
    assert [e["dataset"] for e in merged["training"]] == ["KiTS", "LiTS"] and set(merged["templates"]) == {
        "KiTS",
        "LiTS",
    }
    assert convert_main(["--merge", lists[0], lists[0], "--out", str(tmp_path / "dup")]) == 2
    assert "case id 'case_00000' already comes from another datalist" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text(json.dumps({"training": [{"image": "x.nii.gz"}]}))
    assert convert_main(["--merge", str(tmp_path / "broken.json"), "--out", str(tmp_path / "broken")]) == 2
    assert "broken.json: every training entry needs a 'case'" in capsys.readouterr().err
