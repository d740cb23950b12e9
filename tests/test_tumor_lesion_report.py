"""LesionReportHandler: Dice for every class, detection and false positives for lesion classes only."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundles" / "tumor_synthesis"))

from tumor_synth.handlers import LesionReportHandler  # noqa: E402


def _case():
    """Liver 1 with one 4-voxel tumor 2; the prediction finds the tumor and adds one false-positive blob."""
    label = np.zeros((1, 20, 20, 20), np.uint8)
    label[0, 2:18, 2:18, 2:18] = 1
    label[0, 8:10, 8:10, 8] = 2
    pred = label.copy()
    pred[0, 14, 14, 14] = 2
    return pred, label


def test_host_organ_gets_dice_only(tmp_path):
    out = tmp_path / "report.json"
    handler = LesionReportHandler(str(out), {1: "Liver", 2: "Liver Tumor"}, lesion_classes=[2])
    handler.add_case(*_case())
    handler.completed()
    report = json.loads(out.read_text())
    liver, tumor = report["classes"]["Liver"], report["classes"]["Liver Tumor"]
    assert set(liver) == {"mean_dice"} and 0.99 < liver["mean_dice"] < 1.0
    assert tumor["false_positive_components"] == 1
    assert report["all_tumors"]["sensitivity_by_diameter"]["all"]["detected"] == 1


def test_every_class_is_a_lesion_class_by_default(tmp_path):
    handler = LesionReportHandler(str(tmp_path / "r.json"), {1: "Liver", 2: "Liver Tumor"})
    handler.add_case(*_case())
    assert set(handler.report()["classes"]["Liver"]) == {"mean_dice", "false_positive_components",
                                                         "sensitivity_by_diameter"}


def test_unknown_lesion_class_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="lesion_classes \\[3\\]"):
        LesionReportHandler(str(tmp_path / "r.json"), {1: "Liver", 2: "Liver Tumor"}, lesion_classes=[3])
