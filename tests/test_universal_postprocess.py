"""Post-processing rules, inversion to the original grid, prompts and writer conventions of the universal bundle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from universal_helpers import BUNDLE  # noqa: F401  (puts the bundle on sys.path)
from universal_model.postprocess import (
    AnatomicalPostProcessd,
    SigmoidThresholdd,
    assign_left_right,
    body_midline,
    largest_component,
    major_components,
    remove_small_components,
    restrict_lesions,
)
from universal_model.prompts import resolve_prompts
from universal_model.spatial import resample_mask_nearest
from universal_model.writer import SaveAbdomenAtlasd, combine_labels

RAS = np.diag([1.0, 1.0, 1.0, 1.0])
LPS_AXES = np.diag([-1.0, -1.0, 1.0, 1.0])  # voxel axes towards L, P, S; world still RAS (what MONAI readers give)


def _box(shape, lo, hi):
    m = np.zeros(shape, np.uint8)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = 1
    return m


def test_largest_component_keeps_biggest():
    m = _box((20, 20, 20), (2, 2, 2), (8, 8, 8)) | _box((20, 20, 20), (12, 12, 12), (14, 14, 14))
    out = largest_component(m)
    assert out.sum() == 6**3 and out[13, 13, 13] == 0 and out.dtype == np.uint8


def test_major_components_keeps_pieces_of_a_broken_tube_and_drops_blobs():
    """A colon cut in two pieces (216 and 144 voxels) keeps both at fraction 0.3; an 8-voxel blob goes."""
    shape = (30, 10, 10)
    piece_a, piece_b = _box(shape, (2, 2, 2), (8, 8, 8)), _box(shape, (12, 2, 2), (18, 6, 8))
    blob = _box(shape, (25, 2, 2), (27, 4, 4))
    out = major_components(piece_a | piece_b | blob, 0.3)
    np.testing.assert_array_equal(out, piece_a | piece_b)
    np.testing.assert_array_equal(major_components(piece_a | piece_b | blob, 1.0), piece_a)  # largest only
    t = AnatomicalPostProcessd("pred", major_components=["colon"], major_component_fraction=0.7)
    masks = np.stack([piece_a | piece_b | blob, piece_a | blob])  # colon (18), intestine (19): rule not asked for
    t.apply(masks, [18, 19], RAS)
    np.testing.assert_array_equal(masks[0], piece_a)  # 144 < 0.7 x 216
    np.testing.assert_array_equal(masks[1], piece_a | blob)
    with pytest.raises(ValueError, match="major_component_fraction"):
        AnatomicalPostProcessd("pred", major_components=["colon"], major_component_fraction=0.0)
    with pytest.raises(ValueError, match="unknown class"):
        AnatomicalPostProcessd("pred", major_components=["colonn"])


@pytest.mark.parametrize("affine, space", [(RAS, "RAS"), (LPS_AXES, "RAS"), (np.diag([1.0, 1, 1, 1]), "LPS")])
def test_left_right_by_position(affine, space):
    """Two kidneys, both predicted as 'right'; the one towards the patient's left must become left."""
    shape = (30, 10, 10)
    low_x = _box(shape, (2, 2, 2), (8, 8, 8))  # small first index
    high_x = _box(shape, (20, 2, 2), (26, 8, 8))
    right, left = assign_left_right(low_x | high_x, np.zeros(shape, np.uint8), affine, space)
    # world x of voxel i is affine[0,0]*i: RAS world -> patient left is -x; LPS world -> +x
    left_is_low_index = (affine[0, 0] > 0) == (space == "RAS")
    expected_left = low_x if left_is_low_index else high_x
    np.testing.assert_array_equal(left, expected_left)
    np.testing.assert_array_equal(right, (low_x | high_x) - expected_left)


def test_left_right_single_component_keeps_majority_side_and_drops_specks():
    shape = (30, 10, 10)
    organ = _box(shape, (2, 2, 2), (10, 8, 8))
    speck = _box(shape, (25, 5, 5), (26, 6, 6))
    left_pred = organ.copy()
    left_pred[2:4] = 0
    right_pred = organ - left_pred
    right, left = assign_left_right(right_pred | speck, left_pred, RAS, "RAS", min_fraction=0.1)
    np.testing.assert_array_equal(left, organ)
    assert right.sum() == 0


