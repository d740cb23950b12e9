"""Masked BCE + whole-crop Dice, label channels with organs including lesions, partial-label templates/datalist."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from universal_train_data import write_phantoms  # first: puts the bundle on sys.path
from universal_model.losses import MaskedBCEDiceLoss
from universal_model.metrics import MaskedDiceMetric
from universal_model.partial_labels import TEMPLATES, main as partial_main, resolve_labels_present
from universal_model.transforms import UNLABELLED, LabelToChannels, LabelToChannelsd


def _target(labelled_rows):
    t = (torch.rand(2, 6, 8, 8, 8) > 0.7).float()
    for b, k in labelled_rows:
        t[b, k] = UNLABELLED
    return t


def test_unlabelled_classes_get_exactly_zero_gradient():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 8, 8, 8, requires_grad=True)
    hidden = [(0, 1), (0, 4), (1, 0), (1, 5)]
    loss = MaskedBCEDiceLoss()(logits, _target(hidden))
    loss.backward()
    for b, k in hidden:
        assert torch.count_nonzero(logits.grad[b, k]) == 0
    assert torch.count_nonzero(logits.grad[0, 0]) > 0 and torch.isfinite(loss)


def test_masked_loss_ignores_values_of_unlabelled_channels():
    torch.manual_seed(1)
    logits, t = torch.randn(2, 6, 8, 8, 8), _target([(0, 2)])
    other = logits.clone()
    other[0, 2] = 100.0  # changes nothing: the channel is not labelled for sample 0
    loss = MaskedBCEDiceLoss()
    assert loss(logits, t) == loss(other, t)
    assert loss(logits, torch.full_like(t, UNLABELLED)) == 0


def test_dice_is_over_the_whole_crop_not_per_slice():
    loss = MaskedBCEDiceLoss(lambda_bce=0.0, smooth=1.0)
    t = torch.zeros(1, 1, 4, 4, 4)
    t[0, 0, 0] = 1  # only the first slice is foreground
    logits = torch.where(t > 0, 20.0, -20.0)  # perfect prediction
    assert loss(logits, t) < 1e-6  # a per-slice Dice would add 1 for each empty slice


def test_absent_class_gets_bce_only_unless_dice_on_absent():
    torch.manual_seed(2)
    logits = torch.randn(1, 2, 6, 6, 6, requires_grad=True)
    t = torch.zeros(1, 2, 6, 6, 6)
    t[0, 0, :3] = 1  # class 0 present in the crop, class 1 labelled but absent
    grads = {}
    for on_absent in (False, True):
        logits.grad = None
        MaskedBCEDiceLoss(dice_on_absent=on_absent)(logits, t).backward()
        grads[on_absent] = logits.grad[0, 1].clone()
    bce_only = torch.autograd.grad(
        torch.nn.functional.binary_cross_entropy_with_logits(logits[0, 1], t[0, 1], reduction="mean") / 2, logits
    )[0][0, 1]
    assert torch.allclose(grads[False], bce_only, atol=1e-7)  # Dice does not push the absent class
    assert not torch.allclose(grads[True], bce_only, atol=1e-7)  # the paper's variant does


def test_pos_weight_scales_the_push_on_rare_positives_up_to_the_cap():
    """A saturated rare class: positives' BCE gradient grows by min(negatives / positives, cap); negatives keep theirs."""
    t = torch.zeros(1, 2, 8, 8, 8)
    t[0, 0, 0, 0, :2] = 1  # class 0: 2 of 512 voxels (ratio 255)
    t[0, 1, :4] = 1  # class 1: half the crop (ratio 1)
    grads = {}
    for cap in (1.0, 30.0, 1000.0):
        logits = torch.full((1, 2, 8, 8, 8), -12.0, requires_grad=True)
        MaskedBCEDiceLoss(lambda_dice=0.0, pos_weight_max=cap)(logits, t).backward()
        grads[cap] = logits.grad[0].clone()
    pos, neg = t[0, 0] > 0, t[0, 0] == 0
    assert torch.allclose(grads[30.0][0][pos], 30.0 * grads[1.0][0][pos])
    assert torch.allclose(grads[1000.0][0][pos], 255.0 * grads[1.0][0][pos])
    assert torch.equal(grads[30.0][0][neg], grads[1.0][0][neg])
    assert torch.equal(grads[30.0][1], grads[1.0][1])  # a balanced class is unchanged
    with pytest.raises(ValueError, match="pos_weight_max"):
        MaskedBCEDiceLoss(pos_weight_max=0.5)


