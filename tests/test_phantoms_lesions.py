"""The phantom's own lesion model: placement inside the host, size, attenuation, frequency."""
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "datasets"))

from phantom_ct import generate_case, load_label_space  # noqa: E402

SMALL = dict(shape=(128, 128, 80), spacing=(3.0, 3.0, 4.0))
CLASSES = {c["index"]: c for c in load_label_space()["classes"]}
LESIONS = [i for i, c in CLASSES.items() if c["kind"] == "lesion"]
SEEDS = range(100, 116)


@pytest.fixture(scope="module")
def cases():
    return [generate_case(s, **SMALL) for s in SEEDS]


def lesion_mask(case, lesion):
    """The connected component of the lesion's class that contains its centre (world mm)."""
    index = np.linalg.solve(case.affine, np.r_[lesion["centre_mm"], 1.0])[:3]
    voxel = tuple(int(round(v)) for v in index)
    components, _ = ndimage.label(case.labels == lesion["class_index"], structure=np.ones((3, 3, 3)))
    label = components[voxel]
    assert label > 0, f"lesion centre {lesion['centre_mm']} is not inside a {lesion['class_name']} voxel"
    return components == label


def max_extent_mm(mask, affine):
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    idx = np.argwhere(mask)
    return float(((idx.max(axis=0) - idx.min(axis=0) + 1) * spacing).max())


def test_lesions_lie_inside_their_host_and_match_meta(cases):
    checked = 0
    for case in cases:
        spacing = np.sqrt((case.affine[:3, :3] ** 2).sum(axis=0))
        for lesion in case.meta["lesions"]:
            mask = lesion_mask(case, lesion)
            assert lesion["host_index"] in CLASSES[lesion["class_index"]]["host_organs"]
            assert np.all(case.organ_labels[mask] == lesion["host_index"]), "lesion leaves its host organ"
            assert abs(max_extent_mm(mask, case.affine) - lesion["diameter_mm"]) <= spacing.max() + 1e-6
            assert 3.0 <= lesion["diameter_mm"] <= 50.0 + spacing.max()
            inner = ndimage.binary_erosion(mask)
            inner = inner if inner.any() else mask
            assert abs(float(case.ct[inner].mean()) - lesion["mean_hu"]) < 0.6
            checked += 1
    assert checked >= 5


def test_lesion_voxels_are_exactly_the_lesions(cases):
    for case in cases:
        lesion_voxels = np.isin(case.labels, LESIONS)
        expected = sum(l["voxels"] for l in case.meta["lesions"])
        assert int(lesion_voxels.sum()) == expected


def test_cysts_are_near_water_and_counts_are_bounded(cases):
    for case in cases:
        assert len(case.meta["lesions"]) <= 3
        for lesion in case.meta["lesions"]:
            if lesion["class_name"] == "Kidney Cyst" and lesion["diameter_mm"] >= 10:
                assert -10 <= lesion["mean_hu"] <= 25, lesion


def test_liver_and_kidney_lesions_are_common_but_not_universal(cases):
    liver = [any(l["host_index"] == 6 for l in c.meta["lesions"]) for c in cases]
    kidney = [any(l["host_index"] in (2, 3) for l in c.meta["lesions"]) for c in cases]
    assert any(liver) and not all(liver)
    assert any(kidney) and not all(kidney)
    assert any(not c.meta["lesions"] for c in cases)


def test_healthy_case_has_no_lesions():
    case = generate_case(101, healthy=True, **SMALL)
    assert case.meta["lesions"] == []
    assert not np.isin(case.labels, LESIONS).any()


def test_lesion_world_centre_is_consistent_across_orientations():
    ras = generate_case(104, orientation="RAS", **SMALL)
    lps = generate_case(104, orientation="LPS", **SMALL)
    assert [l["centre_mm"] for l in ras.meta["lesions"]] == [l["centre_mm"] for l in lps.meta["lesions"]]
