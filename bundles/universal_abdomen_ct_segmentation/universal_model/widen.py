"""Start a wider light U-Net from trained narrower weights without changing what it computes.

Function-preserving widening (Net2WiderNet, Chen et al., ICLR 2016): every backbone channel is copied ``factor``
times (one factor for all levels, or one per level) and the weights that read a widened channel are divided by that
factor, so each copy carries the same value and their sum equals the original input. It is exact for this model because

* the light U-Net normalises each channel on its own (instance norm, no affine) and its convolutions have no bias,
* the copies of one channel are adjacent (``repeat_interleave``), so a skip concatenation ``[up, skip]`` (both halves
  from one level, so one factor) maps to the wide channel ``j`` from the narrow channel ``j // factor``, and the group
  norms of the image code and of ``precls`` see each original group's channels in the same proportions (checked
  numerically by :func:`widen_checkpoint`),
* the controller, text projection and dynamic heads read only the 256-d codes and the 8 ``precls`` channels, whose
  widths do not change.

Why: the shipped width-8 network's dynamic head is 20-27 % of its forward (the issue's target is 5 %), and a wider
decoder is one of the changes left to try for the lesion channels (docs/README.md, Performance). A wider network
trained from scratch first has to learn the organs again; started from a widened copy it begins at the narrow
network's Dice. Identical copies of a channel get identical updates forever, so ``noise`` perturbs the copied weights
(relative to each tensor's spread) to let them drift apart in training.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import torch

from .io import load_weights
from .network import UniversalModel
from .writer import atomic_write

__all__ = ["widen_state_dict", "widen_checkpoint", "main"]

#: Layers whose weight is ``[in, out, ...]`` (transposed convolutions); every other weight is ``[out, in, ...]``.
_TRANSPOSED = ("transp_conv",)


def _input_dim(key: str, tensor: torch.Tensor) -> int | None:
    """The dimension of ``tensor`` that reads channels of the previous layer, or ``None`` (norms, biases)."""
    if tensor.ndim < 2:
        return None
    return 0 if any(name in key for name in _TRANSPOSED) else 1


def widen_state_dict(
    narrow: dict[str, torch.Tensor],
    wide: dict[str, torch.Tensor],
    noise: float = 0.0,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Fill the shapes of ``wide`` (a wider model's state dict) from ``narrow`` (same keys).

    Each dimension that grows is widened by its own factor ``wide / narrow`` (so the levels of the U-Net may grow by
    different factors, e.g. 8-16-32-64-128 -> 48-48-64-64-128); both halves of a skip concatenation come from the
    same level and so share a factor, which keeps the ``j // factor`` mapping exact.

    Args:
        narrow: trained weights.
        wide: state dict of the target model; only its keys and shapes are used.
        noise: standard deviation of Gaussian noise added to widened weights, relative to each tensor's standard
            deviation (0: exact copy of the narrow network's function).
        generator: random generator of the noise.

    Raises:
        ValueError naming the first key whose shapes are not whole multiples.
    """
    if set(narrow) != set(wide):
        missing, extra = sorted(set(wide) - set(narrow)), sorted(set(narrow) - set(wide))
        raise ValueError(
            f"widen: the weights do not belong to this model (missing {missing[:3]}, unexpected {extra[:3]})"
        )
    out = {}
    for key, target in wide.items():
        t = narrow[key].detach().float().cpu()
        if t.ndim != target.ndim:
            raise ValueError(f"widen: {key} has shape {tuple(t.shape)}, the wide model {tuple(target.shape)}")
        widened = False
        for dim, (n, w) in enumerate(zip(t.shape, target.shape)):
            if n == w:
                continue
            if w < n or w % n:
                raise ValueError(f"widen: {key} has shape {tuple(t.shape)}, cannot widen it to {tuple(target.shape)}")
            factor = w // n
            t = t.repeat_interleave(factor, dim=dim)
            if dim == _input_dim(key, t):
                t = t / factor
            widened = True
        if widened and noise > 0 and t.ndim >= 2:
            t = t + noise * t.std() * torch.randn(t.shape, generator=generator)
        out[key] = t.to(target.dtype)
    return out


def widen_checkpoint(
    ckpt: str | Path,
    out: str | Path,
    feature_size: int,
    channels: Sequence[int],
    noise: float = 0.001,
    seed: int = 0,
    check_size: int = 32,
) -> dict[str, float]:
    """Widen the light U-Net weights in ``ckpt`` (width ``feature_size``) to the per-level ``channels``; write ``out``.

    Before the noise is added, both networks segment one random ``check_size``³ patch and must agree (the widening is
    exact up to float rounding); the returned dict gives the largest difference of the class probabilities on that
    patch without and with the noise.
    """
    size = (check_size,) * 3
    narrow_model = load_weights(UniversalModel(img_size=size, feature_size=feature_size), ckpt)
    wide_model = UniversalModel(img_size=size, backbone_kwargs={"channels": list(channels)}).eval()
    narrow = narrow_model.state_dict()
    x = torch.rand((1, 1, *size), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        reference = narrow_model(x).sigmoid()
        wide_model.load_state_dict(widen_state_dict(narrow, wide_model.state_dict()))
        exact = (wide_model(x).sigmoid() - reference).abs().max().item()
        if exact > 1e-3:
            raise ValueError(f"{ckpt}: the widened network's probabilities differ from the original's by {exact:.3g}")
        g = torch.Generator().manual_seed(seed)
        state = widen_state_dict(narrow, wide_model.state_dict(), noise=noise, generator=g)
        wide_model.load_state_dict(state)
        noisy = (wide_model(x).sigmoid() - reference).abs().max().item()
    atomic_write(out, lambda tmp: torch.save(state, tmp))
    return {"max_probability_difference": exact, "max_probability_difference_with_noise": noisy}


def main(argv: Sequence[str] | None = None) -> int:
    """CLI; errors become one line on stderr and exit status 2."""
    p = argparse.ArgumentParser(description="Widen trained light U-Net weights (function-preserving)")
    p.add_argument("--ckpt", required=True, help="trained weights, e.g. models/model.pt")
    p.add_argument("--out", required=True, help="where to write the wide weights")
    p.add_argument("--feature_size", type=int, default=8, help="width of the trained network (default 8)")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--factor", type=int, help="every level widened by this factor (width feature_size * factor)")
    how.add_argument("--channels", help="channels per level of the wide network, e.g. 64,64,64,64,128")
    p.add_argument("--noise", type=float, default=0.001, help="relative noise that lets copied channels drift apart")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    try:
        if a.channels:
            channels = [int(c) for c in a.channels.split(",")]
        elif a.factor >= 1:
            channels = [a.feature_size * a.factor * 2**level for level in range(5)]
        else:
            raise ValueError(f"--factor must be >= 1, got {a.factor}")
        diff = widen_checkpoint(a.ckpt, a.out, a.feature_size, channels, a.noise, a.seed)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    hint = f"--unet_channels \"{channels}\"" if a.channels else f"--feature_size {channels[0]}"
    print(
        f"wrote {a.out}: channels {channels} (train with {hint} --initial_weights {a.out}); largest probability "
        f"difference on a random patch {diff['max_probability_difference']:.2g} exact, "
        f"{diff['max_probability_difference_with_noise']:.2g} with noise {a.noise}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
