"""Backbones of the Universal Model: each returns ``(bottleneck, full_resolution_feature)``.

* ``bottleneck``: the deepest feature map, ``[B, bottleneck_channels, *spatial / 2**depth]``; its global
  average is the image code of the controller.
* ``full_resolution_feature``: the last decoder feature at input resolution, ``[B, feature_channels, *spatial]``;
  it is reduced to 8 channels and fed to the per-class dynamic heads.

Two choices: ``"swinunetr"`` (MONAI ``SwinUNETR``, the paper's backbone) and ``"unet"``, a small residual-free
3D U-Net with instance norm that trains on a CPU (instance norm, unlike the original U-Net's always-training
batch norm, gives the same result for a patch in ``train()`` and ``eval()``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from monai.networks.blocks.dynunet_block import UnetBasicBlock, UnetUpBlock
from monai.networks.nets import SwinUNETR

__all__ = ["LightUNetBackbone", "SwinUNETRBackbone", "build_backbone", "BACKBONES"]


class LightUNetBackbone(nn.Module):
    """A small 3D U-Net: ``depth`` stride-2 levels, channels ``feature_size * 2**level`` unless ``channels`` is given.

    Args:
        in_channels: image channels (1 for CT).
        feature_size: channels at full resolution (also the ``feature_channels`` returned).
        depth: number of down-samplings (default 4, or ``len(channels) - 1``); input sizes must be divisible by
            ``2**depth``.
        channels: channels of each level, full resolution first; overrides ``feature_size``. Widening only the fine
            levels buys full-resolution capacity where the time goes, at few parameters (the deep levels hold most
            weights but see 1/8 of the voxels of the level above).
    """

    def __init__(
        self, in_channels: int = 1, feature_size: int = 16, depth: int | None = None,
        channels: Sequence[int] | None = None,
    ):
        super().__init__()
        if channels is None:
            depth = 4 if depth is None else depth
            chans = [feature_size * 2**i for i in range(depth + 1)]
        else:
            chans = [int(c) for c in channels]
            if len(chans) < 2 or min(chans) < 1 or (depth is not None and len(chans) != depth + 1):
                want = "at least 2" if depth is None else depth + 1
                raise ValueError(f"LightUNetBackbone: channels {list(channels)} must be {want} positive integers")
            depth = len(chans) - 1
        norm, act = "instance", ("leakyrelu", {"inplace": True, "negative_slope": 0.01})
        self.encoders = nn.ModuleList(
            [UnetBasicBlock(3, in_channels, chans[0], 3, 1, norm_name=norm, act_name=act)]
            + [
                UnetBasicBlock(3, chans[i - 1], chans[i], 3, 2, norm_name=norm, act_name=act)
                for i in range(1, depth + 1)
            ]
        )
        self.decoders = nn.ModuleList(
            [
                UnetUpBlock(3, chans[i + 1], chans[i], 3, 1, upsample_kernel_size=2, norm_name=norm, act_name=act)
                for i in reversed(range(depth))
            ]
        )
        self.depth = depth
        self.bottleneck_channels = chans[-1]
        self.feature_channels = chans[0]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skips = []
        for enc in self.encoders:
            x = enc(x)
            skips.append(x)
        bottleneck = x
        for dec, skip in zip(self.decoders, reversed(skips[:-1])):
            x = dec(x, skip)
        return bottleneck, x


class SwinUNETRBackbone(nn.Module):
    """MONAI ``SwinUNETR`` without its output convolution.

    Args:
        in_channels: image channels.
        feature_size: Swin embedding size (48 in the paper); bottleneck has ``16 * feature_size`` channels at
            ``1/32`` resolution, the full-resolution feature ``feature_size`` channels.
        use_checkpoint: gradient checkpointing of the Swin stages (saves memory when training).
    """

    def __init__(self, in_channels: int = 1, feature_size: int = 48, use_checkpoint: bool = False):
        super().__init__()
        self.net = SwinUNETR(
            in_channels=in_channels, out_channels=1, feature_size=feature_size, use_checkpoint=use_checkpoint
        )
        del self.net.out  # the dynamic heads replace the fixed output convolution
        self.depth = 5
        self.bottleneck_channels = 16 * feature_size
        self.feature_channels = feature_size

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.net
        if not torch.jit.is_scripting() and not torch.jit.is_tracing():
            n._check_input_size(x.shape[2:])
        hidden = n.swinViT(x, n.normalize)
        enc0 = n.encoder1(x)
        enc1 = n.encoder2(hidden[0])
        enc2 = n.encoder3(hidden[1])
        enc3 = n.encoder4(hidden[2])
        bottleneck = n.encoder10(hidden[4])
        dec = n.decoder5(bottleneck, hidden[3])
        dec = n.decoder4(dec, enc3)
        dec = n.decoder3(dec, enc2)
        dec = n.decoder2(dec, enc1)
        return bottleneck, n.decoder1(dec, enc0)


BACKBONES = {"unet": (LightUNetBackbone, 16), "swinunetr": (SwinUNETRBackbone, 48)}


def build_backbone(name: str, in_channels: int = 1, feature_size: int | None = None, **kwargs) -> nn.Module:
    """Build a backbone by name (``"unet"`` or ``"swinunetr"``); ``feature_size=None`` takes its default (16 / 48)."""
    if name not in BACKBONES:
        raise ValueError(f"UniversalModel: unknown backbone {name!r}, expected one of {sorted(BACKBONES)}")
    cls, default_fs = BACKBONES[name]
    return cls(in_channels=in_channels, feature_size=feature_size or default_fs, **kwargs)


def check_spatial_size(img_size: Sequence[int], depth: int) -> None:
    """Raise if a patch size is not divisible by ``2**depth`` (needed by both backbones)."""
    m = 2**depth
    if any(int(s) % m for s in img_size):
        raise ValueError(f"UniversalModel: img_size {tuple(img_size)} must be divisible by {m} for this backbone")
