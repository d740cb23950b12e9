"""Synthetic abdominal CT phantoms in the AbdomenAtlas layout (see docs/phantoms.md).

Public API: :func:`generate_case`, :func:`write_case`, :func:`generate_dataset`,
:func:`load_label_space` and the :class:`PhantomCase` dataclass.
"""
from .case import DEFAULT_SHAPE, DEFAULT_SPACING_MM, PhantomCase, generate_case
from .dataset import case_seed, generate_dataset
from .io import write_case
from .label_space import load_label_space

__all__ = ["PhantomCase", "generate_case", "write_case", "generate_dataset", "load_label_space", "case_seed",
           "DEFAULT_SHAPE", "DEFAULT_SPACING_MM"]
