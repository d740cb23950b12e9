"""Partial-label templates (which classes a source dataset annotates) and a datalist writer for phantoms.

Each template lists 1-based label-space indices. A datalist entry says which classes are labelled with
``labels_present``: a list of indices, the name of a template below, or names joined by ``+`` for their union
(``"AbdomenAtlas+LiTS"``: a LiTS CT whose organs were re-annotated by AbdomenAtlas, so 25 organs + liver tumour).
The loss ignores every other class ("masked back-propagation"). Phantom cases are fully labelled;
:func:`write_partial_datalist` spreads them over pseudo-datasets so that training exercises the masking exactly as
the public datasets would. Like the public collections (LiTS was gathered for liver tumours, KiTS for kidney tumours),
a pseudo-dataset that labels a lesion class is given, where the folder has them, cases that contain that lesion
(read from the phantom's ``meta.json``): a plain round-robin left 5 of 57 training lesions labelled in the 54-case
phantom set, and no lesion head could learn from that.

CLI::

    python -m universal_model.partial_labels --phantoms DIR [--out DIR/datalist_partial.json] [--num_val 2]
        [--rotation public|atlas] [--assign lesions|round_robin]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from .jsonfile import read_json
from .label_space import lesion_hosts
from .writer import atomic_write

__all__ = [
    "TEMPLATES",
    "TRAIN_ROTATION",
    "ROTATIONS",
    "resolve_labels_present",
    "find_cases",
    "case_lesions",
    "assign_datasets",
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


def case_lesions(case: dict[str, str]) -> set[int]:
    """Label indices of the lesions in a phantom case (its ``meta.json``); empty when it has no ``meta.json``.

    Raises:
        ValueError naming the file when ``meta.json`` is not valid JSON or its lesions lack an integer ``class_index``.
    """
    meta = Path(case["image"]).parent / "meta.json"
    if not meta.is_file():
        return set()
    content = read_json(meta, "phantom meta.json")
    try:
        return {int(lesion["class_index"]) for lesion in content.get("lesions", [])}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{meta}: unreadable lesion list ({e})") from None


def assign_datasets(lesions: Sequence[set[int]], rotation: Sequence[str], by_lesion: bool = True) -> list[str]:
    """Pseudo-dataset of each case (``lesions[i]``: lesion label indices of case ``i``).

    Slot ``i`` of the round-robin over ``rotation`` gets one case, so each pseudo-dataset has the round-robin's
    number of cases. With ``by_lesion``, a slot whose template labels lesion classes takes the earliest unassigned
    case containing one of them; the slots left over then take the remaining cases in order.
    """
    lesion_classes = set(lesion_hosts()) if by_lesion else set()
    chosen: list[str | None] = [None] * len(lesions)
    unfilled = []
    for slot in (rotation[i % len(rotation)] for i in range(len(lesions))):
        wanted = set(resolve_labels_present(slot)) & lesion_classes
        case = next((c for c, found in enumerate(lesions) if chosen[c] is None and found & wanted), None)
        if case is None:
            unfilled.append(slot)
        else:
            chosen[case] = slot
    fill = iter(unfilled)
    return [name if name is not None else next(fill) for name in chosen]


def write_partial_datalist(
    phantoms: str | os.PathLike,
    out: str | os.PathLike | None = None,
    num_val: int = 2,
    rotation: Sequence[str] = TRAIN_ROTATION,
    val_template: str = "Full",
    by_lesion: bool = True,
) -> Path:
    """Write ``{"training": [...], "validation": [...]}`` with partial labels.

    The last ``num_val`` cases are validation (template ``val_template``); the others are assigned to the
    pseudo-datasets in ``rotation`` by :func:`assign_datasets`. Entries: ``image``, ``label``, ``dataset``,
    ``labels_present`` (index list, so the file is self-describing).
    """
    cases = find_cases(phantoms)
    if num_val >= len(cases):
        raise ValueError(f"{phantoms}: {len(cases)} cases, cannot hold out num_val={num_val} for validation")
    train, val = cases[: len(cases) - num_val], cases[len(cases) - num_val :]
    names = assign_datasets([case_lesions(c) for c in train], rotation, by_lesion)

    def entry(case: dict, name: str) -> dict:
        return {**case, "dataset": name, "labels_present": resolve_labels_present(name)}

    data = {
        "description": "phantom cases split into pseudo-datasets that hide the classes the real dataset does not label",
        "templates": {k: TEMPLATES[k] for k in sorted({k for n in {*rotation, val_template} for k in n.split("+")})},
        "training": [entry(c, n) for c, n in zip(train, names)],
        "validation": [entry(c, val_template) for c in val],
    }
    out = Path(out) if out else Path(phantoms) / "datalist_partial.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2)))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """CLI; errors become one line on stderr and exit status 2."""
    p = argparse.ArgumentParser(description="Write a partial-label datalist from a phantom folder")
    p.add_argument("--phantoms", required=True, help="folder of <case>/{ct.nii.gz, combined_labels.nii.gz}")
    p.add_argument("--out", default=None, help="datalist path (default PHANTOMS/datalist_partial.json)")
    p.add_argument("--num_val", type=int, default=2)
    p.add_argument("--rotation", choices=sorted(ROTATIONS), default="public", help="pseudo-datasets (see ROTATIONS)")
    p.add_argument("--assign", choices=["lesions", "round_robin"], default="lesions",
                   help="give lesion-labelling pseudo-datasets the cases with their lesions (default), or plain order")
    a = p.parse_args(argv)
    return run_datalist_writer(
        lambda: write_partial_datalist(a.phantoms, a.out, a.num_val, ROTATIONS[a.rotation], by_lesion=a.assign == "lesions")
    )


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
