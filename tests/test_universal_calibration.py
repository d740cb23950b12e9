"""Threshold calibration of universal_abdomen_ct_segmentation: the choice rules, the one-class organ re-run against
the whole post-processing, and the real CLI (``inference.json`` + ``calibrate.json``) on two phantoms with a tiny
random-weight network."""

from __future__ import annotations

import json
import subprocess
import sys
from itertools import pairwise

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage

from universal_helpers import REPO_ROOT, TINY_NET_ARGS, make_tiny_model, run_bundle  # first: bundle on sys.path
from universal_model.calibration import (
    case_level_auc,
    choose_organ_threshold,
    choose_threshold,
    detection_curve,
    exclusive_rivals,
    exclusive_winner,
    labels_on_grid,
    organ_curve,
)
from universal_model.postprocess import AnatomicalPostProcessd, SigmoidThresholdd

pytestmark = pytest.mark.timeout(900)

GRID = [0.2, 0.5, 0.8]


def test_detection_curve_counts_cases_per_threshold():
    gt = [True, True, False, False]
    found = [[True, True, False], [True, False, False], [True, True, False], [False, False, False]]
    curve = detection_curve(gt, found, GRID)
    assert [(r["tp"], r["fn"], r["tn"], r["fp"]) for r in curve] == [(2, 0, 1, 1), (1, 1, 1, 1), (0, 2, 2, 0)]
    assert curve[0]["sensitivity"] == 1.0 and curve[0]["specificity"] == 0.5


def test_choose_threshold_balances_sensitivity_and_specificity():
    gt = [True, True, False, False]
    found = [[True, True, False], [True, True, False], [True, False, False], [True, False, False]]
    assert choose_threshold(detection_curve(gt, found, GRID))["threshold"] == 0.5   # 1.0 / 1.0
    tie = [[True, True, True], [False, False, False], [True, False, False], [False, False, False]]
    assert choose_threshold(detection_curve(gt, tie, GRID))["threshold"] == 0.8       # same counts: fewer alarms
    assert choose_threshold(detection_curve([False, False], [[True] * 3, [False] * 3], GRID)) is None
    never = [[False] * 3, [False] * 3, [True, True, True], [True, True, True]]       # misses, or alarms everywhere
    assert choose_threshold(detection_curve(gt, never, GRID)) is None
    chance = [[True, True, False], [False] * 3, [True, True, False], [True, False, False]]  # best: 0.5 / 0.5
    assert choose_threshold(detection_curve(gt, chance, GRID)) is None


def test_case_level_auc_ranks_cases_with_the_lesion_above_cases_without():
    gt = [True, False, True, False]
    assert case_level_auc(gt, [3.0, 1.0, 2.0, 0.0]) == 1.0                 # every positive above every negative
    assert case_level_auc(gt, [0.0, 3.0, 1.0, 2.0]) == 0.0
    assert case_level_auc(gt, [1.0, 1.0, 2.0, 0.0]) == 0.875               # one tie of four pairs counts 1/2
    assert case_level_auc(gt, [float("-inf"), 0.0, 5.0, float("-inf")]) == 0.625  # no host: lowest score
    assert case_level_auc([True, True], [1.0, 2.0]) is None


def test_choose_organ_threshold_takes_the_best_mean_dice_nearest_the_current_on_ties():
    grid = [0.2, 0.5, 0.8]
    nan = float("nan")

    def choose(dices, current):
        return choose_organ_threshold(organ_curve(grid, dices), current)

    curve = organ_curve(grid, [[0.7, 0.8, 0.9], [0.7, 0.8, nan]])
    assert [r["cases"] for r in curve] == [2, 2, 1] and curve[2]["dice"] == 0.9 and curve[0]["dice"] == 0.7
    assert choose([[0.7, 0.8, 0.9], [0.7, 0.8, 0.6]], 0.5) == {"threshold": 0.5, "dice": 0.8}
    # a case without the class in either mask (NaN) does not count: 0.8 removes a false positive (0 -> NaN)
    assert choose([[0.9, 0.9, 0.9], [0.0, 0.0, nan]], 0.5)["threshold"] == 0.8
    assert choose([[0.6, 0.6, 0.6]], 0.8)["threshold"] == 0.8    # tie: keep the current
    assert choose([[0.6, 0.6, 0.5]], 0.8)["threshold"] == 0.5    # tie: nearest the current
    assert organ_curve(grid, [[nan, nan, nan]])[0] == {"threshold": 0.2, "dice": None, "cases": 0}
    assert choose([[nan, nan, nan]], 0.5) is None