@pytest.mark.parametrize("affine, space", [(RAS, "RAS"), (LPS_AXES, "RAS"), (np.diag([1.0, 1, 1, 1]), "LPS")])
def test_body_midline_and_merged_pair_split_at_it(affine, space):
    """Two lungs touching at the midline, all predicted as 'left': the body's midline cuts them back into two."""
    shape = (60, 20, 20)
    body = np.zeros(shape, np.float32)
    body[10:50, 2:18, 2:18] = 0.6  # body occupies voxel rows 10..49: its mid-plane lies between rows 29 and 30
    body[10:12] = 0.0  # a few voxels less on one side must not move it by more than a voxel
    midline = body_midline(body, affine, space, threshold=0.0, stride=1)
    left_axis = -1.0 if space == "RAS" else 1.0
    row_of = (midline / (left_axis * affine[0, 0]))  # world = affine[0,0] * row along x
    assert 29.0 <= row_of <= 31.0
    lung_a, lung_b = _box(shape, (15, 5, 5), (30, 15, 15)), _box(shape, (30, 5, 5), (45, 15, 15))  # one piece
    right, left = assign_left_right(np.zeros(shape, np.uint8), lung_a | lung_b, affine, space, midline=midline)
    left_is_low_index = (affine[0, 0] > 0) == (space == "RAS")
    expected_left, expected_right = (lung_a, lung_b) if left_is_low_index else (lung_b, lung_a)
    assert (left & expected_left).sum() >= 0.9 * expected_left.sum() and (left & expected_right).sum() <= 150
    assert (right & expected_right).sum() >= 0.9 * expected_right.sum() and (right & left).sum() == 0
    # without the midline the merged piece stays on one side (the rule the midline replaces)
    right_c, left_c = assign_left_right(np.zeros(shape, np.uint8), lung_a | lung_b, affine, space)
    assert right_c.sum() == 0 and left_c.sum() == (lung_a | lung_b).sum()
    assert body_midline(np.zeros(shape), affine, space) is None


def test_midline_split_keeps_a_single_organ_and_drops_a_speck():
    """One kidney (the other removed) stays whole on its side; a speck across the midline is dropped."""
    shape = (60, 20, 20)
    kidney = _box(shape, (8, 5, 5), (20, 15, 15))
    speck = _box(shape, (40, 8, 8), (41, 9, 9))
    right, left = assign_left_right(kidney, speck, RAS, "RAS", min_fraction=0.1, midline=-30.0)
    np.testing.assert_array_equal(left, kidney)  # RAS world: -x is the patient's left, so rows < 30 are left
    assert right.sum() == 0


def test_lesions_outside_host_removed_and_min_size():
    shape = (40, 40, 40)
    liver = _box(shape, (5, 5, 5), (20, 20, 20))
    inside = _box(shape, (8, 8, 8), (12, 12, 12))  # 64 voxels
    near = _box(shape, (21, 8, 8), (23, 12, 12))  # 1-2 voxels outside: within 5 mm dilation
    far = _box(shape, (30, 30, 30), (35, 35, 35))
    kept = restrict_lesions(inside | near | far, liver, (1.0, 1.0, 1.0), dilation_mm=5.0)
    assert kept[10, 10, 10] and kept[22, 10, 10] and not kept[32, 32, 32]
    tiny = _box(shape, (15, 15, 15), (16, 16, 17))  # 2 voxels
    out = remove_small_components(inside | tiny, min_voxels=10)
    assert out[10, 10, 10] == 1 and out[15, 15, 15] == 0


def test_anatomical_postprocess_transform_end_to_end():
    shape = (30, 30, 30)
    liver = _box(shape, (2, 2, 2), (15, 15, 15)) | _box(shape, (25, 25, 25), (27, 27, 27))
    tumor_in = _box(shape, (5, 5, 5), (9, 9, 9))
    tumor_out = _box(shape, (20, 2, 20), (28, 6, 28))
    tumor_small = _box(shape, (12, 12, 12), (13, 13, 13))
    masks = np.stack([liver, tumor_in | tumor_out | tumor_small])
    from monai.data import MetaTensor

    t = AnatomicalPostProcessd("pred", largest_component=["liver"], lesion_host_dilation_mm=2.0,
                               min_lesion_volume_mm3=8 * 1.5**3)
    d = t({"pred": MetaTensor(torch.from_numpy(masks), affine=torch.diag(torch.tensor([1.5, 1.5, 1.5, 1.0]))),
           "pred_classes": [6, 27]})
    out = d["pred"].numpy()
    assert out[0, 26, 26, 26] == 0 and out[0, 5, 5, 5] == 1  # liver: largest piece only
    assert out[1, 6, 6, 6] == 1  # tumor inside the liver kept
    assert out[1, 24, 4, 24] == 0  # tumor far outside removed
    assert out[1, 12, 12, 12] == 0  # 1-voxel tumor below the minimum size