def test_pos_weight_cap_per_class_boosts_only_the_listed_classes():
    """With one cap per class, only the class given a cap above 1 has its rare positives scaled."""
    t = torch.zeros(1, 2, 8, 8, 8)
    t[0, :, 0, 0, :2] = 1  # both classes: 2 of 512 voxels
    grads = {}
    for caps in ((1.0, 1.0), (30.0, 1.0)):
        logits = torch.full((1, 2, 8, 8, 8), -12.0, requires_grad=True)
        MaskedBCEDiceLoss(lambda_dice=0.0, pos_weight_max=caps)(logits, t).backward()
        grads[caps] = logits.grad[0].clone()
    pos = t[0, 0] > 0
    assert torch.allclose(grads[(30.0, 1.0)][0][pos], 30.0 * grads[(1.0, 1.0)][0][pos])
    assert torch.equal(grads[(30.0, 1.0)][1], grads[(1.0, 1.0)][1])
    subset = MetaTensor(t[:, 1:].clone())  # only class 1 kept, as PrepareLabelledClasses does
    subset.meta["class_indices"] = torch.tensor([1])
    logits = torch.full((1, 1, 8, 8, 8), -12.0, requires_grad=True)
    MaskedBCEDiceLoss(lambda_dice=0.0, pos_weight_max=[30.0, 1.0])(logits, subset).backward()
    # class 1's own cap (1), not class 0's; x2: the mean now runs over one class, not two
    assert torch.allclose(logits.grad[0, 0], 2 * grads[(1.0, 1.0)][1])
    with pytest.raises(ValueError, match="3 pos_weight_max values for 2 classes"):
        MaskedBCEDiceLoss(pos_weight_max=[2.0, 1.0, 1.0])(torch.zeros(1, 2, 4, 4, 4), torch.zeros(1, 2, 4, 4, 4))
    with pytest.raises(ValueError, match="pos_weight_max"):
        MaskedBCEDiceLoss(pos_weight_max=[2.0, 0.5])


def _host_and_lesion(host_labelled=True):
    """Channels (label 1 = host, label 2 = lesion in it), as ``PrepareLabelledClasses`` leaves them."""
    t = torch.zeros(1, 2, 8, 8, 8)
    t[0, 0, 1:7, 1:7, 1:7] = 1 if host_labelled else UNLABELLED
    t[0, 1, 3:5, 3:5, 3:5] = 1
    if host_labelled:
        t[0, 0, 3:5, 3:5, 3:5] = 1  # the host channel includes its lesion
    t = MetaTensor(t)
    t.meta["class_indices"] = torch.tensor([0, 1])
    return t


def test_host_balanced_term_prices_copying_the_host_like_staying_silent():
    """The lesion channel pays the same extra for firing on its whole host as for firing nowhere."""
    t = _host_and_lesion()
    host, lesion = t[0, 0] > 0, t[0, 1] > 0
    plain = MaskedBCEDiceLoss(lambda_dice=0.0)
    balanced = MaskedBCEDiceLoss(lambda_dice=0.0, host_balanced_weight=1.0, lesion_hosts={2: [1]})

    def extra(lesion_logits):
        logits = torch.stack([torch.where(host, 6.0, -6.0), lesion_logits])[None]
        return float(balanced(logits, t) - plain(logits, t))

    copy, silent = extra(torch.where(host, 6.0, -6.0)), extra(torch.full((8, 8, 8), -6.0))
    correct = extra(torch.where(lesion, 6.0, -6.0))
    assert copy == pytest.approx(silent, rel=1e-5)
    assert correct < copy / 100
    # (mean BCE on the lesion + mean BCE on the rest of the host) / 2, averaged over the 2 (sample, class) pairs
    on_lesion, on_rest = torch.nn.functional.softplus(torch.tensor([6.0, -6.0]))
    assert silent == pytest.approx(float(on_lesion + on_rest) / 4, rel=1e-5)


