"""Dictionary transform :class:`SynthesizeTumord` (aliases ``SynthesizeTumorD``, ``SynthesizeTumorDict``)."""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, RandomizableTransform

from .array import LESIONS_META_KEY, SynthesizeTumor, lesion_records


class SynthesizeTumord(RandomizableTransform, MapTransform):
    """Dictionary-based :class:`SynthesizeTumor`.

    Args:
        keys: the image key (one key; CT in HU on the label's grid).
        label_key: key of the (1, X, Y, Z) label map.
        organ: preset name or dictionary (see :class:`SynthesizeTumor`).
        prob: probability of synthesizing at all.
        lesions_key: key under which the JSON list of lesion records is stored in the data dictionary
            (also under ``meta["synthetic_tumors"]`` of MetaTensor image and label); records of chained
            transforms (e.g. liver then kidney) are appended.
        allow_missing_keys: skip missing image keys instead of raising.
        kwargs: further :class:`SynthesizeTumor` arguments (size_class, avoid_vessels, spacing, max_tries, inplace).
    """

    backend = SynthesizeTumor.backend

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str = "label",
        organ: str | dict[str, Any] = "liver",
        prob: float = 1.0,
        lesions_key: str = LESIONS_META_KEY,
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.label_key = label_key
        self.lesions_key = lesions_key
        if len(self.keys) != 1:
            raise ValueError(f"SynthesizeTumord: exactly one image key is supported, got {self.keys}")
        self.synth = SynthesizeTumor(organ=organ, prob=1.0, **kwargs)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> SynthesizeTumord:
        super().set_random_state(seed, state)
        self.synth.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        if self.label_key not in d:
            raise KeyError(f"SynthesizeTumord: label key {self.label_key!r} not in data (keys: {list(d)})")
        self.randomize(None)
        keys = list(self.key_iterator(d))
        records: list[dict[str, Any]] = []
        if self._do_transform and keys:
            first = keys[0]
            d[first], label = self.synth.synthesize(d[first], d[self.label_key])
            records = self.synth.last_lesions
            d[self.label_key] = label
        else:
            for key in keys:
                img, lab = d[key], d[self.label_key]
                d[key], d[self.label_key] = SynthesizeTumor._finish(img, lab, img, lab, [], None)
        d[self.lesions_key] = json.dumps(lesion_records(d.get(self.lesions_key, "[]")) + records)
        return d


SynthesizeTumorD = SynthesizeTumorDict = SynthesizeTumord