def test_min_organ_volume_clears_small_organs_only():
    """Prostate (22) under 2 ml is cleared with a note; a bigger prostate and other classes are untouched."""
    shape = (40, 40, 40)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])  # 8 mm^3 voxels: 2 ml = 250 voxels
    t = AnatomicalPostProcessd("pred", min_organ_volume_ml={"prostate": 2.0})
    stray = _box(shape, (5, 5, 5), (10, 10, 10))  # 125 voxels = 1 ml
    organ = _box(shape, (5, 5, 5), (12, 12, 12))  # 343 voxels = 2.7 ml
    masks = np.stack([stray, stray.copy()])  # prostate, spleen
    notes = t.apply(masks, [22, 1], affine)
    assert masks[0].sum() == 0 and masks[1].sum() == 125
    assert len(notes) == 1 and "prostate" in notes[0]
    masks = np.stack([organ, stray])
    assert t.apply(masks, [22, 1], affine) == [] and masks[0].sum() == 343
    with pytest.raises(ValueError, match="liver_tumor"):
        AnatomicalPostProcessd("pred", min_organ_volume_ml={"liver_tumor": 1.0})
    with pytest.raises(ValueError, match="prostrate"):
        AnatomicalPostProcessd("pred", min_organ_volume_ml={"prostrate": 1.0})


def test_sigmoid_threshold_and_subset_channels():
    logits = torch.tensor([-3.0, 3.0, 0.1, -0.1]).reshape(2, 2, 1, 1).repeat(1, 1, 2, 2)
    d = SigmoidThresholdd("pred", class_indices=[5, 26], threshold={"default": 0.5, "liver_tumor": 0.9})(
        {"pred": logits.clone()})
    assert d["pred_classes"] == [6, 27] and d["pred"].dtype == torch.uint8
    assert int(d["pred"][0].sum()) == 4 and int(d["pred"][1].sum()) == 0  # sigmoid(0.1) = 0.52 < 0.9


def test_exclusive_kinds_give_each_voxel_one_organ_and_leave_lesions_alone():
    """Spleen (1), liver (6), femur_right (24) compete; liver_tumor (27) stays independent of them."""
    rng = np.random.default_rng(3)
    logits = torch.from_numpy(rng.normal(0.0, 2.0, (4, 6, 5, 4)).astype(np.float32))
    classes = [0, 5, 23, 26]
    thresholds = {"default": 0.5, "femur_right": 0.8}
    exclusive = SigmoidThresholdd("pred", class_indices=classes, threshold=thresholds,
                                  exclusive_kinds=["organ", "bone"])({"pred": logits.clone()})["pred"].numpy()
    independent = SigmoidThresholdd("pred", class_indices=classes, threshold=thresholds)(
        {"pred": logits.clone()})["pred"].numpy()
    p = torch.sigmoid(logits).numpy()
    above = p >= np.array([0.5, 0.5, 0.8, 0.5])[:, None, None, None]
    np.testing.assert_array_equal(independent, above)
    np.testing.assert_array_equal(exclusive[3], above[3])  # lesion untouched
    assert exclusive[:3].sum(0).max() == 1 and (above[:3].sum(0) > 1).any()  # overlaps existed and were resolved
    scored = np.where(above[:3], p[:3], -1.0)
    winner = np.argmax(scored, axis=0)
    for c in range(3):
        np.testing.assert_array_equal(exclusive[c], above[:3].any(0) & (winner == c))


def test_exempt_class_stays_independent():
    """Hepatic vessel (15) inside the liver (6): exempt, both keep the voxels where both are likely."""
    logits = torch.full((2, 3, 3, 3), 2.0)
    logits[1] = 1.0
    t = SigmoidThresholdd("pred", class_indices=[5, 14], exclusive_kinds=["organ", "vessel"],
                          exclusive_exempt=["hepatic_vessel"])
    out = t({"pred": logits.clone()})["pred"]
    assert int(out.sum()) == 2 * 27
    strict = SigmoidThresholdd("pred", class_indices=[5, 14], exclusive_kinds=["organ", "vessel"])
    out = strict({"pred": logits.clone()})["pred"]
    assert int(out[0].sum()) == 27 and int(out[1].sum()) == 0