def test_host_balanced_term_needs_a_labelled_host_and_leaves_organs_alone():
    logits = torch.randn(1, 2, 8, 8, 8, requires_grad=True)
    kwargs = {"lambda_dice": 0.0, "lesion_hosts": {2: [1]}}
    for t in (_host_and_lesion(host_labelled=False), _host_and_lesion()):
        grads = []
        for weight in (0.0, 1.0):
            logits.grad = None
            MaskedBCEDiceLoss(host_balanced_weight=weight, **kwargs)(logits, t).backward()
            grads.append(logits.grad.clone())
        assert torch.equal(grads[0][0, 0], grads[1][0, 0])  # the host's own channel: unchanged
        changed = grads[0][0, 1] != grads[1][0, 1]
        if t[0, 0].amin() < 0:  # host not labelled in this sample: no term
            assert not changed.any()
        else:  # the term acts inside the host only
            assert changed.any() and not (changed & (t[0, 0] == 0)).any()
    with pytest.raises(ValueError, match="needs lesion_hosts"):
        MaskedBCEDiceLoss(host_balanced_weight=1.0)


def test_host_top_k_prices_only_the_highest_voxels_of_the_rest_of_the_host():
    t = _host_and_lesion()
    host, lesion = t[0, 0] > 0, t[0, 1] > 0
    rest = host & ~lesion
    lesion_logits = torch.randn(8, 8, 8)
    kwargs = {"lambda_bce": 1.0, "lambda_dice": 0.0, "host_balanced_weight": 1.0, "lesion_hosts": {2: [1]}}
    grads = {}
    for top_k in (0, 5):
        logits = torch.stack([torch.zeros(8, 8, 8), lesion_logits])[None].requires_grad_(True)
        base = torch.stack([torch.zeros(8, 8, 8), lesion_logits])[None].requires_grad_(True)
        MaskedBCEDiceLoss(host_top_k=top_k, **kwargs)(logits, t).backward()
        MaskedBCEDiceLoss(lambda_dice=0.0)(base, t).backward()
        grads[top_k] = (logits.grad - base.grad)[0, 1]  # the term's own gradient
    hardest = lesion_logits[rest].topk(5).values
    pushed = grads[5] != 0
    assert int((pushed & rest).sum()) == 5 and bool((lesion_logits[pushed & rest] >= hardest.min()).all())
    assert torch.equal(pushed & ~rest, lesion)  # the lesion's own voxels are priced as before
    assert torch.allclose(grads[5][lesion], grads[0][lesion])
    assert int((grads[0] != 0).sum()) == int(host.sum())
    with pytest.raises(ValueError, match="host_top_k"):
        MaskedBCEDiceLoss(host_top_k=-1)


def test_host_margin_adds_the_rim_around_the_host_to_the_rest():
    t = _host_and_lesion()  # host 1:7 on each axis of an 8^3 crop
    kwargs = {"lambda_dice": 0.0, "host_balanced_weight": 1.0, "lesion_hosts": {2: [1]}}
    pushed = {}
    for margin in (0, 1):
        logits = torch.zeros(1, 2, 8, 8, 8, requires_grad=True)
        base = torch.zeros(1, 2, 8, 8, 8, requires_grad=True)
        MaskedBCEDiceLoss(host_margin=margin, **kwargs)(logits, t).backward()
        MaskedBCEDiceLoss(lambda_dice=0.0)(base, t).backward()
        pushed[margin] = (logits.grad - base.grad)[0, 1] != 0
    assert int(pushed[0].sum()) == 6 ** 3 and int(pushed[1].sum()) == 8 ** 3
    with pytest.raises(ValueError, match="host_margin"):
        MaskedBCEDiceLoss(host_margin=-1)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_label_channels_organs_include_lesions_and_hidden_classes(as_tensor):
    lab = np.zeros((1, 10, 6, 6), np.uint8)
    lab[0, :4] = 6
    lab[0, 1:3, 1:3, 1:3] = 27  # liver tumour over liver
    lab[0, 5:7] = 2
    lab[0, 8:] = 3
    lab[0, 6, 2, 2] = 26  # kidney tumour inside the right kidney
    lab[0, 8, 2, 2] = 26  # ... and inside the left kidney
    hosts = {26: [2, 3], 27: [6]}
    y = LabelToChannels(32, hosts)(torch.as_tensor(lab) if as_tensor else lab)
    assert y.shape == (32, 10, 6, 6)
    assert y[5].sum() == ((lab == 6) | (lab == 27)).sum() and y[26].sum() == (lab == 27).sum()
    assert y[1, 6, 2, 2] == 1 and y[2, 6, 2, 2] == 0 and y[2, 8, 2, 2] == 1 and y[1, 8, 2, 2] == 0
    d = LabelToChannelsd("label", lesion_hosts=hosts)({"label": lab, "labels_present": "LiTS"})
    assert torch.equal(d["labels_present"].nonzero().flatten(), torch.tensor([5, 26]))
    assert (d["label"][0] == UNLABELLED).all() and torch.equal(d["label"][5], y[5])


