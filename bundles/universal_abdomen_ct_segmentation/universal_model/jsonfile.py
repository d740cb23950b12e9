"""Reading JSON files with errors that name the file and the problem."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Parsed content of ``path``; ``what`` names the file's role in the error (e.g. "datalist").

    Raises:
        FileNotFoundError: ``<path>: <what> not found``.
        ValueError: ``<path>: not valid JSON (...)``.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: {what} not found")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from e
