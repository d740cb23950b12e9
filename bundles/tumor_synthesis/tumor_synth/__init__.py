"""tumor_synth: clean-room, spacing-aware synthetic tumor generation for abdominal CT (MONAI transforms)."""

from .array import LESIONS_META_KEY, SynthesizeTumor, lesion_records
from .dictionary import SynthesizeTumord, SynthesizeTumorD, SynthesizeTumorDict
from .presets import diameter_range_mm, get_preset, load_presets, validate_preset

__all__ = [
    "LESIONS_META_KEY",
    "SynthesizeTumor",
    "SynthesizeTumord",
    "SynthesizeTumorD",
    "SynthesizeTumorDict",
    "diameter_range_mm",
    "get_preset",
    "lesion_records",
    "load_presets",
    "validate_preset",
]
