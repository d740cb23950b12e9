"""UniversalModel and its dynamic head: head == naive per-class loop, class subsets, shapes, class-agnostic weights."""

from __future__ import annotations

import pytest
import torch

import universal_train_data  # noqa: F401  (puts the bundle on sys.path)
from universal_model.dynamic_head import NUM_DYNAMIC_PARAMS, dynamic_head, dynamic_head_loop
from universal_model.network import UniversalModel


def test_153_parameters_per_class():
    assert NUM_DYNAMIC_PARAMS == 153


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("chunk", [0, 1000])
def test_head_equals_naive_loop(dtype, tol, chunk):
    g = torch.Generator().manual_seed(0)
    feature = torch.randn(2, 8, 9, 10, 11, generator=g, dtype=dtype)
    theta = torch.randn(2, 5, 153, generator=g, dtype=dtype)
    fast = dynamic_head(feature, theta, voxel_chunk=chunk)
    slow = dynamic_head_loop(feature, theta)
    assert fast.shape == (2, 5, 9, 10, 11)
    torch.testing.assert_close(fast, slow, rtol=tol, atol=tol)


def test_head_gradients_equal_naive_loop():
    g = torch.Generator().manual_seed(1)
    f1 = torch.randn(1, 8, 6, 6, 6, generator=g, dtype=torch.float64, requires_grad=True)
    t1 = torch.randn(1, 3, 153, generator=g, dtype=torch.float64, requires_grad=True)
    f2, t2 = f1.detach().clone().requires_grad_(), t1.detach().clone().requires_grad_()
    dynamic_head(f1, t1, voxel_chunk=50).square().sum().backward()
    dynamic_head_loop(f2, t2).square().sum().backward()
    torch.testing.assert_close(f1.grad, f2.grad)
    torch.testing.assert_close(t1.grad, t2.grad)


def _tiny(encoding="text", rows=32, dim=12, backbone="unet", **kw):
    torch.manual_seed(0)
    emb = torch.randn(rows, dim) if encoding == "text" else None
    size = kw.pop("img_size", (32, 32, 32))
    return UniversalModel(backbone, img_size=size, num_classes=rows, encoding=encoding, prompt_embeddings=emb,
                          feature_size=4, backbone_kwargs={"depth": 2}, **kw).eval()


@pytest.mark.parametrize("encoding", ["text", "learned"])
def test_class_subset_equals_full_forward_channels(encoding):
    net = _tiny(encoding)
    x = torch.rand(2, 1, 32, 32, 32)
    with torch.no_grad():
        full = net(x)
        sub = net(x, class_indices=[26, 5, 0])
    assert full.shape == (2, 32, 32, 32, 32) and sub.shape == (2, 3, 32, 32, 32)
    torch.testing.assert_close(sub, full[:, [26, 5, 0]], rtol=1e-5, atol=1e-6)


def test_new_prompt_row_keeps_weight_shapes():
    """A new structure is a new prompt row: every weight of the 32-class model loads into a 33-class one."""
    net32 = _tiny(rows=32)
    net33 = _tiny(rows=33)
    net33.load_state_dict(net32.state_dict(), strict=True)
    assert "prompt_embeddings" not in net32.state_dict()  # data, read from prompt_embeddings.pt
    with torch.no_grad():
        assert net33(torch.rand(1, 1, 32, 32, 32)).shape[1] == 33


def test_bad_class_indices_and_shapes():
    net = _tiny()
    with pytest.raises(ValueError, match="class_indices"):
        net(torch.rand(1, 1, 32, 32, 32), class_indices=[32])
    with pytest.raises(ValueError, match="divisible"):
        _tiny(img_size=(30, 32, 32))
    with pytest.raises(ValueError, match="num_classes"):
        UniversalModel(prompt_embeddings=torch.randn(5, 8), num_classes=32)


def test_default_prompt_embeddings_are_the_shipped_file():
    net = UniversalModel(img_size=(32, 32, 32), feature_size=4, backbone_kwargs={"depth": 2})
    assert net.num_classes == 32 and net.prompt_embeddings.shape[0] == 32


def test_swinunetr_backbone_forward():
    torch.manual_seed(0)
    net = UniversalModel("swinunetr", img_size=(64, 64, 64), num_classes=4, prompt_embeddings=torch.randn(4, 12),
                         feature_size=12)
    out = net(torch.rand(1, 1, 64, 64, 64), class_indices=[1, 3])
    assert out.shape == (1, 2, 64, 64, 64)
    out.mean().backward()
    assert net.controller.weight.grad is not None


@pytest.mark.parametrize("encoding", ["text", "learned"])
def test_generated_heads_start_well_conditioned(encoding):
    """Unit-scale controller input: Kaiming-like generated weights and the foreground prior as final bias."""
    from universal_model.dynamic_head import split_parameters

    torch.manual_seed(0)
    net = UniversalModel(img_size=(32, 32, 32), feature_size=8, encoding=encoding, prior_logit=-4.0)
    with torch.no_grad():
        bottleneck, _ = net.backbone(torch.rand(2, 1, 32, 32, 32))
        w1, w2, w3, b1, b2, b3 = split_parameters(net.head_parameters(bottleneck))
    for w in (w1, w2, w3):
        assert 0.3 < float(w.std()) < 0.8  # the text code alone was ~0.03 per entry before layer norm
    assert torch.allclose(b3, torch.full_like(b3, -4.0))
    per_class = w1.flatten(2)[0]  # different classes get clearly different heads
    assert float(torch.cdist(per_class, per_class).fill_diagonal_(1e9).min()) > 0.1


def test_light_unet_per_level_channels():
    """``channels`` sets each level's width (and the depth); the head reads the full-resolution level."""
    net = UniversalModel("unet", img_size=(16, 16, 16), num_classes=3, prompt_embeddings=torch.randn(3, 12),
                         backbone_kwargs={"channels": [12, 12, 8]}).eval()
    assert net.backbone.depth == 2 and net.backbone.feature_channels == 12 and net.backbone.bottleneck_channels == 8
    with torch.no_grad():
        bottleneck, feature = net.backbone(torch.rand(1, 1, 16, 16, 16))
    assert bottleneck.shape == (1, 8, 4, 4, 4) and feature.shape == (1, 12, 16, 16, 16)
    with pytest.raises(ValueError, match="3 positive integers"):
        UniversalModel("unet", img_size=(16, 16, 16), backbone_kwargs={"channels": [12, 8], "depth": 2})
    with pytest.raises(ValueError, match="positive integers"):
        UniversalModel("unet", img_size=(16, 16, 16), backbone_kwargs={"channels": [12, 0, 8]})
