"""Dynamic head of the Universal Model: batched matmul (ours) vs a naive per-class loop vs the original's layout
(8-channel feature repeated once per class + one grouped conv3d), on one 96^3 patch, 32 classes, CPU.

Usage: python benchmarks/bench_universal_dynamic_head.py [--size 96] [--classes 32] [--repeats 3] [--check]
Each variant runs in its own process; prints wall time (s, best of repeats), the growth of peak resident
memory over the inputs (MiB, ru_maxrss) and, with --check, the max |difference| to the naive loop.
It also times a whole UniversalModel forward (``--backbone``, ``--feature_size``) on the same patch and
prints the dynamic head's share of it (issue target: <= 5 %; ``--skip_share`` skips it).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundles" / "universal_abdomen_ct_segmentation"))
from universal_model.dynamic_head import NEGATIVE_SLOPE, dynamic_head, dynamic_head_loop, split_parameters  # noqa: E402
from universal_model.network import UniversalModel  # noqa: E402


def grouped_conv_head(feature: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """The original layout (re-written from its description): repeat the feature K times, grouped 1x1x1 convs."""
    b, k = theta.shape[:2]
    w1, w2, w3, b1, b2, b3 = split_parameters(theta)
    outs = []
    for i in range(b):
        x = feature[i : i + 1].repeat(1, k, 1, 1, 1)  # [1, 8K, ...]: the 32x copy
        x = F.leaky_relu(F.conv3d(x, w1[i].reshape(k * 8, 8, 1, 1, 1), b1[i].reshape(-1), groups=k), NEGATIVE_SLOPE)
        x = F.leaky_relu(F.conv3d(x, w2[i].reshape(k * 8, 8, 1, 1, 1), b2[i].reshape(-1), groups=k), NEGATIVE_SLOPE)
        outs.append(F.conv3d(x, w3[i].reshape(k, 8, 1, 1, 1), b3[i].reshape(-1), groups=k))
    return torch.cat(outs)


VARIANTS = {
    "batched matmul (ours, 4,096-voxel chunks)": lambda f, t: dynamic_head(f, t),
    "batched matmul, 262,144-voxel chunks": lambda f, t: dynamic_head(f, t, voxel_chunk=262144),
    "batched matmul, no chunking": lambda f, t: dynamic_head(f, t, voxel_chunk=0),
    "grouped conv on 32x repeated feature": grouped_conv_head,
    "naive per-class loop": dynamic_head_loop,
}


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_one(name: str, a: argparse.Namespace) -> None:
    torch.manual_seed(0)
    feat = torch.randn(1, 8, a.size, a.size, a.size)
    theta = torch.randn(1, a.classes, 153) * 0.3
    fn = VARIANTS[name]
    with torch.inference_mode():
        ref = dynamic_head_loop(feat, theta) if a.check else None
        base = _rss_mib()
        times = []
        for _ in range(a.repeats):
            t = time.perf_counter()
            out = fn(feat, theta)
            times.append(time.perf_counter() - t)
            del out
        peak = _rss_mib() - base
        diff = f"{(fn(feat, theta) - ref).abs().max().item():.2e}" if ref is not None else "not checked (--check)"
    print(f"{name:42s} {min(times):7.3f} s   peak RSS +{peak:6.0f} MiB   max|diff| {diff}", flush=True)


def _ints(text: str) -> list[int]:
    """``"32,32,64"`` -> ``[32, 32, 64]``."""
    return [int(v) for v in text.split(",")]


def head_share(a: argparse.Namespace) -> None:
    """Share of the dynamic head in one UniversalModel forward (all classes, inference mode)."""
    torch.manual_seed(0)
    width = a.feature_size or (8 if a.backbone == "unet" else 48)
    shape = a.shape or (a.size,) * 3
    kwargs = {"channels": a.unet_channels} if a.unet_channels else {}
    net = UniversalModel(backbone=a.backbone, img_size=shape, feature_size=width, backbone_kwargs=kwargs).eval()
    x = torch.rand(1, 1, *shape)
    with torch.inference_mode():
        net(x)  # warm-up
        full, head = [], []
        for _ in range(a.repeats):
            t = time.perf_counter()
            bottleneck, feature = net.backbone(x)
            feat8, theta = net.precls(feature), net.head_parameters(bottleneck)
            t_head = time.perf_counter()
            dynamic_head(feat8, theta, net.voxel_chunk)
            end = time.perf_counter()
            full.append(end - t)
            head.append(end - t_head)
    f, h = min(full), min(head)
    name = f"channels {a.unet_channels}" if a.unet_channels else f"f{width}"
    print(f"UniversalModel forward ({a.backbone} {name}, {'x'.join(map(str, shape))}, {net.num_classes} classes): "
          f"{f:.3f} s, dynamic head {h:.3f} s = {100 * h / f:.1f} % of the forward", flush=True)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--classes", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip_loop", action="store_true")
    p.add_argument("--check", action="store_true", help="also compare with the naive loop (slower, more memory)")
    p.add_argument("--skip_share", action="store_true", help="do not measure the head's share of a whole forward")
    p.add_argument("--backbone", default="unet", choices=["unet", "swinunetr"], help="backbone of that forward")
    p.add_argument("--feature_size", type=int, default=None, help="its width (default: 8 for unet as shipped, 48 swin)")
    p.add_argument("--unet_channels", type=_ints, default=None, help="U-Net channels per level: 64,64,64,64,128")
    p.add_argument("--shape", type=_ints, default=None, help="X,Y,Z input of the share measurement (default: size³)")
    p.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.variant:
        run_one(a.variant, a)
        return 0
    print(f"# {a.size}^3 patch, {a.classes} classes, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in VARIANTS:
        if a.skip_loop and "loop" in name:
            continue
        cmd = [sys.executable, __file__, "--variant", name, "--size", str(a.size), "--classes", str(a.classes),
               "--repeats", str(a.repeats)] + (["--check"] if a.check else [])
        subprocess.run(cmd, check=True)
    if not a.skip_share:
        head_share(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
