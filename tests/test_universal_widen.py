"""Function-preserving widening of the light U-Net (universal_model.widen)."""

from __future__ import annotations

import pytest
import torch

import universal_train_data  # noqa: F401  (puts the bundle on sys.path)
from universal_model.network import UniversalModel
from universal_model.widen import main, widen_state_dict


def _net(feature_size, rows=6, depth=2, seed=0):
    torch.manual_seed(seed)
    emb = torch.randn(rows, 12, generator=torch.Generator().manual_seed(99))
    return UniversalModel("unet", img_size=(16, 16, 16), num_classes=rows, prompt_embeddings=emb,
                          feature_size=feature_size, backbone_kwargs={"depth": depth}).eval()


@pytest.mark.parametrize("narrow_width,factor", [(4, 2), (4, 3), (8, 6)])
def test_widened_network_computes_the_same_function(narrow_width, factor):
    narrow, wide = _net(narrow_width), _net(narrow_width * factor, seed=1)
    x = torch.rand(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = wide(x)
        wide.load_state_dict(widen_state_dict(narrow.state_dict(), wide.state_dict(), factor))
        after, reference = wide(x), narrow(x)
    assert (before - reference).abs().max() > 0.1  # a random wide network is another function
    torch.testing.assert_close(after, reference, rtol=1e-3, atol=1e-3)


def test_noise_separates_the_copies_of_a_channel():
    narrow, wide = _net(4), _net(8)
    exact = widen_state_dict(narrow.state_dict(), wide.state_dict(), 2)
    noisy = widen_state_dict(narrow.state_dict(), wide.state_dict(), 2, noise=0.01,
                             generator=torch.Generator().manual_seed(0))
    key = "backbone.encoders.0.conv1.conv.weight"  # [8, 1, 3, 3, 3]: output channels 2c and 2c + 1 copy channel c
    assert torch.equal(exact[key][0], exact[key][1])
    assert not torch.equal(noisy[key][0], noisy[key][1])
    torch.testing.assert_close(noisy[key], exact[key], rtol=0, atol=0.05 * exact[key].std().item())
    for k in ("controller.weight", "text_to_code.0.weight"):  # not widened: copied as they are
        assert torch.equal(noisy[k], narrow.state_dict()[k])


def test_shapes_that_are_not_a_widening_are_refused():
    narrow, wide = _net(4), _net(12)
    with pytest.raises(ValueError, match="backbone.encoders.0.conv1.conv.weight"):
        widen_state_dict(narrow.state_dict(), wide.state_dict(), 2)
    with pytest.raises(ValueError, match="do not belong"):
        widen_state_dict(_net(4, depth=1).state_dict(), wide.state_dict(), 3)


def test_cli_writes_weights_that_load_into_the_wide_model(tmp_path, capsys):
    narrow = UniversalModel(img_size=(32, 32, 32), feature_size=4).eval()
    torch.save(narrow.state_dict(), tmp_path / "narrow.pt")
    out = tmp_path / "wide.pt"
    assert main(["--ckpt", str(tmp_path / "narrow.pt"), "--out", str(out), "--feature_size", "4", "--factor", "2",
                 "--noise", "0"]) == 0
    assert "--feature_size 8" in capsys.readouterr().out
    wide = UniversalModel(img_size=(32, 32, 32), feature_size=8).eval()
    wide.load_state_dict(torch.load(out, weights_only=True))
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(wide(x).sigmoid(), narrow(x).sigmoid(), rtol=0, atol=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["narrow.pt", "wide.pt"]  # no temporary file left

    assert main(["--ckpt", str(tmp_path / "narrow.pt"), "--out", str(tmp_path / "x.pt"), "--feature_size", "8",
                 "--factor", "2"]) == 2
    err = capsys.readouterr().err
    assert "narrow.pt" in err and "size mismatch" in err and not (tmp_path / "x.pt").exists()
