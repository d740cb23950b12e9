"""Dice over the labelled classes only (validation with partial labels)."""

from __future__ import annotations

import torch

from monai.metrics import DiceMetric

__all__ = ["MaskedDiceMetric"]


class MaskedDiceMetric(DiceMetric):
    """``DiceMetric`` (binary channels, include_background) that gives NaN for unlabelled channels (label -1).

    NaN entries are skipped by the mean reductions, so the aggregate is the mean Dice over labelled,
    non-empty (sample, class) pairs (empty ground truth is also NaN with ``ignore_empty=True``).
    """

    def __init__(self, reduction: str = "mean", ignore_empty: bool = True, get_not_nans: bool = False):
        super().__init__(
            include_background=True, reduction=reduction, ignore_empty=ignore_empty, get_not_nans=get_not_nans
        )

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        labelled = y.flatten(2).amin(dim=-1) >= 0
        dice = super()._compute_tensor(y_pred, y.clamp(min=0))
        return torch.where(labelled.to(dice.device), dice, torch.full_like(dice, float("nan")))
