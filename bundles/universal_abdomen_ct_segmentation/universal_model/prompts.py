"""Turn user prompts into the network's 0-based output channels.

Accepted: ``None`` / ``"all"`` (every class); a list such as ``['liver', 'liver tumor']``; a string holding a list
(``"['liver','liver tumor']"``); free text such as ``"Segment pancreatic tumors, if any"``; an item that is just
``organs`` (the 25 organ, vessel and bone classes) or ``lesions`` (the 7 lesion classes). Matching uses each class's
``name``, ``file_name`` and ``prompt`` (the text after "... of a"), case-insensitive, plural-tolerant ("tumors"), with
adjectives mapped to organs ("pancreatic" -> pancreas, "renal" -> kidney); a bare paired organ ("kidneys", "lungs")
means both sides. Unknown names raise ``ValueError`` listing the valid names.
"""

from __future__ import annotations

import ast
import os
import re
from typing import Any

from .label_space import classes, lesion_hosts

__all__ = ["resolve_prompts", "parse_prompts", "valid_names"]

_ADJECTIVES = {
    "pancreatic": "pancreas",
    "renal": "kidney",
    "splenic": "spleen",
    "pulmonary": "lung",
    "colonic": "colon",
    "gallbladder": "gall bladder",
    "adrenals": "adrenal gland",
    "adrenal": "adrenal gland",
    "femoral": "femur",
    "tumour": "tumor",
    "cancer": "tumor",
    "ivc": "postcava",
}
_KEEP_S = ("pancreas", "esophagus", "celiac", "vas", "os")
_ALL = {"", "all", "everything", "*"}


def _singular(word: str) -> str:
    if word in _KEEP_S or word.endswith(("ss", "us", "as", "is")) or len(word) <= 3:
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith("s"):
        return word[:-1]
    return word


def _norm(text: str) -> str:
    words = re.sub(r"[^a-z0-9]+", " ", str(text).lower()).split()
    words = [_singular(w) for w in words]
    words = " ".join(_ADJECTIVES.get(w, w) for w in words).split()
    words = [w for w in words if w not in ("a", "an", "the", "of")]
    return " ".join(words)


def _aliases(label_space) -> dict[str, list[int]]:
    """Normalised alias -> 1-based class indices."""
    table: dict[str, list[int]] = {}
    for c in classes(label_space):
        idx = int(c["index"])
        prompt = str(c.get("prompt", ""))
        tail = re.split(r"\bof an?\b", prompt)[-1] if prompt else ""
        for alias in {c["name"], c["file_name"].replace("_", " "), tail, prompt}:
            key = _norm(alias)
            if key:
                table.setdefault(key, [])
                if idx not in table[key]:
                    table[key].append(idx)
    # a bare paired organ means both sides: "kidney" -> right + left
    for key, idx in list(table.items()):
        for side in ("right", "left"):
            words = key.split()
            if side in words:
                both = " ".join(w for w in words if w != side)
                table.setdefault(both, [])
                table[both] = sorted(set(table[both]) | set(idx))
    return table


def valid_names(label_space=None) -> list[str]:
    """The class names and file names a prompt may use (for error messages)."""
    return [f"{c['name']} ({c['file_name']})" for c in classes(label_space)]


def _match_text(text: str, table: dict[str, list[int]]) -> list[int]:
    """Indices of every alias found in ``text`` (longest aliases first; a word is used once)."""
    words = _norm(text).split()
    if " ".join(words) in table:
        return list(table[" ".join(words)])
    found: list[int] = []
    used = [False] * len(words)
    for alias in sorted(table, key=lambda a: -len(a.split())):
        aw = alias.split()
        for i in range(len(words) - len(aw) + 1):
            if words[i : i + len(aw)] == aw and not any(used[i : i + len(aw)]):
                used[i : i + len(aw)] = [True] * len(aw)
                found += [j for j in table[alias] if j not in found]
    return found


def parse_prompts(prompts: Any) -> list[str] | None:
    """``None`` for "all classes", else a list of prompt strings (a string holding a Python list is parsed)."""
    if prompts is None:
        return None
    if isinstance(prompts, str):
        text = prompts.strip()
        if text.startswith("[") or text.startswith("("):
            try:
                prompts = ast.literal_eval(text)
            except (ValueError, SyntaxError) as e:
                raise ValueError(f"--prompts: cannot parse {text!r} as a list ({e})") from e
        else:
            prompts = [text]
    if not isinstance(prompts, (list, tuple)):
        raise ValueError(f"--prompts: expected a list of class names or a sentence, got {type(prompts).__name__}")
    items = [str(p).strip() for p in prompts]
    if not items or all(i.lower() in _ALL for i in items):
        return None
    return items


def resolve_prompts(
    prompts: Any,
    label_space: dict | str | os.PathLike | None = None,
    include_hosts: bool = True,
) -> list[int] | None:
    """0-based output channels for ``prompts`` (sorted), or ``None`` for all classes.

    Args:
        prompts: see the module docstring.
        label_space: label-space dict or path (``None``: the bundle's ``configs/label_space.json``).
        include_hosts: also segment the host organs of requested lesion classes, so that the host-organ rule of
            the post-processing can run (a pancreatic tumor is only kept inside the pancreas).

    Raises:
        ValueError: a prompt matches no class; the message lists the valid names.
    """
    items = parse_prompts(prompts)
    if items is None:
        return None
    table = _aliases(label_space)
    wanted: list[int] = []
    for item in items:
        group = _norm(item)  # whole items only: "liver lesions" stays a liver prompt, not every lesion class
        if group in ("organ", "lesion"):
            wanted += [int(c["index"]) for c in classes(label_space) if (c["kind"] == "lesion") == (group == "lesion")]
            continue
        hits = _match_text(item, table)
        if not hits:
            raise ValueError(f"--prompts: unknown class {item!r}; valid names: {', '.join(valid_names(label_space))}")
        wanted += hits
    if include_hosts:
        hosts = lesion_hosts(label_space)
        wanted += [h for i in list(wanted) for h in hosts.get(i, [])]
    return sorted({i - 1 for i in wanted})