def test_misspelt_threshold_key_is_an_error():
    """A threshold for "liver_tumour" must not silently fall back to the default."""
    with pytest.raises(ValueError, match="threshold keys.*liver_tumour"):
        SigmoidThresholdd("pred", threshold={"default": 0.5, "liver_tumour": 0.9})


def test_exclusive_settings_must_name_the_label_space():
    with pytest.raises(ValueError, match="exclusive_kinds.*tissue"):
        SigmoidThresholdd("pred", exclusive_kinds=["tissue"])
    with pytest.raises(ValueError, match="exclusive_exempt.*portal_vein"):
        SigmoidThresholdd("pred", exclusive_kinds=["vessel"], exclusive_exempt=["portal_vein"])


@pytest.mark.parametrize("net_affine", [np.diag([1.5, 1.5, 1.5, 1.0]), np.array(
    [[0, 0, 1.5, -3.0], [-1.5, 0, 0, 10.0], [0, 1.5, 0, 2.0], [0, 0, 0, 1]])])
def test_resample_nearest_matches_world_positions(net_affine):
    """Each original voxel takes the network voxel whose centre is nearest in world space."""
    rng = np.random.default_rng(1)
    src = (rng.random((12, 14, 10)) > 0.5).astype(np.uint8)
    dst_affine = np.array([[-0.7, 0, 0, 8.0], [0, -0.9, 0, 12.0], [0, 0, 2.5, 1.0], [0, 0, 0, 1]])
    dst_shape = (20, 18, 7)
    out = resample_mask_nearest(src, net_affine, dst_affine, dst_shape)
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in dst_shape], indexing="ij"), -1).reshape(-1, 3)
    world = ijk @ dst_affine[:3, :3].T + dst_affine[:3, 3]
    vox = np.floor((world - net_affine[:3, 3]) @ np.linalg.inv(net_affine[:3, :3]).T + 0.5).astype(int)
    ok = np.all((vox >= 0) & (vox < src.shape), axis=1)
    expected = np.zeros(len(ijk), np.uint8)
    expected[ok] = src[tuple(vox[ok].T)]
    np.testing.assert_array_equal(out.reshape(-1), expected)


def test_combined_labels_lesions_over_organs():
    organ = np.ones((4, 4, 4), np.uint8)
    lesion = np.zeros_like(organ)
    lesion[1, 1, 1] = 1
    combined = combine_labels(np.stack([lesion, organ, organ]), [27, 6, 3], lesion_classes=[26, 27])
    assert combined[1, 1, 1] == 27 and combined[0, 0, 0] == 6  # lesion over organ; higher organ index wins


def test_rerun_with_fewer_classes_leaves_no_stale_mask(tmp_path):
    """All classes, then only the liver into the same folder: segmentations/ matches the last run's classes."""
    (tmp_path / "case_a" / "segmentations").mkdir(parents=True)
    (tmp_path / "case_a" / "segmentations" / "notes.txt").write_text("user file")
    masks = np.ones((32, 3, 3, 3), np.uint8)
    writer = SaveAbdomenAtlasd("pred", output_dir=str(tmp_path))
    writer({"pred": masks, "pred_classes": list(range(1, 33)), "case": "case_a"})
    seg = tmp_path / "case_a" / "segmentations"
    assert len(list(seg.glob("*.nii.gz"))) == 32
    writer({"pred": masks[5:6], "pred_classes": [6], "case": "case_a"})
    assert sorted(f.name for f in seg.iterdir()) == ["liver.nii.gz", "notes.txt"]


@pytest.mark.parametrize("prompt, expected", [
    ("['liver','liver tumor']", [5, 26]),
    (["Liver", "LIVER_TUMOR"], [5, 26]),
    ("Segment pancreatic tumors, if any", [10, 27]),
    (["kidneys"], [1, 2]),
    (["kidney cysts"], [1, 2, 31]),
    (None, None),
    ("all", None),
    ("organs", list(range(25))),
    (["lesions"], [1, 2, 5, 10, 15, 16, 17] + list(range(25, 32))),  # with the host organs: kidneys, liver, ...
    (["organs", "liver tumor"], list(range(25)) + [26]),
    ("Segment liver lesions", [5]),  # a group word inside a sentence does not expand
])
def test_prompts(prompt, expected):
    assert resolve_prompts(prompt) == expected


