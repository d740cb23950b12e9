"""Anatomy of the phantom: classes present, positions, HU per phase (docs/phantoms.md), orientation."""
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "datasets"))

from phantom_ct import generate_case, load_label_space  # noqa: E402

SMALL = dict(shape=(128, 128, 80), spacing=(3.0, 3.0, 4.0))
CLASSES = {c["file_name"]: c["index"] for c in load_label_space()["classes"]}
ORGANS = [c["index"] for c in load_label_space()["classes"] if c["kind"] != "lesion"]

# Copied from the "HU table" of docs/phantoms.md on purpose (not imported from the code), so the
# test fails when the generator drifts from the documentation. (NC, ART, PV) ranges of the
# mean HU inside each organ (mask eroded by one voxel, which drops the partial-volume rim).
DOCUMENTED_HU = {
    "liver": ((50, 70), (60, 95), (95, 135)),
    "spleen": ((40, 55), (90, 140), (100, 140)),
    "kidney_right": ((25, 40), (70, 200), (130, 195)),
    "kidney_left": ((25, 40), (70, 200), (130, 195)),
    "pancreas": ((35, 55), (90, 140), (75, 115)),
    "aorta": ((30, 55), (200, 350), (130, 200)),
    "postcava": ((30, 55), (70, 120), (115, 175)),
    "gall_bladder": ((-5, 25), (-5, 25), (-5, 25)),
    "bladder": ((-5, 25), (-5, 25), (-5, 25)),
    "lung_right": ((-900, -800), (-900, -800), (-900, -800)),
    "femur_left": ((200, 600), (200, 600), (200, 600)),
}
PHASES = ("non_contrast", "arterial", "portal_venous")


def centroid_mm(case, index):
    """World (RAS mm) centroid of a label."""
    idx = np.argwhere(case.labels == index).mean(axis=0)
    return case.affine[:3, :3] @ idx + case.affine[:3, 3]


@pytest.fixture(scope="module")
def default_male():
    return generate_case(7, sex="male", healthy=True)


def test_every_organ_present_in_default_male_case(default_male):
    present = set(np.unique(default_male.labels).tolist())
    missing = [i for i in ORGANS if i not in present]
    assert not missing, f"organ classes missing: {missing}"
    assert default_male.meta["sex"] == "male"
    assert default_male.ct.shape == (256, 256, 160)


def test_female_case_has_24_organs_and_no_prostate():
    case = generate_case(7, sex="female", healthy=True, **SMALL)
    present = set(np.unique(case.labels).tolist()) - {0}
    assert CLASSES["prostate"] not in present
    assert len(present & set(ORGANS)) == 24
    assert case.meta["sex"] == "female"


def test_ct_and_labels_share_shape_affine_and_dtypes():
    case = generate_case(3, **SMALL)
    assert case.ct.shape == case.labels.shape == (128, 128, 80)
    assert case.ct.dtype == np.int16 and case.labels.dtype == np.uint8
    assert case.affine.shape == (4, 4) and case.affine.dtype == np.float64
    assert np.allclose(np.abs(np.diag(case.affine)[:3]), (3.0, 3.0, 4.0))


def test_anatomical_relations(default_male):
    c = {name: centroid_mm(default_male, CLASSES[name]) for name in CLASSES if CLASSES[name] in ORGANS}
    x, y, z = 0, 1, 2
    assert c["liver"][x] > 20 and c["spleen"][x] < -40                       # liver patient right
    assert c["kidney_right"][x] > 20 and c["kidney_left"][x] < -20
    assert c["kidney_right"][y] < c["pancreas"][y] and c["kidney_left"][y] < c["pancreas"][y]
    assert c["adrenal_gland_right"][z] > c["kidney_right"][z]
    assert c["adrenal_gland_left"][z] > c["kidney_left"][z]
    assert c["pancreas"][y] > c["aorta"][y]                                  # in front of the aorta
    assert c["postcava"][x] > c["aorta"][x]                                  # IVC right of aorta
    assert c["gall_bladder"][z] < c["liver"][z]
    assert c["lung_right"][z] > c["liver"][z] and c["lung_left"][z] > c["spleen"][z]
    assert c["bladder"][z] < c["kidney_right"][z] - 80
    assert c["prostate"][z] < c["bladder"][z]
    assert c["femur_right"][x] > 50 and c["femur_left"][x] < -50
    assert c["celiac_trunk"][y] > c["aorta"][y]
    assert c["esophagus"][z] > c["stomach"][z]
    assert c["portal_vein_and_splenic_vein"][y] < c["pancreas"][y]              # veins behind the pancreas
    assert c["stomach"][x] < 0 and c["duodenum"][x] > c["stomach"][x]
    assert c["rectum"][y] < c["bladder"][y]


