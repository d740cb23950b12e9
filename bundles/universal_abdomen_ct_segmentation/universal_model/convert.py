"""Converters from public CT datasets to this bundle's training layout (label-space labels + partial-label datalist).

Each source dataset numbers its classes its own way and annotates only some of the 32 label-space classes. A
converter reads the dataset as it is distributed, maps every label value to a label-space index (organs first,
lesions drawn over them, as in ``combined_labels.nii.gz``), splits merged paired organs (KiTS "kidney") into right
and left by position, and writes::

    OUT/<case>/combined_labels.nii.gz     uint8, label-space indices, the source label's grid and affine
    OUT/datalist_partial.json             {"training": [...], "validation": [...]}; entries: case, image (the
                                          source CT, not copied), label, dataset, labels_present

Layouts (``--source``):

- ``msd_liver``, ``msd_lung``, ``msd_pancreas``, ``msd_hepatic_vessel``, ``msd_spleen``, ``msd_colon``: a Medical
  Segmentation Decathlon task folder with ``dataset.json`` (its ``training`` image/label pairs).
- ``lits``: LiTS ``volume-N.nii[.gz]`` + ``segmentation-N.nii[.gz]`` (0 background, 1 liver, 2 tumour).
- ``kits``: KiTS19/21 ``case_XXXXX/imaging.nii.gz`` + ``segmentation.nii.gz`` or ``aggregated_MAJ_seg.nii.gz``
  (1 kidney, 2 tumour, 3 cyst).
- ``btcv``: BTCV ``img/imgXXXX.nii.gz`` + ``label/labelXXXX.nii.gz`` (13 organs, label-space order).
- ``abdomenatlas``: AbdomenAtlas 1.0/1.1 ``<case>/ct.nii.gz`` + ``<case>/segmentations/<class file name>.nii.gz``;
  the classes labelled are those whose mask file exists.

CLI::

    python -m universal_model.convert --source kits --input KITS_DIR --out OUT [--num_val 5] [--limit N]
    python -m universal_model.convert --merge OUT_KITS/datalist_partial.json OUT_BTCV/datalist_partial.json --out ALL

Paths inside ``dataset.json`` must stay inside the dataset folder. A label with a value the source does not
define, a label whose grid differs from its CT, or a missing file stops the conversion with an error naming the file;
files already written stay complete (atomic writes).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import nibabel as nib
import numpy as np
from tqdm import tqdm

from .io import safe_name
from .label_space import classes, file_names
from .partial_labels import TEMPLATES, run_datalist_writer
from .postprocess import assign_left_right, left_axis_world
from .writer import save_json, save_nifti

__all__ = ["SOURCES", "SourceSpec", "convert_case", "convert_dataset", "merge_datalists", "main"]

KIDNEY_RIGHT, KIDNEY_LEFT = 2, 3


def _lesion_indices() -> set[int]:
    return {i + 1 for i, c in enumerate(classes()) if c["kind"] == "lesion"}


@dataclass(frozen=True)
class SourceSpec:
    """How one public dataset maps to the label space.

    Attributes:
        template: partial-label template (``partial_labels.TEMPLATES``) of the classes it annotates.
        label_map: source label value -> label-space index (0 = background).
        kidney_value: source value of a merged (unsided) kidney, split into right/left by position; ``None`` if none.
    """

    template: str
    label_map: dict[int, int] = field(default_factory=dict)
    kidney_value: int | None = None


SOURCES: dict[str, SourceSpec] = {
    "msd_liver": SourceSpec("LiTS", {1: 6, 2: 27}),
    "lits": SourceSpec("LiTS", {1: 6, 2: 27}),
    "msd_lung": SourceSpec("MSD_Lung", {1: 30}),
    "msd_pancreas": SourceSpec("MSD_Pancreas", {1: 11, 2: 28}),
    "msd_hepatic_vessel": SourceSpec("MSD_HepaticVessel", {1: 15, 2: 29}),
    "msd_spleen": SourceSpec("MSD_Spleen", {1: 1}),
    "msd_colon": SourceSpec("MSD_Colon", {1: 31}),
    "kits": SourceSpec("KiTS", {2: 26, 3: 32}, kidney_value=1),
    "btcv": SourceSpec("BTCV", {i: i for i in range(1, 14)}),
    "abdomenatlas": SourceSpec("AbdomenAtlas"),
}


def _nifti_files(folder: Path, prefix: str) -> dict[str, Path]:
    """``{number or stem: path}`` of ``prefix*.nii[.gz]`` files in ``folder``."""
    out = {}
    for p in sorted(folder.glob(f"{prefix}*.nii*")):
        key = p.name[len(prefix) :].split(".nii")[0]
        out[key] = p
    return out


def _inside(root: Path, rel: str, where: str) -> Path:
    """``root / rel`` resolved; raises when it leaves ``root`` (never trust a path read from a file)."""
    path = (root / rel).resolve()
    if root.resolve() not in path.parents:
        raise ValueError(f"{where}: path {rel!r} points outside {root}")
    return path


def _pairs_msd(root: Path) -> list[tuple[str, Path, Path]]:
    meta = root / "dataset.json"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta}: MSD dataset.json not found")
    try:
        training = json.loads(meta.read_text())["training"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{meta}: not an MSD dataset.json with a 'training' list ({e})") from e
    pairs = []
    for item in training:
        if not isinstance(item, dict) or not {"image", "label"} <= set(item):
            raise ValueError(f"{meta}: every 'training' entry needs 'image' and 'label', got {item!r}")
        image, label = _inside(root, item["image"], str(meta)), _inside(root, item["label"], str(meta))
        pairs.append((image.name.split(".nii")[0], image, label))
    return pairs


def _pairs_lits(root: Path) -> list[tuple[str, Path, Path]]:
    vols, segs = _nifti_files(root, "volume-"), _nifti_files(root, "segmentation-")
    return [(f"lits_{k}", vols[k], segs[k]) for k in sorted(vols, key=lambda s: (len(s), s)) if k in segs]


def _pairs_kits(root: Path) -> list[tuple[str, Path, Path]]:
    pairs = []
    for case in sorted(p for p in root.iterdir() if p.is_dir() and (p / "imaging.nii.gz").is_file()):
        seg = next(
            (case / n for n in ("aggregated_MAJ_seg.nii.gz", "segmentation.nii.gz") if (case / n).is_file()), None
        )
        if seg is not None:
            pairs.append((case.name, case / "imaging.nii.gz", seg))
    return pairs


def _pairs_btcv(root: Path) -> list[tuple[str, Path, Path]]:
    imgs, labs = _nifti_files(root / "img", "img"), _nifti_files(root / "label", "label")
    return [(f"btcv_{k}", imgs[k], labs[k]) for k in sorted(imgs) if k in labs]


def _pairs_abdomenatlas(root: Path) -> list[tuple[str, Path, Path]]:
    return [
        (case.name, case / "ct.nii.gz", case / "segmentations")
        for case in sorted(p for p in root.iterdir() if p.is_dir())
        if (case / "ct.nii.gz").is_file() and (case / "segmentations").is_dir()
    ]


_LAYOUTS: dict[str, Callable[[Path], list[tuple[str, Path, Path]]]] = {
    **{name: _pairs_msd for name in SOURCES if name.startswith("msd_")},
    "lits": _pairs_lits,
    "kits": _pairs_kits,
    "btcv": _pairs_btcv,
    "abdomenatlas": _pairs_abdomenatlas,
}


def _check_grid(image: Path, label_img: nib.spatialimages.SpatialImage, label_path: Path) -> None:
    """The label must share the CT's shape and (to 1e-3 mm) affine; reads only the CT header."""
    try:
        ct = nib.load(str(image))
    except Exception as e:  # nibabel raises several types for unreadable files
        raise ValueError(f"{image}: cannot read the CT ({e})") from e
    if ct.shape[:3] != label_img.shape[:3] or not np.allclose(ct.affine, label_img.affine, atol=1e-3):
        raise ValueError(f"{label_path}: label grid {label_img.shape[:3]} does not match its CT {image} {ct.shape[:3]}")


