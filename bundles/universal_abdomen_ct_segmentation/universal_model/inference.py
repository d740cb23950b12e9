"""Glue of ``configs/inference.json``: the network restricted to the prompted classes, and the run's constants.

The sliding-window inferer calls ``network(window)``; ``PromptedNetwork`` forwards ``class_indices`` so that dynamic
heads are generated only for the prompted classes (fewer output channels, less memory and time).
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from torch import nn

__all__ = ["PromptedNetwork", "run_info", "release_tensor", "ReleaseItemsd"]


class PromptedNetwork(nn.Module):
    """``network(x, class_indices=...)`` as a one-argument module.

    Args:
        network: a ``UniversalModel`` (or any module whose forward takes ``class_indices``).
        class_indices: 0-based output channels to produce, ``None`` for all.
    """

    def __init__(self, network: nn.Module, class_indices: Sequence[int] | None = None):
        super().__init__()
        self.network = network
        self.class_indices = None if class_indices is None else [int(i) for i in class_indices]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, K, *spatial]`` of the requested classes, in the dtype of ``x``.

        The network always computes in float32; a float16 input (``stitch_dtype`` in ``inference.json``) only makes
        the sliding-window stitching buffer half the size.
        """
        dtype = x.dtype
        x = x.float()
        y = self.network(x) if self.class_indices is None else self.network(x, class_indices=self.class_indices)
        return y.to(dtype)


def run_info(prompts, class_indices, settings: dict | None = None, meta_file: str | None = None) -> dict:
    """Constant part of every ``report.json``: prompts, bundle version (from ``metadata.json``) and settings."""
    import json
    from pathlib import Path

    version = None
    if meta_file and Path(meta_file).is_file():
        try:
            version = json.loads(Path(meta_file).read_text()).get("version")
        except (json.JSONDecodeError, OSError):
            version = None
    return {
        "bundle_version": version,
        "prompts": prompts,
        "class_indices": class_indices,
        "settings": dict(settings or {}),
    }


def release_tensor(t: Any) -> None:
    """Free the storage of tensor ``t`` in place (every reference to this tensor object sees an empty tensor).

    MONAI's evaluator keeps the batch and output dicts alive while the post-processing runs and until the next
    iteration, so dropping a key from the transform's dict frees nothing; large intermediates (the float logits,
    the per-class masks of a finished case) are released this way instead.
    """
    if isinstance(t, torch.Tensor):
        base = t._base  # a decollated item is a view of the batched tensor, which owns the storage
        t.data = torch.empty(0, dtype=t.dtype, device=t.device)
        if base is not None:
            base.data = torch.empty(0, dtype=base.dtype, device=base.device)


class ReleaseItemsd(MapTransform):
    """Release (see ``release_tensor``) and delete the items ``keys`` of a finished case."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = True):
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            release_tensor(d.pop(key))
        return d