def test_int8_label_channels_give_the_same_loss_and_gradient_as_float():
    """Training collates labels as int8 (a quarter of the bytes); the loss must not see the difference."""
    lab = np.zeros((1, 6, 6, 6), dtype=np.int16)
    lab[0, :3] = 6
    lab[0, 1, 1:3, 1:3] = 27
    sample = {"label": lab, "labels_present": "LiTS"}
    as_int8 = LabelToChannelsd("label", lesion_hosts={27: [6]}, dtype=torch.int8)(sample)
    as_float = LabelToChannelsd("label", lesion_hosts={27: [6]})(sample)
    assert as_int8["label"].dtype == torch.int8 and torch.equal(as_int8["label"].float(), as_float["label"])
    logits = torch.randn(1, 32, 6, 6, 6, requires_grad=True)
    loss = MaskedBCEDiceLoss(pos_weight_max=5.0)
    loss(logits, as_int8["label"][None]).backward()
    grad_int8 = logits.grad.clone()
    logits.grad = None
    loss(logits, as_float["label"][None]).backward()
    assert torch.allclose(grad_int8, logits.grad)
    assert grad_int8[0, 5].abs().sum() > 0 and grad_int8[0, 0].abs().sum() == 0  # liver labelled, spleen hidden
    with pytest.raises(ValueError, match="must hold -1"):
        LabelToChannels(32, dtype=torch.uint8)


def test_masked_dice_metric_skips_unlabelled():
    y = torch.zeros(1, 3, 4, 4, 4)
    y[0, 0, :2] = 1
    y[0, 1] = UNLABELLED
    y[0, 2, 2:] = 1
    pred = y.clamp(min=0).clone()
    pred[0, 1] = 1  # would be Dice 0 against the clamped label if it counted
    m = MaskedDiceMetric()
    m(pred, y)
    assert m.aggregate().item() == pytest.approx(1.0)


def test_templates_and_resolution():
    assert TEMPLATES["BTCV"] == list(range(1, 14)) and TEMPLATES["AbdomenAtlas"] == list(range(1, 26))
    assert TEMPLATES["KiTS"] == [2, 3, 26, 32] and TEMPLATES["LiTS"] == [6, 27]
    assert resolve_labels_present([27, 6, 6]) == [6, 27]
    assert resolve_labels_present("AbdomenAtlas+LiTS") == list(range(1, 26)) + [27]  # a re-annotated LiTS CT
    with pytest.raises(ValueError, match="unknown template"):
        resolve_labels_present("NotADataset")
    with pytest.raises(ValueError, match="'LITS' in 'AbdomenAtlas\\+LITS'"):
        resolve_labels_present("AbdomenAtlas+LITS")
    with pytest.raises(ValueError, match="outside"):
        resolve_labels_present([0, 33])


def test_partial_datalist_cli(tmp_path, capsys):
    write_phantoms(tmp_path / "ph", cases=5)
    assert partial_main(["--phantoms", str(tmp_path / "ph"), "--num_val", "1"]) == 0
    d = json.loads((tmp_path / "ph" / "datalist_partial.json").read_text())
    assert [e["dataset"] for e in d["training"]] == ["AbdomenAtlas", "BTCV", "LiTS", "KiTS"]
    assert d["training"][2]["labels_present"] == [6, 27] and d["validation"][0]["dataset"] == "Full"
    out = tmp_path / "atlas.json"
    args = ["--phantoms", str(tmp_path / "ph"), "--num_val", "1", "--rotation", "atlas", "--out", str(out)]
    assert partial_main(args) == 0
    atlas = json.loads(out.read_text())["training"]
    assert [e["dataset"] for e in atlas][:3] == ["AbdomenAtlas+LiTS", "AbdomenAtlas+KiTS", "BTCV"]
    assert atlas[1]["labels_present"] == list(range(1, 27)) + [32]
    assert partial_main(["--phantoms", str(tmp_path / "missing")]) == 2
    assert "phantom folder not found" in capsys.readouterr().err


