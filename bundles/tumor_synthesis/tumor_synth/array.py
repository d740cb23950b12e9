"""Array transform :class:`SynthesizeTumor`: paints synthetic tumors into a healthy organ of a CT volume."""

from __future__ import annotations

import contextlib
import json
import warnings
from typing import Any

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import RandomizableTransform
from monai.utils import TransformBackends

from . import placement, synthesis
from .presets import SIZE_DRAWS, get_preset

LESIONS_META_KEY = "synthetic_tumors"
_BLAS = None


def _single_thread_blas() -> contextlib.AbstractContextManager:
    """One BLAS thread during a call: the small matrix products are slower with threads on shared cores."""
    global _BLAS
    try:
        if _BLAS is None:
            from threadpoolctl import ThreadpoolController

            _BLAS = ThreadpoolController()
        return _BLAS.limit(limits=1, user_api="blas")
    except ImportError:  # threadpoolctl is optional
        return contextlib.nullcontext()


def lesion_records(source: Any) -> list[dict[str, Any]]:
    """Lesion records written by the transforms, from a MetaTensor, a meta dict, a data dict or the JSON string."""
    if isinstance(source, MetaTensor):
        source = source.meta
    if isinstance(source, dict):
        source = source.get(LESIONS_META_KEY, "[]")
    if isinstance(source, (list, tuple)) and source and isinstance(source[0], str):
        return [r for s in source for r in json.loads(s)]  # collated batch of JSON strings
    return json.loads(source) if isinstance(source, str) else list(source)


def _spacing_of(img: Any, given: Any) -> np.ndarray | None:
    if given is not None:
        return np.asarray(given, dtype=float).reshape(-1)[:3]
    if isinstance(img, MetaTensor):
        return np.asarray(img.pixdim, dtype=float)[:3]
    return None


def _copy_cpu_tensor(x: torch.Tensor) -> torch.Tensor:
    """Copy of a CPU tensor (MetaTensor metadata deep-copied) made by one numpy memcpy.

    ``torch.clone`` of a 42 MB volume took 19 ms against 8 ms for the numpy copy on 2 cores, and 45-60 ms when
    the cores were shared with a training job (measured), so the copy goes through numpy where the dtype allows.
    """
    plain = x.detach().as_tensor() if isinstance(x, MetaTensor) else x.detach()
    try:
        data = torch.from_numpy(np.array(plain.numpy(), copy=True))
    except TypeError:  # dtypes numpy lacks (bfloat16, ...)
        data = plain.clone()
    if isinstance(x, MetaTensor):
        return MetaTensor(data).copy_meta_from(x)
    return data


def _work_array(x: NdarrayOrTensor, inplace: bool) -> tuple[Any, np.ndarray]:
    """(output object, numpy array sharing its memory) for numpy / CPU torch / other-device torch inputs."""
    if isinstance(x, np.ndarray):
        out = x if inplace else x.copy()
        return out, out
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"SynthesizeTumor: expected a numpy array or torch tensor, got {type(x).__name__}")
    if x.device.type != "cpu":
        out = x.detach().cpu().clone()  # synthesized on CPU, moved back in _finish
        return out, np.asarray(out)
    out = x if inplace else _copy_cpu_tensor(x)
    return out, np.asarray(out.detach())


