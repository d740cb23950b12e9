"""CLIP-Driven Universal Model (Liu et al., ICCV 2023), re-implemented from its description on MONAI.

Per image ``b`` and class ``k``::

    image code  g_b = Conv1x1(GlobalAvgPool(ReLU(GroupNorm(bottleneck_b))))   -> 256
    task code   t_k = ReLU(Linear(prompt_embedding_k))                     -> 256  ("text"), or a learned code
    theta_bk    = controller([g_b, t_k])                                    -> 153
    logits_bk   = head(theta_bk)(precls(full-resolution feature_b)) (8 -> 8 -> 8 -> 1, see dynamic_head.py)

Every output channel is an independent sigmoid (multi-label). The set of classes is the set of prompt rows:
the backbone, text projection and controller are class-agnostic, so a new structure is a new prompt row plus
fine-tuning, with no change of code or of any weight shape (only the ``learned`` ablation has a per-class table).
Prompt embeddings are data, not weights: a non-persistent buffer read from ``models/prompt_embeddings.pt``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import build_backbone, check_spatial_size
from .dynamic_head import DEFAULT_VOXEL_CHUNK, HEAD_CHANNELS, NUM_DYNAMIC_PARAMS, dynamic_head

__all__ = ["UniversalModel", "DEFAULT_PROMPT_EMBEDDINGS", "CODE_DIM"]

#: ``models/prompt_embeddings.pt`` of this bundle.
DEFAULT_PROMPT_EMBEDDINGS = Path(__file__).resolve().parent.parent / "models" / "prompt_embeddings.pt"
CODE_DIM = 256


def _group_norm(channels: int, groups: int = 16) -> nn.GroupNorm:
    while channels % groups:
        groups //= 2
    return nn.GroupNorm(groups, channels)


def _prompt_matrix(prompt_embeddings: str | os.PathLike | torch.Tensor | None) -> torch.Tensor:
    if isinstance(prompt_embeddings, torch.Tensor):
        emb = prompt_embeddings
        where = "prompt_embeddings tensor"
    else:
        from .text_embeddings import load_prompt_embeddings  # local import: keeps open_clip optional

        path = DEFAULT_PROMPT_EMBEDDINGS if prompt_embeddings is None else Path(prompt_embeddings)
        emb, where = load_prompt_embeddings(path)["embeddings"], str(path)
    if emb.ndim != 2:
        raise ValueError(f"{where}: expected [num_classes, text_dim] embeddings, got shape {tuple(emb.shape)}")
    return emb.detach().float().clone()


class UniversalModel(nn.Module):
    """Universal Model: backbone + text-conditioned controller + per-class dynamic heads.

    Args:
        backbone: ``"unet"`` (light, CPU-trainable) or ``"swinunetr"`` (the paper's).
        in_channels: image channels (1 for CT).
        img_size: training patch size in voxels; checked for divisibility by the backbone's stride.
        num_classes: number of classes; ``None`` takes the number of prompt rows (``text``) or 32 (``learned``).
        encoding: ``"text"`` (frozen prompt embeddings -> Linear -> ReLU) or ``"learned"`` (a learned 256-d code per
            class, the paper's baseline for ablations).
        prompt_embeddings: path of a ``prompt_embeddings.pt`` dict, or a ``[num_classes, text_dim]`` tensor; ``None``
            means the bundle's ``models/prompt_embeddings.pt``. Ignored for ``learned``.
        text_dim: embedding width; ``None`` takes it from the embeddings (must match when given).
        feature_size: backbone width (``unet`` default 16, ``swinunetr`` default 48).
        voxel_chunk: voxels per chunk in the dynamic head (memory bound, see ``dynamic_head``).
        backbone_kwargs: extra keyword arguments of the backbone (``depth`` or per-level ``channels`` for unet,
            ``use_checkpoint`` for swin).
        prior_logit: initial value of every generated final bias (``-4``: sigmoid 0.018, a small structure's share).
    """

    def __init__(
        self,
        backbone: str = "unet",
        in_channels: int = 1,
        img_size: Sequence[int] = (96, 96, 96),
        num_classes: int | None = 32,
        encoding: str = "text",
        prompt_embeddings: str | os.PathLike | torch.Tensor | None = None,
        text_dim: int | None = None,
        feature_size: int | None = None,
        voxel_chunk: int = DEFAULT_VOXEL_CHUNK,
        backbone_kwargs: dict | None = None,
        prior_logit: float = -4.0,
    ):
        super().__init__()
        self.backbone = build_backbone(backbone, in_channels, feature_size, **(backbone_kwargs or {}))
        check_spatial_size(img_size, self.backbone.depth)
        self.encoding = encoding
        self.voxel_chunk = voxel_chunk
        if encoding == "text":
            emb = _prompt_matrix(prompt_embeddings)
            if num_classes is not None and emb.shape[0] != num_classes:
                raise ValueError(f"UniversalModel: {emb.shape[0]} prompt rows but num_classes={num_classes}")
            if text_dim is not None and emb.shape[1] != text_dim:
                raise ValueError(f"UniversalModel: prompt embeddings are {emb.shape[1]}-d but text_dim={text_dim}")
            self.register_buffer("prompt_embeddings", emb, persistent=False)
            self.text_to_code = nn.Sequential(nn.Linear(emb.shape[1], CODE_DIM), nn.ReLU(inplace=True))
        elif encoding == "learned":
            self.class_codes = nn.Embedding(num_classes or 32, CODE_DIM)
        else:
            raise ValueError(f"UniversalModel: encoding must be 'text' or 'learned', got {encoding!r}")
        bc, fc = self.backbone.bottleneck_channels, self.backbone.feature_channels
        self.image_code = nn.Sequential(
            _group_norm(bc), nn.ReLU(inplace=True), nn.AdaptiveAvgPool3d(1), nn.Conv3d(bc, CODE_DIM, 1)
        )
        self.precls = nn.Sequential(_group_norm(fc), nn.ReLU(inplace=True), nn.Conv3d(fc, HEAD_CHANNELS, 1))
        # Conditioning of the generated heads (measured; see docs/README.md): both codes are layer-normalised, so the
        # controller sees unit-scale inputs whatever the text encoder or the backbone width. Without it the text code
        # (a ReLU of a projection of a unit-norm sentence embedding) is ~0.03 per entry and the three generated
        # layers start near zero.
        self.image_norm = nn.LayerNorm(CODE_DIM)
        self.task_norm = nn.LayerNorm(CODE_DIM)
        self.controller = nn.Linear(2 * CODE_DIM, NUM_DYNAMIC_PARAMS)
        # "equalised learning rate": weights ~ N(0, 0.5^2) scaled at run time by 1/sqrt(fan_in), so each generated
        # weight starts with a Kaiming-like spread for the 8-wide layers while an Adam step (about lr per weight,
        # whatever its scale) moves the generated parameters sqrt(fan_in) = 22x less than with a plain Linear; with a
        # plain Linear, 512 coherent weight steps of lr 1e-3 moved every generated weight by ~0.5 per step and the
        # product of the three generated layers drove the logits to -400 within 10 steps (measured).
        self.controller_gain = (2 * CODE_DIM) ** -0.5
        with torch.no_grad():
            nn.init.normal_(self.controller.weight, std=0.5)
            self.controller.bias.zero_()
            # generated final bias b3 starts at a foreground prior of ~2 % (RetinaNet-style)
            self.controller.weight[-1].zero_()
            self.controller.bias[-1].fill_(prior_logit)

    @property
    def num_classes(self) -> int:
        """Number of classes (prompt rows, or rows of the learned code table)."""
        return self.prompt_embeddings.shape[0] if self.encoding == "text" else self.class_codes.num_embeddings

    def task_codes(self, class_indices: torch.Tensor | None = None) -> torch.Tensor:
        """256-d codes ``[K, 256]`` of the requested classes (0-based channel indices), all when ``None``."""
        if self.encoding == "text":
            emb = self.prompt_embeddings if class_indices is None else self.prompt_embeddings[class_indices]
            return self.text_to_code(emb)
        w = self.class_codes.weight
        return w if class_indices is None else w[class_indices]

    def _indices(self, class_indices, device) -> torch.Tensor | None:
        if class_indices is None:
            return None
        idx = torch.as_tensor(class_indices, dtype=torch.long, device=device).reshape(-1)
        if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= self.num_classes:
            raise ValueError(
                f"UniversalModel: class_indices must be 0-based channels in [0, {self.num_classes}), got {idx.tolist()}"
            )
        return idx

    def forward(self, x: torch.Tensor, class_indices: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Segment ``x [B, in_channels, *spatial]``; returns logits ``[B, K, *spatial]``.

        ``K = len(class_indices)`` in the given order (0-based channels), or all classes when ``None``. Heads are
        generated only for the requested classes.
        """
        idx = self._indices(class_indices, x.device)
        bottleneck, feature = self.backbone(x)
        return dynamic_head(self.precls(feature), self.head_parameters(bottleneck, idx), self.voxel_chunk)

    def head_parameters(self, bottleneck: torch.Tensor, class_indices: torch.Tensor | None = None) -> torch.Tensor:
        """Generated head parameters ``theta [B, K, 153]`` from the bottleneck and the classes' codes."""
        image_code = self.image_norm(self.image_code(bottleneck).flatten(1))  # [B, 256]
        task = self.task_norm(self.task_codes(class_indices))  # [K, 256]
        b, k = image_code.shape[0], task.shape[0]
        cond = torch.cat([image_code[:, None].expand(b, k, CODE_DIM), task[None].expand(b, k, CODE_DIM)], dim=-1)
        return F.linear(cond, self.controller.weight * self.controller_gain, self.controller.bias)
