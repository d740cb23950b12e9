"""configs/evaluate.json of the universal bundle: Dice, NSD, partial labels and lesion detection, via the real CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from universal_helpers import run_bundle, write_nifti

AFF = np.diag([1.0, 1.0, 2.0, 1.0])


def _labels(shape=(30, 30, 20)):
    lab = np.zeros(shape, np.uint8)
    lab[5:20, 5:20, 3:15] = 6  # liver
    return lab


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    cases = {}
    # case_a: perfect liver, GT liver tumor found -> TP
    gt = _labels()
    gt[8:11, 8:11, 5:8] = 27
    cases["case_a"] = (gt, gt.copy(), None)
    # case_b: liver shifted by 1 voxel, no tumor in GT but one predicted -> FP; spleen not annotated in GT
    gt = _labels()
    pred = np.zeros_like(gt)
    pred[6:21, 5:20, 3:15] = 6
    pred[10:12, 10:12, 6:8] = 27
    pred[22:28, 22:28, 2:6] = 1  # spleen predicted, but ignored: case lists only liver and its tumor
    cases["case_b"] = (gt, pred, ["liver", "Liver Tumor"])
    # case_c: GT tumor missed -> FN
    gt = _labels()
    gt[12:15, 12:15, 5:8] = 27
    pred = _labels()
    cases["case_c"] = (gt, pred, None)
    entries = []
    for name, (g, p, present) in cases.items():
        write_nifti(root / "data" / name / "combined_labels.nii.gz", g, AFF)
        write_nifti(root / "pred" / name / "combined_labels.nii.gz", p, AFF)
        e = {"case": name, "image": f"{name}/ct.nii.gz", "label": f"{name}/combined_labels.nii.gz"}
        if present:
            e["labels_present"] = present
        entries.append(e)
    (root / "data" / "datalist.json").write_text(json.dumps({"test": entries}))
    res = run_bundle("evaluate.json", "--dataset_dir", root / "data", "--prediction_dir", root / "pred",
                     "--metrics_dir", root / "metrics", "--nsd_tolerance_mm", "2.0")
    assert res.returncode == 0, res.stderr[-4000:]
    return root, res.stdout


def test_outputs_and_table(evaluated):
    root, stdout = evaluated
    assert {p.name for p in (root / "metrics").iterdir()} >= {"metrics.json", "summary.csv", "per_case.csv",
                                                             "lesions.csv", "lesion_detection.png"}
    assert "NSD@2mm" in stdout and "liver_tumor" in stdout and "FP/case" in stdout
    rows = list(csv.DictReader((root / "metrics" / "per_case.csv").open()))
    assert {r["case"] for r in rows} == {"case_a", "case_b", "case_c"}


def test_dice_nsd_values(evaluated):
    m = json.loads((evaluated[0] / "metrics" / "metrics.json").read_text())
    pc = m["per_case"]
    assert pc["case_a"]["liver"]["dice"] == pytest.approx(1.0)
    assert pc["case_a"]["liver"]["nsd"] == pytest.approx(1.0)
    assert 0.8 < pc["case_b"]["liver"]["dice"] < 1.0
    # a 1 mm shift is (nearly) all within the 2 mm tolerance: NSD well above Dice
    assert pc["case_b"]["liver"]["nsd"] > max(0.95, pc["case_b"]["liver"]["dice"])
    assert pc["case_a"]["spleen"]["dice"] is None  # absent in both: no number


def test_labels_present_respected(evaluated):
    m = json.loads((evaluated[0] / "metrics" / "metrics.json").read_text())
    assert set(m["per_case"]["case_b"]) == {"liver", "liver_tumor"}
    spleen = [r for r in m["summary"] if r["class"] == "spleen"][0]
    assert spleen["cases"] == 2  # case_b does not annotate the spleen


def test_lesion_detection(evaluated):
    m = json.loads((evaluated[0] / "metrics" / "metrics.json").read_text())
    tumor = [r for r in m["summary"] if r["class"] == "liver_tumor"][0]
    assert (tumor["tp"], tumor["fn"], tumor["tn"], tumor["fp"]) == (1, 1, 0, 1)
    assert tumor["sensitivity"] == pytest.approx(0.5) and tumor["specificity"] == pytest.approx(0.0)


def test_lesion_level_detection_by_size(evaluated):
    root = evaluated[0]
    rows = list(csv.DictReader((root / "metrics" / "lesions.csv").open()))
    # one 3x3x3 tumour at 1 x 1 x 2 mm in case_a (found) and one in case_c (missed): 7.3 mm, below 10 mm
    assert sorted((r["case"], r["class"], r["found"], r["size_bin"]) for r in rows) == [
        ("case_a", "liver_tumor", "True", "<10 mm"), ("case_c", "liver_tumor", "False", "<10 mm")]
    assert float(rows[0]["diameter_mm"]) == pytest.approx(7.3, abs=0.1)
    m = json.loads((root / "metrics" / "metrics.json").read_text())["lesion_detection"]
    assert m["size_bins_mm"] == [10.0, 20.0]
    total = [r for r in m["summary"] if r["class"] == "liver_tumor" and r["size"] == "all sizes"][0]
    assert (total["lesions"], total["found"], total["cases"], total["false_positive_lesions"]) == (2, 1, 3, 1)
    assert total["false_positives_per_case"] == pytest.approx(1 / 3, abs=1e-3)
    assert [r["size"] for r in m["summary"] if r["class"] == "liver_tumor"] == ["<10 mm", "all sizes"]


def test_match_lesions_finds_misses_and_counts_false_positives():
    from universal_model.lesion_detection import match_lesions

    gt = np.zeros((40, 40, 20), bool)
    pred = np.zeros_like(gt)
    gt[2:14, 2:14, 2:8] = True    # 12 x 12 x 12 mm lesion at 1 x 1 x 2 mm: 20 mm or more
    gt[30:32, 30:32, 15:16] = True  # small lesion, missed
    pred[13:16, 13:16, 7:9] = True  # overlaps the large lesion by one corner voxel: found
    pred[30:33, 2:5, 15:17] = True  # touches no lesion: one false positive
    lesions, fp = match_lesions(pred, gt, np.diag([1.0, 1.0, 2.0, 1.0]))
    assert [r["found"] for r in lesions] == [True, False] and fp == 1
    assert lesions[0]["diameter_mm"] > 20 > 10 > lesions[1]["diameter_mm"]
    assert lesions[0]["volume_ml"] == pytest.approx(12 * 12 * 6 * 2 / 1000)
    assert match_lesions(np.zeros_like(gt), np.zeros_like(gt), np.eye(4)) == ([], 0)


@pytest.mark.parametrize("diameter, expected", [(9.9, "<10 mm"), (10.0, "10-20 mm"), (19.0, "10-20 mm"),
                                                (20.0, ">=20 mm"), (80.0, ">=20 mm")])
def test_size_bins(diameter, expected):
    from universal_model.lesion_detection import size_bin

    assert size_bin(diameter, [10, 20]) == expected


@pytest.mark.parametrize("edges", [[20, 10], [0, 10], [10, 10]])
def test_bad_size_bins_are_refused(edges):
    from universal_model.lesion_detection import size_bin_names

    with pytest.raises(ValueError, match="positive and increasing"):
        size_bin_names(edges)


@pytest.mark.parametrize("array, problem", [
    (np.zeros((4, 4, 4, 2), np.uint8), "must be a 3D label map"),
    (np.full((4, 4, 4), 300, np.int16), "must hold integer labels 0-255"),
    (np.full((4, 4, 4), 0.5, np.float32), "must hold integer labels 0-255"),
])
def test_bad_label_map_names_the_file_and_the_problem(tmp_path, array, problem):
    from universal_model.evaluation import load_labels

    path = tmp_path / "combined_labels.nii.gz"
    write_nifti(path, array, np.eye(4))
    with pytest.raises(ValueError, match=f"{path}: ground truth {problem}"):
        load_labels(path, "ground truth")