class SynthesizeTumor(RandomizableTransform):
    """Randomly synthesizes tumors inside a healthy organ (liver, pancreas, kidney or a custom preset).

    Each lesion is a randomly rotated ellipsoid (semi-axes in mm from the preset's size class) with a smooth
    elastic boundary, a soft edge, an on-the-fly texture and a mean HU shift relative to the local organ HU.
    Lesion centres lie in the organ at least ``erosion_mm`` deep, lesions avoid vessel labels and each other,
    and are clipped to the organ. All work happens in a small box around each lesion.
    The label gets the preset's ``tumor_label`` (label-space index) and each lesion is recorded (centre,
    diameter in mm, mean HU, ...) as a JSON list under ``meta["synthetic_tumors"]`` of MetaTensor outputs (appended
    to the records of earlier calls, so several organs can be chained) and in :attr:`last_lesions` (this call).

    Args:
        organ: preset name in ``presets.json`` ('liver', 'pancreas', 'kidney') or a preset dictionary.
        prob: probability of synthesizing at all.
        size_class: force one size draw ('tiny', 'small', 'medium', 'large', 'mix'); None draws per preset.
        avoid_vessels: reject lesion positions touching the preset's vessel labels.
        spacing: voxel size in mm for inputs without MetaTensor spacing (default 1 mm with a warning).
        max_tries: candidate centres per lesion before it is given up.
        inplace: write into the inputs instead of copies (faster; the caller's arrays change).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        organ: str | dict[str, Any] = "liver",
        prob: float = 1.0,
        size_class: str | None = None,
        avoid_vessels: bool = True,
        spacing: Any = None,
        max_tries: int = 20,
        inplace: bool = False,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        self.preset = get_preset(organ)
        self.organ = organ if isinstance(organ, str) else "custom"
        if size_class is not None and size_class not in SIZE_DRAWS:
            raise ValueError(f"SynthesizeTumor: size_class must be one of {SIZE_DRAWS}, got {size_class!r}")
        self.size_class = size_class
        self.avoid_vessels = avoid_vessels
        self.spacing = spacing
        self.max_tries = max_tries
        self.inplace = inplace
        self.last_lesions: list[dict[str, Any]] = []

    def __call__(
        self, img: NdarrayOrTensor, label: NdarrayOrTensor, spacing: Any = None, randomize: bool = True
    ) -> tuple[NdarrayOrTensor, NdarrayOrTensor]:
        """Args:
            img: (C, X, Y, Z) CT in HU (numpy, torch or MetaTensor).
            label: (1, X, Y, Z) label map with label-space indices.
            spacing: voxel size in mm; overrides the MetaTensor spacing and the constructor's.
            randomize: draw the ``prob`` coin (False reuses the last draw).

        Returns:
            (image, label) of the input types; unchanged inputs when not applied or the organ is absent.
        """
        if randomize:
            self.randomize(None)
        if not self._do_transform:
            self.last_lesions = []
            return self._finish(img, label, img, label, [], None)
        return self.synthesize(img, label, spacing)

    def synthesize(
        self, img: NdarrayOrTensor, label: NdarrayOrTensor, spacing: Any = None
    ) -> tuple[NdarrayOrTensor, NdarrayOrTensor]:
        """Synthesizes lesions regardless of ``prob`` (see ``__call__``)."""
        if img.ndim != 4 or label.ndim != 4 or label.shape[0] != 1 or tuple(img.shape[1:]) != tuple(label.shape[1:]):
            raise ValueError(
                f"SynthesizeTumor: expected image (C, X, Y, Z) and label (1, X, Y, Z) of the same spatial size, "
                f"got image {tuple(img.shape)} and label {tuple(label.shape)}"
            )
        sp = _spacing_of(img, spacing if spacing is not None else self.spacing)
        if sp is None:
            warnings.warn("SynthesizeTumor: no spacing given for a non-MetaTensor input; assuming 1 mm", stacklevel=2)
            sp = np.ones(3)
        if np.any(sp <= 0):
            raise ValueError(f"SynthesizeTumor: spacing must be positive, got {sp}")
        lab_in = np.asarray(label.detach().cpu() if isinstance(label, torch.Tensor) else label)[0]
        sampler = placement.OrganSampler(lab_in, self.preset["organ_labels"], self.R)
        if not sampler.organ_present():
            self.last_lesions = []
            return self._finish(img, label, img, label, [], None)
        img_out, img_np = _work_array(img, self.inplace)
        lab_out, lab_np = _work_array(label, self.inplace)
        sampler.label = lab_np[0]
        with _single_thread_blas():
            draw, records = synthesis.synthesize(
                img_np, lab_np[0], sampler, self.preset, sp, self.R, self.avoid_vessels, self.max_tries, self.size_class
            )
        affine = np.asarray(img.affine, dtype=float) if isinstance(img, MetaTensor) else np.diag([*sp, 1.0])
        for rec in records:
            rec["organ"] = self.organ
            rec["size_draw"] = draw
            rec["tumor_label"] = int(self.preset["tumor_label"])
            rec["centre_mm"] = [round(float(v), 3) for v in (affine @ np.array([*rec["centre_vox"], 1.0]))[:3]]
        self.last_lesions = records
        return self._finish(img, label, img_out, lab_out, records, draw)

    @staticmethod
    def _finish(img_in, lab_in, img_out, lab_out, records, draw):
        """Appends the records to the MetaTensor metadata (JSON text, so batches collate) and restores devices."""
        for out in (img_out, lab_out):
            if isinstance(out, MetaTensor):
                out.meta[LESIONS_META_KEY] = json.dumps(lesion_records(out.meta) + records)
        if isinstance(img_in, torch.Tensor) and img_in.device.type != "cpu" and img_out is not img_in:
            img_out, lab_out = img_out.to(img_in.device), lab_out.to(lab_in.device)
        return img_out, lab_out