def _split_kidneys(kidney: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Right/left masks of a merged kidney mask; a single kidney takes the side of the volume it lies in."""
    right, left = assign_left_right(kidney, np.zeros_like(kidney), affine)
    if right.any() and left.any():
        return right, left
    centroid = np.mean(np.nonzero(kidney), axis=1)
    centre = (np.asarray(kidney.shape, dtype=np.float64) - 1) / 2
    aff = np.asarray(affine, dtype=np.float64)[:3, :3]
    on_left = float((aff @ (centroid - centre)) @ left_axis_world("RAS")) > 0  # nibabel affines map to RAS+
    mask = kidney.astype(np.uint8)
    return (np.zeros_like(mask), mask) if on_left else (mask, np.zeros_like(mask))


def _read_label(path: Path) -> nib.spatialimages.SpatialImage:
    try:
        return nib.load(str(path))
    except Exception as e:
        raise ValueError(f"{path}: cannot read the label ({e})") from e


def _label_values(img: nib.spatialimages.SpatialImage, path: Path) -> np.ndarray:
    data = np.asanyarray(img.dataobj)
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3D label volume, got shape {data.shape}")
    if not np.all(np.equal(np.mod(data, 1), 0)):
        raise ValueError(f"{path}: label values must be integers")
    return data.astype(np.int32)


def _map_labels(source: SourceSpec, data: np.ndarray, affine: np.ndarray, path: Path) -> np.ndarray:
    """Source label values -> label-space indices (lesions drawn last, over their organ)."""
    known = set(source.label_map) | {0} | ({source.kidney_value} if source.kidney_value is not None else set())
    unknown = sorted(set(np.unique(data).tolist()) - known)
    if unknown:
        raise ValueError(f"{path}: label values {unknown} are not defined for this source (known: {sorted(known)})")
    out = np.zeros(data.shape, np.uint8)
    if source.kidney_value is not None:
        kidney = np.isin(data, [source.kidney_value, *source.label_map])  # the organ includes its lesions
        right, left = _split_kidneys(kidney.astype(np.uint8), affine)
        out[right > 0], out[left > 0] = KIDNEY_RIGHT, KIDNEY_LEFT
    lesions = _lesion_indices()
    for value, index in sorted(source.label_map.items(), key=lambda kv: kv[1] in lesions):
        out[data == value] = index
    return out


def _combine_abdomenatlas(seg_dir: Path, image: Path) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """``segmentations/<name>.nii.gz`` masks -> label map, affine, the indices whose mask files exist."""
    names = file_names()
    present, out, affine = [], None, None
    lesions = _lesion_indices()
    order = sorted(range(len(names)), key=lambda i: i + 1 in lesions)  # organs, then lesions on top
    for i in order:
        path = next(
            (seg_dir / f"{names[i]}{s}" for s in (".nii.gz", ".nii") if (seg_dir / f"{names[i]}{s}").is_file()), None
        )
        if path is None:
            continue
        img = _read_label(path)
        mask = _label_values(img, path)
        if out is None:
            _check_grid(image, img, path)
            out, affine = np.zeros(mask.shape, np.uint8), img.affine
        elif mask.shape != out.shape or not np.allclose(img.affine, affine, atol=1e-3):
            raise ValueError(f"{path}: mask grid {mask.shape} differs from the case's other masks {out.shape}")
        out[mask > 0] = i + 1
        present.append(i + 1)
    if out is None:
        raise ValueError(f"{seg_dir}: no mask named after a label-space class (e.g. liver.nii.gz)")
    return out, affine, sorted(present)


def convert_case(source: str, case: str, image: Path, label: Path, out_dir: Path) -> dict:
    """Convert one case; returns its datalist entry."""
    spec = SOURCES[source]
    target = out_dir / safe_name(case) / "combined_labels.nii.gz"
    if source == "abdomenatlas":
        labels, affine, present = _combine_abdomenatlas(label, image)
    else:
        if not label.is_file():
            raise FileNotFoundError(f"{label}: label file not found")
        img = _read_label(label)
        _check_grid(image, img, label)
        labels = _map_labels(spec, _label_values(img, label), img.affine, label)
        affine, present = img.affine, list(TEMPLATES[spec.template])
    save_nifti(target, labels, affine)
    return {
        "case": safe_name(case),
        "image": str(image.resolve()),
        "label": str(target.resolve()),
        "dataset": spec.template,
        "labels_present": present,
    }


def convert_dataset(
    source: str, input_dir: str | Path, out_dir: str | Path, num_val: int = 0, limit: int | None = None
) -> Path:
    """Convert every case of a dataset folder; the last ``num_val`` cases become validation. Returns the datalist."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}, expected one of {sorted(SOURCES)}")
    root, out = Path(input_dir), Path(out_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder not found")
    pairs = _LAYOUTS[source](root)[:limit]
    if not pairs:
        raise ValueError(f"{root}: no image/label pairs found for source {source!r} (see the layouts in convert.py)")
    if not 0 <= num_val < len(pairs):
        raise ValueError(f"{root}: {len(pairs)} cases, cannot hold out num_val={num_val}")
    entries = [convert_case(source, case, image, label, out) for case, image, label in tqdm(pairs, desc=source)]
    cut = len(entries) - num_val
    datalist = {
        "description": f"{source} converted to the AtlasForge label space by universal_model.convert",
        "source_dir": str(root.resolve()),
        "templates": {SOURCES[source].template: TEMPLATES.get(SOURCES[source].template, [])},
        "training": entries[:cut],
        "validation": entries[cut:],
    }
    return save_json(out / "datalist_partial.json", datalist)


def merge_datalists(datalists: Sequence[str | Path], out_dir: str | Path) -> Path:
    """Concatenate converted datalists (one per dataset) into ``out_dir/datalist_partial.json``.

    Raises:
        ValueError naming the file that repeats a case id already seen (ids must stay unique across datasets).
    """
    merged: dict = {"description": "merged converted datasets", "templates": {}, "training": [], "validation": []}
    seen: set[str] = set()
    for path in map(Path, datalists):
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: cannot read the datalist ({e})") from e
        for split in ("training", "validation"):
            for entry in d.get(split, []):
                if not isinstance(entry, dict) or "case" not in entry:
                    raise ValueError(f"{path}: every {split} entry needs a 'case', got {entry!r}")
                if entry["case"] in seen:
                    raise ValueError(f"{path}: case id {entry['case']!r} already comes from another datalist")
                seen.add(entry["case"])
                merged[split].append(entry)
        merged["templates"].update(d.get("templates", {}))
    return save_json(Path(out_dir) / "datalist_partial.json", merged)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI; errors become one line on stderr and exit status 2."""
    p = argparse.ArgumentParser(description="Convert a public CT dataset to the AtlasForge label space")
    p.add_argument("--source", choices=sorted(SOURCES))
    p.add_argument("--input", help="the dataset folder as distributed")
    p.add_argument("--merge", nargs="+", metavar="DATALIST", help="merge converted datalists instead of converting")
    p.add_argument("--out", required=True, help="output folder (labels + datalist_partial.json)")
    p.add_argument("--num_val", type=int, default=0, help="last N cases become validation")
    p.add_argument("--limit", type=int, default=None, help="convert only the first N cases")
    a = p.parse_args(argv)
    if not a.merge and not (a.source and a.input):
        p.error("give --source and --input, or --merge")
    if a.merge:
        return run_datalist_writer(lambda: merge_datalists(a.merge, a.out))
    return run_datalist_writer(lambda: convert_dataset(a.source, a.input, a.out, a.num_val, a.limit))


if __name__ == "__main__":
    sys.exit(main())
