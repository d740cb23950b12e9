"""Function-preserving widening of the light U-Net (universal_model.widen)."""

from __future__ import annotations

import pytest
import torch

import universal_train_data  # noqa: F401  (puts the bundle on sys.path)
from universal_model.network import UniversalModel
from universal_model.widen import main, widen_state_dict


def _net(feature_size, rows=6, depth=2, seed=0, channels=None):
    torch.manual_seed(seed)
    emb = torch.randn(rows, 12, generator=torch.Generator().manual_seed(99))
    kwargs = {"depth": depth} if channels is None else {"depth": depth, "channels": channels}
    return UniversalModel("unet", img_size=(16, 16, 16), num_classes=rows, prompt_embeddings=emb,
                          feature_size=feature_size, backbone_kwargs=kwargs).eval()


@pytest.mark.parametrize("narrow_width,wide_channels", [(4, [8, 16, 32]), (4, [12, 24, 48]), (8, [48, 96, 192]),
                                                         (4, [12, 16, 16]), (8, [48, 48, 32])])
def test_widened_network_computes_the_same_function(narrow_width, wide_channels):
    """Uniform factors and per-level ones (fine levels widened more, the deepest not at all)."""
    narrow, wide = _net(narrow_width), _net(None, seed=1, channels=wide_channels)
    x = torch.rand(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = wide(x)
        wide.load_state_dict(widen_state_dict(narrow.state_dict(), wide.state_dict()))
        after, reference = wide(x), narrow(x)
    assert (before - reference).abs().max() > 0.1  # a random wide network is another function
    torch.testing.assert_close(after, reference, rtol=1e-3, atol=1e-3)


def test_noise_separates_the_copies_of_a_channel():
    narrow, wide = _net(4), _net(8)
    exact = widen_state_dict(narrow.state_dict(), wide.state_dict())
    noisy = widen_state_dict(narrow.state_dict(), wide.state_dict(), noise=0.01,
                             generator=torch.Generator().manual_seed(0))
    key = "backbone.encoders.0.conv1.conv.weight"  # [8, 1, 3, 3, 3]: output channels 2c and 2c + 1 copy channel c
    assert torch.equal(exact[key][0], exact[key][1])
    assert not torch.equal(noisy[key][0], noisy[key][1])
    torch.testing.assert_close(noisy[key], exact[key], rtol=0, atol=0.05 * exact[key].std().item())
    for k in ("controller.weight", "text_to_code.0.weight"):  # not widened: copied as they are
        assert torch.equal(noisy[k], narrow.state_dict()[k])


def test_shapes_that_are_not_a_widening_are_refused():
    narrow = _net(4)
    with pytest.raises(ValueError, match="backbone.encoders.0.conv1.conv.weight"):  # 4 -> 6 channels: not whole copies
        widen_state_dict(narrow.state_dict(), _net(6).state_dict())
    with pytest.raises(ValueError, match="backbone.encoders.2.conv1.conv.weight"):  # 16 -> 8: narrower
        widen_state_dict(narrow.state_dict(), _net(None, channels=[8, 8, 8]).state_dict())
    with pytest.raises(ValueError, match="do not belong"):
        widen_state_dict(_net(4, depth=1).state_dict(), _net(12).state_dict())


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


def test_cli_widens_each_level_by_its_own_factor(tmp_path, capsys):
    narrow = UniversalModel(img_size=(32, 32, 32), feature_size=4).eval()  # channels 4, 8, 16, 32, 64
    torch.save(narrow.state_dict(), tmp_path / "narrow.pt")
    channels = [24, 24, 32, 32, 64]
    assert main(["--ckpt", str(tmp_path / "narrow.pt"), "--out", str(tmp_path / "wide.pt"), "--feature_size", "4",
                 "--channels", ",".join(map(str, channels)), "--noise", "0"]) == 0
    assert f'--unet_channels "{channels}"' in capsys.readouterr().out
    wide = UniversalModel(img_size=(32, 32, 32), backbone_kwargs={"channels": channels}).eval()
    wide.load_state_dict(torch.load(tmp_path / "wide.pt", weights_only=True))
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(wide(x).sigmoid(), narrow(x).sigmoid(), rtol=0, atol=1e-4)
    assert main(["--ckpt", str(tmp_path / "narrow.pt"), "--out", str(tmp_path / "x.pt"), "--feature_size", "4",
                 "--channels", "24,24,32,32"]) == 2  # 4 levels: a network of depth 3, not a widening of depth 4
    assert "do not belong" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()
