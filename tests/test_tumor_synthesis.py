"""Unit tests of the tumor_synthesis bundle's transforms (SynthesizeTumor / SynthesizeTumord)."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "tumor_synthesis"
sys.path.insert(0, str(BUNDLE))

from tumor_synth import (  # noqa: E402
    SynthesizeTumor,
    SynthesizeTumord,
    SynthesizeTumorD,
    SynthesizeTumorDict,
    diameter_range_mm,
    get_preset,
    lesion_records,
    validate_preset,
)
from tumor_synth.testing import make_abdomen  # noqa: E402

LIVER, LIVER_TUMOR = 6, 27


def one_lesion_preset(organ: str = "liver", size: str = "small") -> dict:
    preset = copy.deepcopy(get_preset(organ))
    preset["size_classes"][size]["count"] = [1, 1]
    return preset


def as_type(x: np.ndarray, kind: str, spacing=(1.0, 1.0, 1.0)):
    if kind == "numpy":
        return x.copy()
    if kind == "torch":
        return torch.as_tensor(x.copy())
    return MetaTensor(torch.as_tensor(x.copy()), affine=torch.diag(torch.tensor([*spacing, 1.0], dtype=torch.float64)))


def to_np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


@pytest.mark.parametrize("kind", ["numpy", "torch", "meta"])
@pytest.mark.parametrize("size", ["tiny", "small", "medium"])
def test_lesions_inside_organ_with_label_and_size(kind, size):
    spacing = (1.5, 1.5, 1.5)
    img, lab = make_abdomen((64, 64, 48), spacing, seed=1)
    t = SynthesizeTumor("liver", size_class=size, spacing=spacing)
    t.set_random_state(3)
    out_img, out_lab = t(as_type(img, kind, spacing), as_type(lab, kind, spacing))
    assert type(out_img) is type(as_type(img, kind)) and type(out_lab) is type(as_type(lab, kind))
    o_lab, o_img = to_np(out_lab), to_np(out_img)
    tumor = o_lab == LIVER_TUMOR
    assert tumor.any()
    assert set(np.unique(o_lab)) <= {0, LIVER, LIVER_TUMOR}
    assert np.all(lab[tumor] == LIVER), "tumor voxels must lie in the original organ"
    assert np.array_equal(o_img[lab != LIVER], img[lab != LIVER]), "only organ voxels may change"
    lo, hi = diameter_range_mm(get_preset("liver"), size)
    assert t.last_lesions
    for rec in t.last_lesions:
        assert lo <= rec["diameter_mm"] <= hi
        assert rec["size_class"] == size and rec["tumor_label"] == LIVER_TUMOR
        assert rec["equivalent_diameter_mm"] <= 1.3 * hi
    # lesions clipped by the organ boundary get smaller; unclipped ones stay close to the nominal size
    ratios = [r["equivalent_diameter_mm"] / r["diameter_mm"] for r in t.last_lesions]
    assert max(ratios) > 0.6


def test_hu_shift_in_preset_range():
    preset = one_lesion_preset("liver", "small")
    img, lab = make_abdomen((64, 64, 64), (1.0, 1.0, 1.0), seed=2)
    ranges = {m["name"]: m["hu_shift"] for m in preset["intensity"]}
    for seed in range(6):
        t = SynthesizeTumor(preset, size_class="small", spacing=(1, 1, 1))
        t.set_random_state(seed)
        out_img, out_lab = t(img, lab)
        (rec,) = t.last_lesions
        lo, hi = ranges[rec["attenuation"]]
        assert lo <= rec["hu_shift"] <= hi
        diff = (out_img - img)[out_lab == LIVER_TUMOR]
        ratio = diff.mean() / rec["hu_shift"]
        assert 0.6 < ratio < 1.2, (seed, ratio)
        assert abs(rec["contrast_hu"] - diff.mean()) < 5.0
        assert abs(rec["organ_hu"] - 100.0) < 5.0


def test_metadata_recorded_in_metatensor_and_records():
    spacing = (1.2, 1.2, 2.0)
    img, lab = make_abdomen((64, 64, 40), spacing, seed=3)
    affine = torch.diag(torch.tensor([*spacing, 1.0], dtype=torch.float64))
    affine[:3, 3] = torch.tensor([-10.0, 5.0, 100.0])
    mimg = MetaTensor(torch.as_tensor(img), affine=affine, meta={"filename_or_obj": "case.nii.gz"})
    mlab = MetaTensor(torch.as_tensor(lab), affine=affine.clone())
    t = SynthesizeTumor("liver", size_class="tiny")
    t.set_random_state(0)
    out_img, out_lab = t(mimg, mlab)
    assert isinstance(out_img, MetaTensor) and isinstance(out_lab, MetaTensor)
    assert out_img.meta["filename_or_obj"] == "case.nii.gz"
    assert torch.allclose(out_img.affine, affine)
    recs = lesion_records(out_img)
    assert recs == lesion_records(out_lab) == json.loads(json.dumps(t.last_lesions))
    assert 3 <= len(recs) <= 10
    for rec in recs:
        for key in ("centre_vox", "centre_mm", "diameter_mm", "mean_hu", "organ_hu", "contrast_hu", "size_class"):
            assert key in rec
        ijk = np.round(rec["centre_vox"]).astype(int)
        assert to_np(out_lab)[0][tuple(ijk)] == LIVER_TUMOR
        expect = (affine.numpy() @ np.array([*rec["centre_vox"], 1.0]))[:3]
        assert np.allclose(rec["centre_mm"], expect, atol=1e-2)
    # the input was not modified
    assert np.array_equal(to_np(mimg), img)


@pytest.mark.parametrize("kind", ["numpy", "torch", "meta"])
def test_organ_absent_returns_input_unchanged(kind):
    img, lab = make_abdomen((32, 32, 32), (1, 1, 1), seed=4)
    lab[:] = 0
    t = SynthesizeTumor("liver", spacing=(1, 1, 1))
    i_in, l_in = as_type(img, kind), as_type(lab, kind)
    out_img, out_lab = t(i_in, l_in)
    assert out_img is i_in and out_lab is l_in
    assert np.array_equal(to_np(out_img), img) and np.array_equal(to_np(out_lab), lab)
    assert t.last_lesions == []
    if kind == "meta":
        assert lesion_records(out_img) == []


def test_pancreas_preset_on_liver_only_volume_is_noop():
    img, lab = make_abdomen((32, 32, 32), (1, 1, 1), seed=5)
    out_img, out_lab = SynthesizeTumor("pancreas", spacing=(1, 1, 1))(img, lab)
    assert np.array_equal(out_img, img) and np.array_equal(out_lab, lab)


def test_prob_zero_is_noop_and_records_empty_meta():
    img, lab = make_abdomen((32, 32, 32), (1, 1, 1), seed=4)
    mimg, mlab = as_type(img, "meta"), as_type(lab, "meta")
    out_img, out_lab = SynthesizeTumor("liver", prob=0.0)(mimg, mlab)
    assert np.array_equal(to_np(out_img), img)
    assert out_img.meta["synthetic_tumors"] == "[]"


def test_determinism_same_seed_same_output():
    img, lab = make_abdomen((48, 48, 48), (1, 1, 1), seed=6)
    outs = []
    for seed in (11, 11, 12):
        t = SynthesizeTumor("liver", spacing=(1, 1, 1))
        t.set_random_state(seed)
        outs.append(t(img, lab))
    assert np.array_equal(outs[0][0], outs[1][0]) and np.array_equal(outs[0][1], outs[1][1])
    assert not np.array_equal(outs[0][0], outs[2][0])


def test_anisotropic_spacing_sizes_in_mm():
    spacing = (0.8, 0.8, 2.5)
    img, lab = make_abdomen((80, 80, 26), spacing, seed=7)
    t = SynthesizeTumor(one_lesion_preset("liver", "small"), size_class="small", spacing=spacing)
    t.set_random_state(1)
    _, out_lab = t(img, lab)
    (rec,) = t.last_lesions
    idx = np.nonzero(out_lab[0] == LIVER_TUMOR)
    extent_mm = [(i.max() - i.min() + 1) * s for i, s in zip(idx, spacing)]
    # a 12-20 mm lesion spans 12-30 mm along every axis, whatever the voxel size
    assert all(8 <= e <= 32 for e in extent_mm), extent_mm
    assert 12 <= rec["diameter_mm"] <= 20
    assert rec["volume_mm3"] == pytest.approx(rec["n_voxels"] * 0.8 * 0.8 * 2.5, rel=1e-3)


def test_int16_image_and_uint8_label():
    img, lab = make_abdomen((48, 48, 48), (1, 1, 1), seed=8)
    img16 = np.rint(img).astype(np.int16)
    out_img, out_lab = SynthesizeTumor("liver", size_class="small", spacing=(1, 1, 1))(img16, lab)
    assert out_img.dtype == np.int16 and out_lab.dtype == np.uint8
    assert (out_lab == LIVER_TUMOR).any()


def test_vessels_avoided():
    img, lab = make_abdomen((64, 64, 48), (1, 1, 1), seed=9, vessel=15)
    vessel = lab == 15
    for seed in range(3):
        t = SynthesizeTumor("liver", size_class="small", spacing=(1, 1, 1))
        t.set_random_state(seed)
        _, out_lab = t(img, lab)
        assert np.array_equal(out_lab == 15, vessel)


@pytest.mark.parametrize("organ,labels,tumor", [("kidney", (2, 3), 26), ("pancreas", (11,), 28)])
def test_other_organ_presets(organ, labels, tumor):
    organs = {v: ((0.3 + 0.4 * i, 0.5, 0.5), (12.0, 10.0, 14.0), 150.0) for i, v in enumerate(labels)}
    img, lab = make_abdomen((64, 48, 40), (1, 1, 1), organs=organs, seed=10)
    t = SynthesizeTumor(organ, size_class="tiny", spacing=(1, 1, 1))
    t.set_random_state(0)
    _, out_lab = t(img, lab)
    assert (out_lab == tumor).any()
    assert np.all(np.isin(lab[out_lab == tumor], labels))
    assert all(r["tumor_label"] == tumor and r["organ"] == organ for r in t.last_lesions)


def test_dictionary_transform_and_aliases():
    assert SynthesizeTumorD is SynthesizeTumord and SynthesizeTumorDict is SynthesizeTumord
    img, lab = make_abdomen((48, 48, 48), (1, 1, 1), seed=11)
    data = {"image": as_type(img, "meta"), "label": as_type(lab, "meta")}
    outs = []
    for _ in range(2):
        t = SynthesizeTumord(keys="image", label_key="label", organ="liver", prob=1.0)
        t.set_random_state(5)
        outs.append(t(dict(data)))
    assert torch.equal(outs[0]["image"], outs[1]["image"]) and torch.equal(outs[0]["label"], outs[1]["label"])
    recs = lesion_records(outs[0]["synthetic_tumors"])
    assert recs and recs == lesion_records(outs[0]["image"])
    assert np.array_equal(to_np(data["image"]), img), "input dictionary arrays must stay unchanged"


def test_bad_inputs_raise_clear_errors():
    img, lab = make_abdomen((32, 32, 32), (1, 1, 1))
    with pytest.raises(ValueError, match="same spatial size"):
        SynthesizeTumor("liver", spacing=(1, 1, 1))(img, lab[:, :16])
    with pytest.raises(ValueError, match="no tumor preset named 'spleen'"):
        SynthesizeTumor("spleen")
    bad = copy.deepcopy(get_preset("liver"))
    bad["size_classes"]["tiny"]["count"] = [5, 2]
    with pytest.raises(ValueError, match="size_classes.tiny.count"):
        validate_preset(bad)
    with pytest.raises(KeyError, match="label key 'seg'"):
        SynthesizeTumord(keys="image", label_key="seg")({"image": img})


def test_large_lesion_may_enclose_vessels_but_never_paints_them():
    img, lab = make_abdomen((64, 64, 48), (2.0, 2.0, 2.0), seed=12, vessel=15)
    t = SynthesizeTumor("liver", size_class="large", spacing=(2.0, 2.0, 2.0))
    t.set_random_state(0)
    out_img, out_lab = t(img, lab)
    assert t.last_lesions, "a large lesion is placed even in a vessel-rich organ"
    vessel = lab == 15
    assert np.array_equal(out_lab == 15, vessel)
    assert np.array_equal(out_img[vessel], img[vessel])


def test_optional_mass_effect_moves_surrounding_tissue():
    preset = one_lesion_preset("liver", "medium")
    preset["mass_effect"] = {"probability": 1.0, "strength": [0.3, 0.3]}
    organs = {6: ((0.5, 0.5, 0.5), (22.0, 22.0, 18.0), 100.0)}
    img, lab = make_abdomen((48, 48, 40), (1.5, 1.5, 1.5), organs=organs, seed=13)
    t = SynthesizeTumor(preset, size_class="medium", spacing=(1.5, 1.5, 1.5))
    t.set_random_state(2)
    _, out_lab = t(img, lab)
    (rec,) = t.last_lesions
    assert rec["mass_effect_strength"] == pytest.approx(0.3)
    assert set(np.unique(out_lab)) <= {0, LIVER, LIVER_TUMOR}
    moved = (out_lab != LIVER_TUMOR) & (out_lab != lab)
    assert moved.any(), "the organ boundary is pushed outwards (labels other than the tumor change)"
    # without mass effect only tumor voxels change
    preset["mass_effect"]["probability"] = 0.0
    t = SynthesizeTumor(preset, size_class="medium", spacing=(1.5, 1.5, 1.5))
    t.set_random_state(2)
    _, plain = t(img, lab)
    assert not ((plain != LIVER_TUMOR) & (plain != lab)).any()