def test_pancreas_crosses_midline_and_hepatic_vessels_sit_in_liver(default_male):
    case = default_male
    world_x = case.affine[0, 0] * np.arange(case.labels.shape[0]) + case.affine[0, 3]
    pancreas_x = world_x[np.flatnonzero((case.labels == CLASSES["pancreas"]).any(axis=(1, 2)))]
    assert pancreas_x.min() < -30 and pancreas_x.max() > 20
    vessels = case.labels == CLASSES["hepatic_vessel"]
    grown = ndimage.binary_dilation(case.labels == CLASSES["liver"], iterations=2)
    assert vessels.sum() > 200 and (vessels & grown).sum() / vessels.sum() > 0.95


def assert_documented_hu(case):
    phase_index = PHASES.index(case.meta["phase"])
    phase = case.meta["phase"]
    for name, ranges in DOCUMENTED_HU.items():
        mask = case.labels == CLASSES[name]
        eroded = ndimage.binary_erosion(mask)
        values = case.ct[eroded if eroded.sum() >= 20 else mask]
        lo, hi = ranges[phase_index]
        mean = float(values.mean())
        assert lo <= mean <= hi, f"{name} {phase}: mean {mean:.0f} HU outside documented [{lo}, {hi}]"


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("seed", [11, 12])
def test_mean_hu_per_organ_within_documented_table(phase, seed):
    case = generate_case(seed, healthy=True, phase=phase, **SMALL)
    assert case.meta["phase"] == phase
    assert_documented_hu(case)


def test_mean_hu_in_default_resolution_case(default_male):
    assert_documented_hu(default_male)


def test_noise_level_matches_meta():
    case = generate_case(5, healthy=True, phase="non_contrast", **SMALL)
    assert 10 <= case.meta["noise_std_hu"] <= 25
    liver = ndimage.binary_erosion(case.labels == CLASSES["liver"], iterations=2)
    assert 0.6 * case.meta["noise_std_hu"] <= case.ct[liver].std() <= 1.6 * case.meta["noise_std_hu"]


def test_ras_and_lps_cases_have_the_same_world_anatomy():
    ras = generate_case(21, orientation="RAS", healthy=True, **SMALL)
    lps = generate_case(21, orientation="LPS", healthy=True, **SMALL)
    assert ras.affine[0, 0] > 0 and lps.affine[0, 0] < 0 and lps.affine[1, 1] < 0
    assert not np.array_equal(ras.labels, lps.labels)
    assert np.array_equal(ras.labels, lps.labels[::-1, ::-1, :])
    for name in ("liver", "spleen", "aorta", "bladder"):
        a, b = centroid_mm(ras, CLASSES[name]), centroid_mm(lps, CLASSES[name])
        assert np.allclose(a, b, atol=1e-6), name
    assert centroid_mm(ras, CLASSES["liver"])[0] > 0 and centroid_mm(lps, CLASSES["liver"])[0] > 0


def test_orientation_drawn_from_seed_gives_both():
    seen = {generate_case(s, healthy=True, shape=(40, 40, 32), spacing=(9.6, 9.6, 10.0)).meta["orientation"]
            for s in range(8)}
    assert seen == {"RAS", "LPS"}


def test_case_to_case_variation():
    a = generate_case(1, healthy=True, **SMALL)
    b = generate_case(2, healthy=True, **SMALL)
    va = (a.labels == CLASSES["liver"]).sum()
    vb = (b.labels == CLASSES["liver"]).sum()
    assert va != vb and a.meta["body_scale"] != b.meta["body_scale"]
