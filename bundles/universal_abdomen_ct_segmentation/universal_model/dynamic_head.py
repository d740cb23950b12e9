"""Text-driven dynamic segmentation heads: 8 -> 8 -> 8 -> 1 per class, 153 generated parameters per class.

The controller produces, for every image ``b`` and class ``k``, a parameter vector ``theta[b, k]`` of length 153,
laid out as ``[W1 (8x8) | W2 (8x8) | W3 (1x8) | b1 (8) | b2 (8) | b3 (1)]``. Each head is three 1x1x1
convolutions with leaky ReLU between them, applied to the same 8-channel full-resolution feature ``f[b]``.

Why batched matmuls instead of the original grouped convolution: the original copies the 8-channel feature once
per class (``K * 8`` channels, 32x the feature map, 864 MiB fp32 for one 96^3 patch) and then runs a grouped
``conv3d``; on a CPU that head is memory-bound and was measured slower than the whole 2.2x cheaper bmm. Here the
first layer is one shared-input matmul ``[K*8, 8] @ [8, N]`` (the feature is read once, never copied), the next
two are block-diagonal batched matmuls over classes, and the voxels are processed in chunks of ``voxel_chunk``
so that the transient ``[K, 8, chunk]`` activations stay bounded in inference (under autograd, activations of
every chunk are kept for the backward pass, as in any network).

Why chunks of 4,096 voxels: the head is memory-bound, and a ``[32, 8, 4096]`` fp32 activation (4 MiB) stays in the
CPU cache between the three layers while a 262,144-voxel chunk (256 MiB) goes through main memory after every
layer. Measured on one 64^3 feature, 32 classes, one thread beside a training job: forward + backward 2.26 s ->
0.83 s; inference figures on an idle machine: ``benchmarks/bench_universal_dynamic_head.py`` (0.380 s -> 0.070 s).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "HEAD_CHANNELS",
    "NUM_DYNAMIC_PARAMS",
    "DEFAULT_VOXEL_CHUNK",
    "split_parameters",
    "dynamic_head",
    "dynamic_head_loop",
]

HEAD_CHANNELS = 8
#: slope of the leaky ReLUs between the generated layers. The original uses ReLU; with a shared controller one bad
#: step can drive the generated biases of every class negative, every hidden unit of every head goes dead at once and
#: no gradient reaches W1..W3 again (observed: all logits pinned at the final bias after 20 steps).
NEGATIVE_SLOPE = 0.1
#: 8*8 + 8*8 + 8*1 weights + 8 + 8 + 1 biases.
NUM_DYNAMIC_PARAMS = 2 * HEAD_CHANNELS * HEAD_CHANNELS + HEAD_CHANNELS + 2 * HEAD_CHANNELS + 1


def split_parameters(theta: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Split ``theta [B, K, 153]`` into the head's weights and biases.

    Returns:
        ``w1 [B,K,8,8], w2 [B,K,8,8], w3 [B,K,1,8], b1 [B,K,8], b2 [B,K,8], b3 [B,K,1]``.
    """
    if theta.shape[-1] != NUM_DYNAMIC_PARAMS:
        raise ValueError(f"dynamic head: expected {NUM_DYNAMIC_PARAMS} parameters per class, got {theta.shape[-1]}")
    c = HEAD_CHANNELS
    sizes = [c * c, c * c, c, c, c, 1]
    w1, w2, w3, b1, b2, b3 = torch.split(theta, sizes, dim=-1)
    lead = theta.shape[:-1]
    return w1.reshape(*lead, c, c), w2.reshape(*lead, c, c), w3.reshape(*lead, 1, c), b1, b2, b3


DEFAULT_VOXEL_CHUNK = 4096


def dynamic_head(feature: torch.Tensor, theta: torch.Tensor, voxel_chunk: int = DEFAULT_VOXEL_CHUNK) -> torch.Tensor:
    """Apply K generated heads to one shared feature map, all classes at once.

    Args:
        feature: ``[B, 8, *spatial]`` full-resolution feature.
        theta: ``[B, K, 153]`` generated parameters.
        voxel_chunk: voxels per chunk (bounds the ``[B, K, 8, chunk]`` intermediates); ``<= 0`` means no chunking.

    Returns:
        logits ``[B, K, *spatial]``.
    """
    b, c = feature.shape[:2]
    if c != HEAD_CHANNELS:
        raise ValueError(f"dynamic head: feature must have {HEAD_CHANNELS} channels, got {c}")
    if theta.shape[0] != b:
        raise ValueError(f"dynamic head: batch of feature ({b}) and parameters ({theta.shape[0]}) differ")
    k = theta.shape[1]
    w1, w2, w3, b1, b2, b3 = split_parameters(theta)
    # all classes' first layers stacked: one matmul reads the shared feature once
    w1, b1 = w1.reshape(b, k * c, c), b1.reshape(b, k * c, 1)
    # later layers: block-diagonal, one small matmul per (image, class), batched over B*K
    w2, b2 = w2.reshape(b * k, c, c), b2.reshape(b * k, c, 1)
    w3, b3 = w3.reshape(b * k, 1, c), b3.reshape(b * k, 1, 1)
    flat = feature.reshape(b, c, -1)
    n = flat.shape[-1]
    step = n if voxel_chunk <= 0 else voxel_chunk
    # chunks are written into one preallocated output (a list + torch.cat would hold the logits twice)
    out = flat.new_empty((b, k, n), dtype=torch.result_type(flat, theta))
    for start in range(0, n, step):
        f = flat[..., start : start + step]
        # baddbmm fuses the bias; the in-place leaky ReLU is safe (baddbmm's backward does not need its output)
        h = F.leaky_relu(torch.baddbmm(b1, w1, f), NEGATIVE_SLOPE, inplace=True).reshape(b * k, c, -1)
        h = F.leaky_relu(torch.baddbmm(b2, w2, h), NEGATIVE_SLOPE, inplace=True)
        out[..., start : start + step] = torch.baddbmm(b3, w3, h).reshape(b, k, -1)
    return out.reshape(b, k, *feature.shape[2:])


def dynamic_head_loop(feature: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Reference implementation: a Python loop over images and classes of three ``conv3d`` calls.

    Slow; kept for tests and benchmarks of :func:`dynamic_head`.
    """
    b, k = theta.shape[:2]
    w1, w2, w3, b1, b2, b3 = split_parameters(theta)
    out = feature.new_empty((b, k, *feature.shape[2:]))
    for i in range(b):
        for j in range(k):
            h = F.conv3d(feature[i : i + 1], w1[i, j][..., None, None, None], b1[i, j])
            h = F.conv3d(F.leaky_relu(h, NEGATIVE_SLOPE), w2[i, j][..., None, None, None], b2[i, j])
            h = F.conv3d(F.leaky_relu(h, NEGATIVE_SLOPE), w3[i, j][..., None, None, None], b3[i, j])
            out[i, j] = h[0, 0]
    return out
