"""Lesion-threshold calibration of universal_abdomen_ct_segmentation: the choice rule, and the real CLI
(``inference.json`` + ``calibrate.json``) on two phantoms with a tiny random-weight network."""

from __future__ import annotations

import json
import subprocess
import sys
from itertools import pairwise

import nibabel as nib
import numpy as np
import pytest

from universal_helpers import REPO_ROOT, TINY_NET_ARGS, make_tiny_model, run_bundle  # first: bundle on sys.path
from universal_model.calibration import case_level_auc, choose_threshold, detection_curve

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
                     "--postprocess#threshold", "{'default': 0.5, 'liver': 0.4}", *TINY_NET_ARGS)
    assert res.returncode == 0, res.stderr[-4000:]
    return root


def test_calibration_cli_writes_thresholds_consistent_with_ground_truth(calibrated):
    result = json.loads((calibrated / "out" / "lesion_thresholds.json").read_text())
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
    assert result["threshold"]["liver"] == 0.4 and result["threshold"]["default"] == 0.5
    assert (calibrated / "out" / "lesion_thresholds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