def test_prepare_batch_keeps_only_labelled_classes():
    from universal_model.training import PrepareLabelledClasses

    label = torch.zeros(2, 32, 4, 4, 4)
    mask = torch.zeros(2, 32)
    mask[0, [5, 26]] = 1  # LiTS
    mask[1, [30]] = 1  # MSD Lung
    label[0, [i for i in range(32) if i not in (5, 26)]] = UNLABELLED
    label[1, [i for i in range(32) if i != 30]] = UNLABELLED
    image, target, args, kwargs = PrepareLabelledClasses()(
        {"image": torch.rand(2, 1, 4, 4, 4), "label": label, "labels_present": mask}
    )
    assert kwargs["class_indices"].tolist() == [5, 26, 30] and target.shape == (2, 3, 4, 4, 4)
    assert target.meta["class_indices"].tolist() == [5, 26, 30]  # per-class loss settings find their classes
    assert (target[0, 2] == UNLABELLED).all() and (target[1, :2] == UNLABELLED).all() and args == ()
    image, target = PrepareLabelledClasses()({"image": torch.rand(1, 1, 4, 4, 4), "label": label[:1]})
    assert target.shape[1] == 32


def _lesion_meta(case_dir, class_indices):
    lesions = [{"class_index": i, "class_name": str(i)} for i in class_indices]
    (case_dir / "meta.json").write_text(json.dumps({"lesions": lesions}))


def test_partial_datalist_gives_lesion_datasets_the_cases_with_their_lesions(tmp_path, capsys):
    """As LiTS holds liver-tumour CTs, the LiTS pseudo-dataset gets the phantom with the liver tumour (and KiTS the
    kidney cyst), so the lesion labels are not hidden; the number of cases per pseudo-dataset is unchanged."""
    root = write_phantoms(tmp_path / "ph", cases=5)
    _lesion_meta(root / "case_000", [32])  # kidney cyst
    _lesion_meta(root / "case_003", [27])  # liver tumour
    _lesion_meta(root / "case_001", [])
    assert partial_main(["--phantoms", str(root), "--num_val", "1"]) == 0
    train = json.loads((root / "datalist_partial.json").read_text())["training"]
    assert [e["dataset"] for e in train] == ["KiTS", "AbdomenAtlas", "BTCV", "LiTS"]
    assert [e["case"] for e in train] == ["case_000", "case_001", "case_002", "case_003"]
    out = tmp_path / "rr.json"
    assert partial_main(["--phantoms", str(root), "--num_val", "1", "--assign", "round_robin", "--out", str(out)]) == 0
    assert [e["dataset"] for e in json.loads(out.read_text())["training"]] == ["AbdomenAtlas", "BTCV", "LiTS", "KiTS"]
    before = (root / "datalist_partial.json").read_text()
    (root / "case_002" / "meta.json").write_text("{not json")
    assert partial_main(["--phantoms", str(root), "--num_val", "1"]) == 2
    err = capsys.readouterr().err
    assert "case_002/meta.json: not valid JSON" in err
    (root / "case_002" / "meta.json").write_text(json.dumps({"lesions": [{"class_name": "no index"}]}))
    assert partial_main(["--phantoms", str(root), "--num_val", "1"]) == 2
    assert "case_002/meta.json: unreadable lesion list" in capsys.readouterr().err
    assert (root / "datalist_partial.json").read_text() == before  # a failed run leaves the datalist as it was


def test_half_precision_logits_give_the_float32_loss():
    """Under mixed precision the network's logits arrive in float16; the whole-crop Dice sums over a 128×128×112 grid
    (~1.8 M voxels) pass float16's largest value (65504), so the loss must compute in float32."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 2, 96, 96, 16, generator=g) + 3.0  # ~147k voxels a channel, sigmoid ~0.95 each
    target = (torch.rand(1, 2, 96, 96, 16, generator=g) > 0.2).to(torch.int8)
    loss = MaskedBCEDiceLoss()
    reference = loss(logits.half().float(), target)
    half = loss(logits.half(), target)
    assert half.dtype == torch.float32 and torch.isfinite(half)
    torch.testing.assert_close(half, reference)