def test_unknown_prompt_error_lists_names():
    with pytest.raises(ValueError, match="unknown class 'brain'.*Spleen \\(spleen\\)"):
        resolve_prompts(["liver", "brain"])


@pytest.mark.parametrize("image_key", [None, "image"])
@pytest.mark.parametrize("orientation", ["RAS", "LPS"])
def test_left_right_through_the_pipeline(tmp_path, orientation, image_key):
    """Read -> Orientationd RAS -> Spacingd -> L/R rule -> back to the original grid, for RAS and LPS files."""
    from monai.transforms import Orientationd, Spacingd

    from universal_helpers import write_nifti
    from universal_model.io import LoadCTd
    from universal_model.spatial import InvertToOriginalSpaced

    shape = (30, 12, 10)
    vol = np.zeros(shape, np.int16)
    vol[2:8, 3:9, 2:8] = 1  # first voxel axis: towards R (RAS file) or towards L (LPS file)
    vol[20:26, 3:9, 2:8] = 1
    flip = -1.0 if orientation == "LPS" else 1.0
    affine = np.diag([flip * 1.2, flip * 0.9, 3.0, 1.0])
    path = write_nifti(tmp_path / "seg.nii.gz", vol, affine)
    d = LoadCTd("image", copy_to="original_ct")({"image": str(path)})
    d = Spacingd("image", pixdim=(1.5, 1.5, 1.5), mode="nearest")(Orientationd("image", axcodes="RAS")(d))
    right_pred = (d["image"][0] > 0.5).to(torch.uint8)
    from monai.data import MetaTensor

    pred = MetaTensor(torch.stack([right_pred, torch.zeros_like(right_pred)]), meta=d["image"].meta)
    d.update({"pred": pred, "pred_classes": [2, 3]})  # right kidney, left kidney
    d = AnatomicalPostProcessd("pred", paired_organs=[["kidney_right", "kidney_left"]], image_key=image_key)(d)
    out = InvertToOriginalSpaced("pred", ref_key="original_ct")(d)["pred"].numpy()
    assert out.shape[1:] == shape
    high_i_is_left = orientation == "LPS"
    low, high = (slice(2, 8), slice(3, 9), slice(2, 8)), (slice(20, 26), slice(3, 9), slice(2, 8))
    left_blob, right_blob = (high, low) if high_i_is_left else (low, high)
    assert out[1][left_blob].mean() > 0.9 and out[1][right_blob].sum() == 0
    assert out[0][right_blob].mean() > 0.9 and out[0][left_blob].sum() == 0


def test_lesion_report_diameter_and_host():
    """A 25 mm sphere inside the pancreas is reported as one 25 mm pancreas tumor."""
    from universal_model.report import lesion_records

    spacing = np.array([0.8, 0.8, 1.5])
    shape = (80, 80, 40)
    grid = np.stack(np.meshgrid(*[np.arange(s) * sp for s, sp in zip(shape, spacing)], indexing="ij"), -1)
    centre = np.array([32.0, 32.0, 30.0])
    tumor = (np.linalg.norm(grid - centre, axis=-1) <= 12.5).astype(np.uint8)
    pancreas = (np.linalg.norm(grid - centre, axis=-1) <= 20).astype(np.uint8)
    recs = lesion_records(tumor, np.diag([*spacing, 1.0]), {"Pancreas": pancreas}, "Pancreas Tumor")
    assert len(recs) == 1
    assert recs[0]["diameter_mm"] == pytest.approx(25.0, abs=1.6)
    assert recs[0]["host_organ"] == "Pancreas" and recs[0]["description"].startswith("Pancreas Tumor 1: 2")
    assert recs[0]["volume_ml"] == pytest.approx(4 / 3 * np.pi * 12.5**3 / 1000, rel=0.1)


def test_overview_gives_every_label_its_own_colour():
    from universal_model.overview import label_colormap

    cmap = label_colormap(32)
    colours = {cmap((v - 0.5) / 32.0) for v in range(1, 33)}  # how render_overview maps label v
    assert len(colours) == 32