def test_one_organ_at_its_threshold_reproduces_the_whole_post_processing():
    """The calibration's re-run of one class (exclusive competition against the others' masks, then its own rules)
    must give, at the class's current threshold, exactly the mask of the inference post-processing of all classes,
    including saturated probabilities that tie between exclusive classes."""
    rng = np.random.default_rng(0)
    shape = (24, 20, 16)
    logits = ndimage.gaussian_filter(rng.normal(0, 1, (32, *shape)), (0, 2, 2, 2)) * 12.0 - 0.5
    logits[[1, 5], 3:9, 4:10, 2:8] = 40.0          # kidney_right and liver both sigmoid to exactly 1.0: a tie
    logits = logits.astype(np.float32)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    thresholds = {"default": 0.5, "liver": 0.3, "spleen": 0.7, "colon": 0.9, "hepatic_vessel": 0.4}
    thresholder = SigmoidThresholdd("pred", threshold=thresholds, exclusive_kinds=["organ", "vessel", "bone"],
                                    exclusive_exempt=["hepatic_vessel"])
    anatomy = AnatomicalPostProcessd("pred", largest_component=["spleen", "liver", "prostate"],
                                     major_components=["colon"], paired_organs=[["kidney_right", "kidney_left"],
                                                                                ["lung_right", "lung_left"]],
                                     min_organ_volume_ml={"prostate": 0.05})
    probs = torch.sigmoid(torch.from_numpy(logits)).numpy()
    raw = thresholder({"pred": MetaTensor(torch.from_numpy(logits.copy()), affine=torch.from_numpy(affine))})["pred"]
    raw = np.ascontiguousarray(raw.numpy(), dtype=np.uint8)
    final = raw.copy()
    anatomy.apply(final, thresholder.classes, affine, "RAS", midline=None)
    rivals = exclusive_rivals(probs, thresholder.exclusive, thresholder.thresholds)
    partner = {2: 3, 3: 2, 16: 17, 17: 16}
    changed = 0
    for k, t in enumerate(thresholder.thresholds[:25]):
        c = k + 1
        won = (exclusive_winner(probs[k], t, thresholder.exclusive.index(k), rivals) if k in thresholder.exclusive
               else probs[k] >= t).astype(np.uint8)
        np.testing.assert_array_equal(won, raw[k], err_msg=f"class {c}: competition")
        mask = anatomy.organ_mask(c, won, raw[partner[c] - 1] if c in partner else None, affine, "RAS")
        np.testing.assert_array_equal(mask, final[k], err_msg=f"class {c}: rules")
        changed += int((mask != raw[k]).any())
    assert changed >= 3                              # the rules did change masks, so their re-run was tested
    assert raw[1][3:9, 4:10, 2:8].all() and not raw[5][3:9, 4:10, 2:8].any()   # the tie: to the earlier class


def test_labels_on_grid_resamples_by_nearest_neighbour_and_rejects_labels_outside_the_image():
    labels = np.zeros((8, 8, 8), np.uint8)
    labels[2:6, 2:6, 2:6] = 7
    coarse = MetaTensor(torch.zeros(1, 4, 4, 4), affine=torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0]).double()))
    on_grid = labels_on_grid(labels, np.eye(4), coarse, "case/labels.nii.gz")
    assert on_grid.dtype == np.uint8 and on_grid.shape == (4, 4, 4) and set(np.unique(on_grid)) == {0, 7}
    assert on_grid[1:3, 1:3, 1:3].all() and on_grid.sum() == 7 * 8
    far = np.eye(4)
    far[:3, 3] = 500.0                                                       # the labels' world position: elsewhere
    with pytest.raises(ValueError, match="case/labels.nii.gz: ground-truth labels do not overlap"):
        labels_on_grid(labels, far, coarse, "case/labels.nii.gz")


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """Two phantoms (seed 3: case_0001 has a liver and a pancreas tumour, case_0000 no lesion), calibrated."""
    root = tmp_path_factory.mktemp("calib")
    gen = subprocess.run([sys.executable, str(REPO_ROOT / "datasets" / "phantoms.py"), "--out", str(root / "data"),
                          "--cases", "2", "--seed", "3", "--shape", "48,48,32", "--quiet"], capture_output=True, text=True,
                         check=False)
    assert gen.returncode == 0, gen.stderr[-3000:]
    model = make_tiny_model(root / "model.pt")
    res = run_bundle(["inference.json", "calibrate.json"], "--dataset_dir", root / "data", "--ckpt_path", model,
                     "--calibration_datalist_key", "all", "--calibration_dir", root / "out",
                     "--calibration_organ_grid", "[0.3, 0.5, 0.7]",
                     "--postprocess#threshold", "{'default': 0.5, 'liver': 0.4}", *TINY_NET_ARGS)
    assert res.returncode == 0, res.stderr[-4000:]
    return root


