"""Partial-label templates (which classes a source dataset annotates) and a datalist writer for phantoms.

Each template lists 1-based label-space indices. A datalist entry says which classes are labelled with
``labels_present``: a list of indices, the name of a template below, or names joined by ``+`` for their union
(``"AbdomenAtlas+LiTS"``: a LiTS CT whose organs were re-annotated by AbdomenAtlas, so 25 organs + liver tumour).
The loss ignores every other class ("masked back-propagation"). Phantom cases are fully labelled;
:func:`write_partial_datalist` spreads them over pseudo-datasets so that training exercises the masking exactly as
the public datasets would.

CLI::

    python -m universal_model.partial_labels --phantoms DIR [--out DIR/datalist_partial.json] [--num_val 2]
        [--rotation public|atlas]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

__all__ = [
    "TEMPLATES",
    "TRAIN_ROTATION",
    "ROTATIONS",
    "resolve_labels_present",
    "find_cases",
    "write_partial_datalist",
    "run_datalist_writer",
    "main",
]

#: dataset -> annotated label indices (1-based, label space order). Organs include their tumours in these datasets.
TEMPLATES: dict[str, list[int]] = {
    # spleen, R/L kidney, gallbladder, esophagus, liver, stomach, aorta, IVC, portal/splenic vein, pancreas, R/L adrenal
    "BTCV": list(range(1, 14)),
    "LiTS": [6, 27],  # liver + liver tumour
    "KiTS": [2, 3, 26, 32],  # kidneys (split R/L) + kidney tumour + kidney cyst
    "MSD_Pancreas": [11, 28],
    "MSD_Colon": [31],
    "MSD_Spleen": [1],
    "MSD_HepaticVessel": [15, 29],
    "MSD_Lung": [30],
    "AbdomenAtlas": list(range(1, 26)),  # the 25 organs / vessels / bones, no lesions
    "Full": list(range(1, 33)),  # every class (phantom validation)
}

#: order in which training phantoms are assigned to pseudo-datasets (round-robin).
TRAIN_ROTATION = ["AbdomenAtlas", "BTCV", "LiTS", "KiTS", "MSD_Pancreas", "MSD_Colon", "MSD_HepaticVessel", "MSD_Lung"]

#: named rotations. ``public``: one case per public dataset in turn (most organ classes are labelled in 1 case of 8).
#: ``atlas``: as in AbdomenAtlas 1.1, most public CTs carry the 25 re-annotated organs plus their own dataset's lesion
#: label; a third of the cases keep only their original partial labels.
ROTATIONS: dict[str, list[str]] = {
    "public": TRAIN_ROTATION,
    "atlas": [
        "AbdomenAtlas+LiTS",
        "AbdomenAtlas+KiTS",
        "BTCV",
        "AbdomenAtlas+MSD_Pancreas",
        "AbdomenAtlas+MSD_Colon",
        "LiTS",
        "AbdomenAtlas+MSD_HepaticVessel",
        "AbdomenAtlas+MSD_Lung",
        "KiTS",
    ],
}


def resolve_labels_present(labels_present: str | Sequence[int], num_classes: int = 32) -> list[int]:
    """Template name (``"A+B"``: union), or index list -> sorted list of 1-based indices in ``[1, num_classes]``.

    Raises:
        ValueError naming the unknown template or the out-of-range index.
    """
    if isinstance(labels_present, str):
        names = labels_present.split("+")
        unknown = [n for n in names if n not in TEMPLATES]
        if unknown:
            known = sorted(TEMPLATES)
            raise ValueError(f"labels_present: unknown template {unknown[0]!r} in {labels_present!r}, expected {known}")
        labels_present = [i for n in names for i in TEMPLATES[n]]
    out = sorted({int(i) for i in labels_present})
    bad = [i for i in out if not 1 <= i <= num_classes]
    if bad:
        raise ValueError(f"labels_present: indices {bad} outside 1..{num_classes}")
    return out


def find_cases(phantoms: str | os.PathLike) -> list[dict[str, str]]:
    """Cases of a phantom folder: ``DIR/<case>/{ct.nii.gz, combined_labels.nii.gz}``, sorted by case name."""
    root = Path(phantoms)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: phantom folder not found")
    cases = []
    for ct in sorted(root.glob("*/ct.nii.gz")):
        lab = ct.parent / "combined_labels.nii.gz"
        if lab.is_file():
            cases.append({"case": ct.parent.name, "image": str(ct.resolve()), "label": str(lab.resolve())})
    if not cases:
        raise ValueError(f"{root}: no <case>/ct.nii.gz with combined_labels.nii.gz found")
    return cases


def write_partial_datalist(
    phantoms: str | os.PathLike,
    out: str | os.PathLike | None = None,
    num_val: int = 2,
    rotation: Sequence[str] = TRAIN_ROTATION,
    val_template: str = "Full",
) -> Path:
    """Write ``{"training": [...], "validation": [...]}`` with partial labels.

    The last ``num_val`` cases are validation (template ``val_template``); the others are assigned round-robin
    to the pseudo-datasets in ``rotation``. Entries: ``image``, ``label``, ``dataset``, ``labels_present``
    (index list, so the file is self-describing).
    """
    cases = find_cases(phantoms)
    if num_val >= len(cases):
        raise ValueError(f"{phantoms}: {len(cases)} cases, cannot hold out num_val={num_val} for validation")
    train, val = cases[: len(cases) - num_val], cases[len(cases) - num_val :]

    def entry(case: dict, name: str) -> dict:
        return {**case, "dataset": name, "labels_present": resolve_labels_present(name)}

    data = {
        "description": "phantom cases split into pseudo-datasets that hide the classes the real dataset does not label",
        "templates": {k: TEMPLATES[k] for k in sorted({k for n in {*rotation, val_template} for k in n.split("+")})},
        "training": [entry(c, rotation[i % len(rotation)]) for i, c in enumerate(train)],
        "validation": [entry(c, val_template) for c in val],
    }
    out = Path(out) if out else Path(phantoms) / "datalist_partial.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """CLI; errors become one line on stderr and exit status 2."""
    p = argparse.ArgumentParser(description="Write a partial-label datalist from a phantom folder")
    p.add_argument("--phantoms", required=True, help="folder of <case>/{ct.nii.gz, combined_labels.nii.gz}")
    p.add_argument("--out", default=None, help="datalist path (default PHANTOMS/datalist_partial.json)")
    p.add_argument("--num_val", type=int, default=2)
    p.add_argument("--rotation", choices=sorted(ROTATIONS), default="public", help="pseudo-datasets (see ROTATIONS)")
    a = p.parse_args(argv)
    return run_datalist_writer(lambda: write_partial_datalist(a.phantoms, a.out, a.num_val, ROTATIONS[a.rotation]))


def run_datalist_writer(write: Callable[[], Path]) -> int:
    """Run a datalist writer for a CLI: print what it wrote (0), or the error in one line on stderr (2)."""
    try:
        path = write()
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    d = json.loads(path.read_text())
    print(f"wrote {path}: {len(d['training'])} training, {len(d['validation'])} validation cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
