"""The lesion stage of the universal bundle: inputs, loss, the refining transform, and its configs through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor

from universal_helpers import TINY_NET_ARGS, make_tiny_model
from universal_train_data import BUNDLE, write_case
from universal_model.label_space import load_label_space
from universal_model.lesion_stage import LesionStage, RefineLesionsd, stage_inputs
from universal_model.lesion_stage_training import (CropSampler, HostBoxes, _lr_factor, perturb_host, stage_loss,
                                                   train_lesion_stage)

LABEL_SPACE = load_label_space(BUNDLE / "configs" / "label_space.json")
CLASSES = ["liver_tumor", "kidney_tumor", "kidney_cyst"]
LIVER, R_KIDNEY, L_KIDNEY, SPLEEN, LIVER_TUMOR, KIDNEY_TUMOR, KIDNEY_CYST = 6, 2, 3, 1, 27, 26, 32
# masks of write_case's label map in the AbdomenAtlas layout (hosts include their lesions)
SEGMENTATIONS = {"liver": (6, 27), "kidney_right": (2,), "kidney_left": (3, 26), "liver_tumor": (27,),
                 "kidney_tumor": (26,), "spleen": (1,)}


def write_atlas_case(folder: Path, seed: int) -> Path:
    """A tiny case (``universal_train_data.write_case``) with its ``segmentations/`` folder."""
    write_case(folder, seed)
    lab = nib.load(folder / "combined_labels.nii.gz")
    arr = np.asarray(lab.dataobj)
    for name, values in SEGMENTATIONS.items():
        out = folder / "segmentations" / f"{name}.nii.gz"
        out.parent.mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(np.isin(arr, values).astype(np.uint8), lab.affine), out)
    return folder


def dark_spot_network() -> torch.nn.Module:
    """A 1x1x1 convolution that fires (logit > 0) on all three channels where HU is 20 or more below the host."""
    net = torch.nn.Conv3d(3, 3, 1)
    with torch.no_grad():
        net.weight.zero_()
        net.weight[:, 0] = -100.0
        net.bias.fill_(-15.0)
    return net


def test_stage_inputs_are_relative_to_the_host():
    hu = np.full((6, 6, 6), 60.0, np.float32)
    hu[0] = 400.0  # outside the window
    host = np.zeros(hu.shape, np.uint8)
    host[2:5, 2:5, 2:5] = 1
    hu[3, 3, 3] = 10.0
    x = stage_inputs(hu, host)
    assert x.shape == (3, 6, 6, 6) and x.dtype == np.float32
    assert x[0, 3, 3, 3] == pytest.approx(-0.5) and x[0, 2, 2, 2] == pytest.approx(0.0)
    assert x[0, 0, 0, 0] == pytest.approx((250.0 - 60.0) / 100.0)  # clipped to the window first
    assert x[1, 0, 0, 0] == pytest.approx(1.0) and x[1, 2, 2, 2] == pytest.approx(235.0 / 425.0)
    np.testing.assert_array_equal(x[2], host)
    with pytest.raises(ValueError, match="host mask is empty"):
        stage_inputs(hu, np.zeros_like(host))


def test_stage_loss_ignores_channels_the_host_does_not_host():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, 8, requires_grad=True)
    target = torch.zeros(2, 3, 8, 8, 8)
    target[0, 0, 2:4, 2:4, 2:4] = 1
    host = torch.zeros(2, 1, 8, 8, 8)
    host[:, :, 2:6, 2:6, 2:6] = 1
    valid = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])  # a liver box, then a kidney box
    loss, parts = stage_loss(logits, target, valid, host)
    loss.backward()
    g = logits.grad
    assert g[0, 1:].abs().sum() == 0 and g[1, 0].abs().sum() == 0
    assert g[0, 0].abs().sum() > 0 and g[1, 1:].abs().sum() > 0
    assert set(parts) == {"voxel", "dice", "case"}
    # only voxels of the host dilated by one voxel count
    assert g[0, 0, 0, 0, 0] == 0 and g[0, 0, 7, 3, 3] == 0 and g[0, 0, 1, 3, 3] != 0


def test_stage_loss_prices_a_single_false_peak_in_a_lesion_free_crop():
    host = torch.ones(1, 1, 8, 8, 8)
    target = torch.zeros(1, 1, 8, 8, 8)
    valid = torch.ones(1, 1)
    quiet = torch.full((1, 1, 8, 8, 8), -6.0)
    peak = quiet.clone()
    peak[0, 0, 4, 4, 4] = 6.0
    parts_quiet = stage_loss(quiet, target, valid, host)[1]
    parts_peak = stage_loss(peak, target, valid, host)[1]
    # one voxel in 512 barely moves the voxel mean, but it is the crop's decision
    assert parts_peak["voxel"] - parts_quiet["voxel"] < 0.02
    assert parts_peak["case"] - parts_quiet["case"] > 5.0


def _case_masks():
    """uint8 masks [liver, right kidney, liver tumour, kidney tumour, spleen] on a 24^3 grid, and the HU image."""
    shape = (24, 24, 24)
    hu = np.full(shape, -100.0, np.float32)
    masks = np.zeros((5,) + shape, np.uint8)
    masks[0, 2:14, 2:14, 2:14] = 1  # liver at 60 HU
    hu[2:14, 2:14, 2:14] = 60.0
    hu[5:8, 5:8, 5:8] = 10.0  # a dark lesion in the liver (27 voxels)
    hu[11, 11, 11] = 10.0  # a single dark voxel: below the minimum lesion size
    masks[1, 16:22, 16:22, 16:22] = 1  # right kidney at 150 HU, no lesion
    hu[16:22, 16:22, 16:22] = 150.0
    masks[2, 20:22, 2:4, 2:4] = 1  # the generated head's liver-tumour mask (to be replaced)
    masks[3, 17:19, 17:19, 17:19] = 1  # the generated head's kidney-tumour mask (to be replaced: empty)
    masks[4, 16:20, 2:6, 16:20] = 1  # spleen: not a host of the stage's classes
    hu[16:20, 2:6, 16:20] = 0.0
    return hu, masks


def _stage(**kw):
    return LesionStage(dark_spot_network(), CLASSES, LABEL_SPACE, roi_size=(16, 16, 16), margin=2, **kw)


def _meta(masks, spacing=3.0):
    return MetaTensor(torch.from_numpy(masks), affine=torch.diag(torch.tensor([spacing] * 3 + [1.0])))


def test_refine_replaces_the_prompted_lesions_inside_their_hosts():
    hu, masks = _case_masks()
    image = torch.from_numpy((np.clip(hu, -175, 250) + 175) / 425)[None]
    classes = [LIVER, R_KIDNEY, LIVER_TUMOR, KIDNEY_TUMOR, SPLEEN]
    t = RefineLesionsd("pred", _stage(), threshold={"default": 0.5}, dilation_mm=0.0, min_lesion_volume_mm3=60.0)
    out = t({"pred": _meta(masks.copy()), "image": image, "pred_classes": classes})
    pred = out["pred"].numpy()
    expected = np.zeros(hu.shape, np.uint8)
    expected[5:8, 5:8, 5:8] = 1
    np.testing.assert_array_equal(pred[2], expected)  # the lesion, not the single voxel, nothing outside the liver
    assert not pred[3].any()  # the kidney is uniform: the stage finds nothing there
    np.testing.assert_array_equal(pred[[0, 1, 4]], masks[[0, 1, 4]])  # organs untouched
    assert isinstance(out["pred"], MetaTensor)
    assert any("liver_tumor from the lesion stage" in n for n in out["postprocess_notes"])


def test_refine_leaves_unprompted_or_hostless_classes_and_can_be_off():
    hu, masks = _case_masks()
    image = torch.from_numpy((np.clip(hu, -175, 250) + 175) / 425)[None]
    # liver tumour prompted without its host: the stage cannot run, the mask stays
    classes = [R_KIDNEY, LIVER_TUMOR]
    sub = masks[[1, 2]].copy()
    out = RefineLesionsd("pred", _stage())({"pred": _meta(sub.copy()), "image": image, "pred_classes": classes})
    np.testing.assert_array_equal(out["pred"].numpy(), sub)
    out = RefineLesionsd("pred", None)({"pred": _meta(masks.copy()), "image": image, "pred_classes": []})
    np.testing.assert_array_equal(out["pred"].numpy(), masks)
    # a grid the stage was not trained on: every mask stays, the report says why
    classes = [LIVER, R_KIDNEY, LIVER_TUMOR, KIDNEY_TUMOR, SPLEEN]
    out = RefineLesionsd("pred", _stage())({"pred": _meta(masks.copy(), 1.5), "image": image, "pred_classes": classes})
    np.testing.assert_array_equal(out["pred"].numpy(), masks)
    assert "lesion stage skipped" in out["postprocess_notes"][0]
    with pytest.raises(ValueError, match="does not segment"):
        RefineLesionsd("pred", _stage(), threshold={"pancreas_tumor": 0.5})
    with pytest.raises(ValueError, match="not lesion classes"):
        LesionStage(dark_spot_network(), ["liver"], LABEL_SPACE)


def _shift_network(step: int) -> torch.nn.Module:
    """A 3x3x3 convolution that copies each channel from its neighbour ``step`` voxels along the first axis."""
    net = torch.nn.Conv3d(3, 3, 3, padding=1, bias=False)
    with torch.no_grad():
        net.weight.zero_()
        for c in range(3):
            net.weight[c, c, 1 + step, 1, 1] = 1.0
    return net


def test_flip_augmentation_maps_each_pass_back():
    hu, masks = _case_masks()

    def stage(net, flips=()):
        # roi 16^3 = the liver's box (12 + 2 x 2 margin): one window, no padding, so the passes compare exactly
        return LesionStage(net, CLASSES, LABEL_SPACE, roi_size=(16,) * 3, margin=2, flip_axes=flips)

    _, plus = stage(_shift_network(1)).box_logits(hu, masks[0])
    _, minus = stage(_shift_network(-1)).box_logits(hu, masks[0])
    _, both = stage(_shift_network(1), [[0]]).box_logits(hu, masks[0])
    assert not np.allclose(plus, minus)
    np.testing.assert_allclose(both, (plus + minus) / 2, atol=1e-5)  # the mirrored pass is mirrored back
    _, same = stage(dark_spot_network(), [[0], [1, 2]]).box_logits(hu, masks[0])
    _, single = stage(dark_spot_network()).box_logits(hu, masks[0])
    np.testing.assert_allclose(same, single, atol=1e-4)  # a voxel-wise network is unchanged by the augmentation
    with pytest.raises(ValueError, match="flip_axes"):
        stage(dark_spot_network(), [[3]])


def test_learning_rate_schedules():
    assert [_lr_factor(k, 100, 10, "constant") for k in (0, 9, 10, 99)] == [0.1, 1.0, 1.0, 1.0]
    cosine = [_lr_factor(k, 110, 10, "cosine") for k in (9, 10, 60, 110)]
    np.testing.assert_allclose(cosine, [1.0, 1.0, 0.5, 0.0], atol=1e-9)


def test_host_perturbation_closes_holes_and_moves_the_outline():
    from scipy import ndimage as ndi

    host = np.zeros((20, 20, 20), bool)
    host[4:16, 4:16, 4:16] = True
    host[9:11, 9:11, 4:16] = False  # a vessel through the organ
    rng = np.random.default_rng(0)
    eroded, widest = ndi.binary_erosion(host), ndi.binary_dilation(ndi.binary_closing(host, iterations=2) | host,
                                                                     iterations=2)
    sizes, holes_closed = set(), 0
    for _ in range(40):
        out = perturb_host(host, rng, 2) > 0
        assert out[eroded].all() and not out[~widest].any()
        sizes.add(int(out.sum()))
        holes_closed += bool(out[10, 10, 10])
    assert min(sizes) < host.sum() < max(sizes) and 0 < holes_closed < 40


def test_host_boxes_from_predicted_hosts_keep_the_true_lesions(tmp_path):
    case = write_atlas_case(tmp_path / "data" / "case_000", seed=0)
    seg = case / "segmentations"
    liver, tumour = (np.asarray(nib.load(seg / f"{n}.nii.gz").dataobj) > 0 for n in ("liver", "liver_tumor"))
    assert tumour.any()
    # an organ model's liver: the tumour carved out and one slab of the organ missed
    predicted = liver & ~tumour
    predicted[..., : int(np.nonzero(liver)[2].min()) + 2] = False
    pred_seg = tmp_path / "pred" / "case_000" / "segmentations"
    pred_seg.mkdir(parents=True)
    for name in ("kidney_left", "kidney_right"):
        (pred_seg / f"{name}.nii.gz").symlink_to(seg / f"{name}.nii.gz")
    nib.save(nib.Nifti1Image(predicted.astype(np.uint8), nib.load(seg / "liver.nii.gz").affine),
             pred_seg / "liver.nii.gz")
    own = HostBoxes([case], CLASSES, LABEL_SPACE, progress=False)
    pred = HostBoxes([case], CLASSES, LABEL_SPACE, host_dir=str(tmp_path / "pred"), progress=False)
    i = [info["host"] for info in pred.info].index("liver")
    x, target, valid, host = pred.items[i]
    box = pred.info[i]["box"]
    assert box != own.info[i]["box"] and valid.tolist() == [1.0, 0.0, 0.0]
    assert np.array_equal(host, predicted[box]) and np.array_equal(x[2] > 0, predicted[box])
    # the target is the whole tumour, inside the true liver, though the predicted host leaves it out
    assert target[0].sum() == tumour[box].sum() == tumour.sum() and not (target[0] & host).any()
    both = HostBoxes.merged([own, pred])
    assert len(both) == len(own) + len(pred) == 6 and both.info[3:] == pred.info


def test_hard_negatives_are_the_network_s_own_false_peaks(tmp_path):
    cases = [write_atlas_case(tmp_path / f"case_{i}", seed=i) for i in range(2)]
    boxes = HostBoxes(cases, CLASSES, LABEL_SPACE, progress=False)
    sampler = CropSampler(boxes, (8, 8, 8), jitter=1, hard_negative_fraction=0.9, seed=0)
    free = sampler.lesion_free
    assert [boxes.info[i]["host"] for i in free] == ["kidney_right"] * 2  # the tiny cases' only lesion-free hosts
    x, _, _, host = boxes.items[free[1]]
    inside = tuple(np.argwhere(host)[host.sum() // 2])
    x[0][inside] = -2.5  # a dark spot in the organ: logit 235 from dark_spot_network
    x[0][0, 0, 0] = -3.0  # a darker one in the box margin, outside the host: not a place the stage is asked about
    peaks = sampler.mine_hard_negatives(dark_spot_network(), boxes=len(free))
    assert len(sampler.hard) == 1 and sampler.hard[0][0] == free[1] and tuple(sampler.hard[0][1]) == inside
    assert peaks == [pytest.approx(235.0, abs=0.1)]
    hits = sum(bool((sampler.crop()[0][0] == -2.5).any()) for _ in range(100))
    uniform = CropSampler(boxes, (8, 8, 8), jitter=1, seed=0)
    assert hits >= 80 and sum(bool((uniform.crop()[0][0] == -2.5).any()) for _ in range(100)) < 20


@pytest.mark.parametrize("kw", [{"hard_negative_fraction": 1.0}, {"hard_negative_fraction": -0.1},
                                {"hard_negative_fraction": 0.25, "hard_negative_every": 0}])
def test_bad_hard_negative_settings_fail_before_any_data_is_read(tmp_path, kw):
    with pytest.raises(ValueError, match="hard_negative"):  # the folder does not exist: it is never looked at
        train_lesion_stage(dark_spot_network(), str(tmp_path / "missing"), CLASSES, LABEL_SPACE,
                           str(tmp_path / "out.pt"), **kw)
    assert not (tmp_path / "out.pt").exists()


def _cli(args, tmp_path, name):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "monai.bundle", "run", *args], cwd=BUNDLE, capture_output=True,
                       text=True, timeout=600, env=env)
    (tmp_path / f"{name}.log").write_text(r.stdout + r.stderr)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _stage_network() -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    return parser.get_parsed_content("lesion_stage_def")


def test_train_calibrate_and_infer_through_the_cli(tmp_path):
    data = tmp_path / "data"
    for i in range(3):
        write_atlas_case(data / f"case_{i:03d}", seed=i)
    ckpt = tmp_path / "stage.pt"
    r = _cli(["--config_file", "['configs/inference.json','configs/train_lesion_stage.json']",
              "--dataset_dir", str(data), "--lesion_stage_ckpt", str(ckpt),
              "--lesion_stage_train#iterations", "2", "--lesion_stage_train#batch_size", "2",
              "--lesion_stage_train#hard_negative_fraction", "0.5", "--lesion_stage_train#hard_negative_every", "1"],
             tmp_path, "train")
    assert "'iterations': 2" in r.stdout and "'boxes': 9" in r.stdout  # a liver and two kidneys per case
    # mined before each of the 2 iterations, among the 3 kidney_right boxes
    assert "'hard_negative_rounds': 2" in r.stdout and r.stdout.count("'lesion_free_boxes': 3") == 2
    _stage_network().load_state_dict(torch.load(ckpt, weights_only=True))
    # continuing from those weights at learning rate 0 keeps them; the folder twice, the second time with the hosts
    # of a prediction folder (the ground truth standing in for one)
    again = tmp_path / "again.pt"
    r = _cli(["--config_file", "['configs/inference.json','configs/train_lesion_stage.json']",
              "--dataset_dir", f"['{data}','{data}']", "--lesion_stage_train_host_dirs", f"['','{data}']",
              "--lesion_stage_ckpt", str(again), "--lesion_stage_train#iterations", "1",
              "--lesion_stage_train#batch_size", "2", "--lesion_stage_train#initial_weights", str(ckpt),
              "--lesion_stage_train#learning_rate", "0.0", "--lesion_stage_train#schedule", "cosine"], tmp_path,
             "again")
    assert "'boxes': 18" in r.stdout
    first, second = torch.load(ckpt, weights_only=True), torch.load(again, weights_only=True)
    assert all(torch.equal(first[k], second[k]) for k in first)

    # calibration with the ground-truth hosts standing in for an organ model's predictions
    cal = tmp_path / "cal"
    _cli(["--config_file", "['configs/inference.json','configs/calibrate_lesion_stage.json']",
          "--dataset_dir", str(data), "--lesion_stage_host_dir", str(data), "--lesion_stage_ckpt", str(ckpt),
          "--calibration_dir", str(cal), "--lesion_stage_grid", "[0.1,0.5,0.9]"], tmp_path, "calibrate")
    result = json.loads((cal / "lesion_stage_thresholds.json").read_text())
    assert (cal / "lesion_stage_thresholds.png").stat().st_size > 0
    classes = result["classes"]
    assert set(classes) == set(CLASSES) and set(result["threshold"]) <= set(CLASSES)
    # every tiny case has a liver tumour and a kidney tumour, none a cyst: no operating point can be chosen
    assert [classes[n]["positives"] for n in CLASSES] == [3, 3, 0] and not result["threshold"]
    assert [r["threshold"] for r in classes["liver_tumor"]["curve"]] == [0.1, 0.5, 0.9]

    # inference: prompted liver tumour, the host forced on everywhere, the stage at threshold 0 marks the host
    model = make_tiny_model(tmp_path / "tiny.pt")
    out = tmp_path / "out"
    _cli(["--config_file", "configs/inference.json", "--dataset_dir", str(data / "case_000" / "ct.nii.gz"),
          "--output_dir", str(out), "--ckpt_path", str(model), *TINY_NET_ARGS, "--prompts", "['liver tumor']",
          "--postprocess#threshold#liver", "0.0", "--lesion_stage_ckpt", str(ckpt),
          "--lesion_stage#threshold#liver_tumor", "0.0"], tmp_path, "infer")
    report = json.loads((out / "case_000" / "report.json").read_text())
    assert any("liver_tumor from the lesion stage" in n for n in report["postprocess_notes"]), report
    assert report["settings"]["lesion_stage"]["weights"] == "stage.pt"
    tumour = np.asarray(nib.load(out / "case_000" / "segmentations" / "liver_tumor.nii.gz").dataobj)
    assert tumour.any()


@pytest.mark.parametrize("configs", [["inference.json"], ["inference.json", "inference_whole_grid.json"]])
def test_shipped_lesion_stages_fit_their_configs(configs):
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / c) for c in configs])
    parser["bundle_root"] = str(BUNDLE)
    ckpt = Path(parser.get_parsed_content("lesion_stage_ckpt"))
    assert ckpt.is_file(), ckpt
    parser.get_parsed_content("lesion_stage_def").load_state_dict(torch.load(ckpt, weights_only=True))
    thresholds = parser.get_parsed_content("lesion_stage#threshold")
    assert set(thresholds) == set(CLASSES) and all(0 < t < 1 for t in thresholds.values())