def test_calibration_cli_writes_thresholds_consistent_with_ground_truth(calibrated):
    result = json.loads((calibrated / "out" / "thresholds.json").read_text())
    assert result["cases"] == 2 and result["grid"] == sorted(result["grid"])
    labels = [np.asarray(nib.load(str(calibrated / "data" / f"case_000{i}" / "combined_labels.nii.gz")).dataobj)
              for i in range(2)]
    space = json.loads((REPO_ROOT / "datasets" / "label_space.json").read_text())
    lesions = {c["file_name"]: c["index"] for c in space["classes"] if c["kind"] == "lesion"}
    assert set(result["classes"]) == set(lesions)
    for name, rec in result["classes"].items():
        positives = sum(bool((lab == lesions[name]).any()) for lab in labels)
        assert rec["positives"] == positives and rec["negatives"] == 2 - positives, name
        curve = rec["curve"]
        assert all(r["tp"] + r["fn"] == positives and r["tn"] + r["fp"] == 2 - positives for r in curve)
        # a higher threshold can only remove findings (monotone post-processing)
        assert all(a["tp"] >= b["tp"] and a["fp"] >= b["fp"] for a, b in pairwise(curve)), name
        if positives in (0, 2):
            assert rec["chosen"] is None and rec["case_auc"] is None
        else:
            assert rec["case_auc"] in (0.0, 0.5, 1.0), name
        assert result["threshold"][name] == (rec["chosen"]["threshold"] if rec["chosen"] else 0.5), name
    assert result["classes"]["liver_tumor"]["positives"] == 1
    assert result["threshold"]["default"] == 0.5
    for name in ("lesion_thresholds.png", "organ_thresholds.png"):
        assert (calibrated / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_calibration_cli_chooses_organ_thresholds_by_mean_dice(calibrated):
    result = json.loads((calibrated / "out" / "thresholds.json").read_text())
    space = json.loads((REPO_ROOT / "datasets" / "label_space.json").read_text())
    organs = {c["file_name"] for c in space["classes"] if c["kind"] != "lesion"}
    assert set(result["organs"]) == organs and result["organ_grid"] == [0.3, 0.5, 0.7]
    for name, rec in result["organs"].items():
        assert [r["threshold"] for r in rec["curve"]] == [0.3, 0.5, 0.7]
        assert rec["current"] == (0.4 if name == "liver" else 0.5)
        dices = [r["dice"] for r in rec["curve"] if r["dice"] is not None]
        assert all(0.0 <= d <= 1.0 for d in dices) and all(0 <= r["cases"] <= 2 for r in rec["curve"])
        if rec["chosen"] is None:
            assert not dices and result["threshold"][name] == rec["current"], name
        else:
            assert rec["chosen"]["dice"] == max(dices), name
            assert result["threshold"][name] == rec["chosen"]["threshold"], name
    # the liver (in both phantoms, probabilities near 0.5 from random weights) is scored at every threshold
    assert all(r["cases"] == 2 for r in result["organs"]["liver"]["curve"])


def test_calibration_cli_with_an_empty_organ_grid_keeps_the_organ_thresholds(calibrated):
    res = run_bundle(["inference.json", "calibrate.json"], "--dataset_dir", calibrated / "data",
                     "--ckpt_path", calibrated / "model.pt", "--calibration_datalist_key", "all",
                     "--calibration_dir", calibrated / "lesions_only", "--calibration_organ_grid", "[]",
                     "--postprocess#threshold", "{'default': 0.5, 'liver': 0.4}", *TINY_NET_ARGS)
    assert res.returncode == 0, res.stderr[-4000:]
    result = json.loads((calibrated / "lesions_only" / "thresholds.json").read_text())
    assert result["organs"] == {} and result["organ_grid"] == []
    lesions = set(result["classes"])
    assert {k: v for k, v in result["threshold"].items() if k not in lesions} == {"default": 0.5, "liver": 0.4}
    assert (calibrated / "lesions_only" / "lesion_thresholds.png").exists()
    assert not (calibrated / "lesions_only" / "organ_thresholds.png").exists()
