"""How visible is each lesion of a phantom set in principle? Ideal-observer detectability, per lesion and per case.

A phantom is a pure function of the arguments that its ``meta.json`` records, and its noise is white Gaussian
(``noise_std_hu``), so the exact signal of each lesion can be regenerated: the noiseless CT with the lesions minus
the same without (``generate_case(..., lesion_signal=True)``). For a known signal at a known place, the ideal
observer separates "lesion" from "no lesion" with ``d' = ||signal|| / noise_std`` (its likelihood-ratio statistic is
normal with unit variance, shifted by d'). A case-level detector does not know where the lesion is: it has to look
at every position of the host organs and flag the case when the largest response passes a threshold. Counting each
host voxel as one independent position, the threshold that keeps specificity ``s`` is ``t = Phi^-1(s^(1/M))`` for
``M`` host voxels, and a lesion is found with probability ``Phi(d' - t)``. This is an estimate (neighbouring
positions are correlated, which lowers the true threshold a little), not a proof; its use is to separate lesions
that no model can be expected to find (d' near or below t) from lesions that a model misses by its own fault.

CLI::

    python -m phantom_ct.detectability DIR [--classes 26,27,32] [--specificity 0.8] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.stats import norm

from .case import generate_case
from .io import atomic_write_bytes, json_bytes
from .label_space import classes_by_index, lesion_indices

#: the renderer's partial-volume blur (sigma 0.8-1 mm, truncated at 2 sigma, at least one voxel) reaches no further.
BLUR_REACH_MM = 2.0


def regenerate(case_dir: Path):
    """The case in ``case_dir`` regenerated from its meta.json with its lesion signal; checked against its labels."""
    meta_path, labels_path = case_dir / "meta.json", case_dir / "combined_labels.nii.gz"
    try:
        meta = json.loads(meta_path.read_text())
        # a lesion-free case regenerates as healthy: same anatomy and labels, and --healthy sets are not in meta
        case = generate_case(meta["seed"], tuple(meta["shape"]), tuple(meta["spacing_mm"]),
                             healthy=not meta["lesions"], sex=meta["sex"], phase=meta["phase"],
                             orientation=meta["orientation"], lesion_signal=True)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{meta_path}: cannot regenerate the phantom ({error})") from None
    try:
        stored = np.asarray(nib.load(str(labels_path)).dataobj)
    except Exception as error:  # nibabel raises several types for missing, truncated or foreign files
        raise ValueError(f"{labels_path}: cannot read ({type(error).__name__}: {error})") from None
    if stored.shape != case.labels.shape or not np.array_equal(stored, case.labels):
        raise ValueError(f"{labels_path}: does not match the phantom regenerated from "
                         f"meta.json (edited files, or made by another generator version than {case.meta['generator']})")
    return case


def location_threshold(host_voxels: int, specificity: float) -> float:
    """Threshold on the largest of ``host_voxels`` independent standard normals that keeps ``specificity``."""
    return float(norm.ppf(specificity ** (1.0 / max(int(host_voxels), 1))))


def signal_support(lesion_mask: np.ndarray, spacing) -> np.ndarray:
    """Voxels that a lesion's blurred signal can reach: the mask grown by a box of BLUR_REACH_MM plus one voxel."""
    reach = [int(np.ceil(BLUR_REACH_MM / float(s))) + 1 for s in spacing]
    return ndimage.binary_dilation(lesion_mask, structure=np.ones([2 * r + 1 for r in reach], bool))


def lesion_dprimes(case, classes) -> list[dict]:
    """One record per 26-connected lesion component of ``classes``: class, voxels, d' and host-organ voxels."""
    spacing = case.meta["spacing_mm"]
    lesion_mask = np.isin(case.labels, lesion_indices())
    components, count = ndimage.label(lesion_mask, structure=np.ones((3, 3, 3)))
    if not count:
        return []
    # each voxel near a lesion takes its signal to the nearest lesion (lesions never touch, see lesions.py)
    nearest = ndimage.distance_transform_edt(~lesion_mask, sampling=spacing, return_distances=False,
                                             return_indices=True)
    owner = np.where(signal_support(lesion_mask, spacing), components[tuple(nearest)], 0)
    energy = ndimage.sum_labels(case.lesion_signal.astype(np.float64) ** 2, owner, np.arange(1, count + 1))
    info = classes_by_index()
    records = []
    for k in range(1, count + 1):
        voxels = components == k
        cls = int(np.bincount(case.labels[voxels]).argmax())
        if cls not in classes:
            continue
        hosts = [int(h) for h in info[cls]["host_organs"]]
        records.append({"class_index": cls, "class_name": info[cls]["name"], "voxels": int(voxels.sum()),
                        "dprime": round(float(np.sqrt(energy[k - 1]) / case.meta["noise_std_hu"]), 2),
                        "host_voxels": int(np.isin(case.organ_labels, hosts).sum())})
    return records


def assess(folder, classes, specificity: float = 0.8) -> dict:
    """Per-lesion d' and per-class ideal case-level sensitivity at ``specificity`` for every case in ``folder``."""
    folder = Path(folder)
    case_dirs = sorted(p.parent for p in folder.glob("*/meta.json"))
    if not case_dirs:
        raise ValueError(f"{folder}: no phantom case folders (<case>/meta.json)")
    lesions, per_case = [], {c: [] for c in classes}
    for case_dir in case_dirs:
        case = regenerate(case_dir)
        found = {c: [] for c in classes}
        for rec in lesion_dprimes(case, classes):
            rec["probability_found"] = round(float(norm.cdf(
                rec["dprime"] - location_threshold(rec["host_voxels"], specificity))), 3)
            lesions.append({"case": case_dir.name, "phase": case.meta["phase"], **rec})
            found[rec["class_index"]].append(rec["probability_found"])
        for c, probs in found.items():
            if probs:
                per_case[c].append(1.0 - float(np.prod([1.0 - p for p in probs])))
    info = classes_by_index()
    summary = [{"class_index": c, "class_name": info[c]["name"], "positive_cases": len(v),
                "ideal_sensitivity": round(float(np.mean(v)), 3) if v else None} for c, v in per_case.items()]
    return {"folder": str(folder), "specificity": specificity, "cases": len(case_dirs), "lesions": lesions,
            "summary": summary}


def format_report(result: dict) -> str:
    """Plain-text tables: one row per lesion, then one per class."""
    lines = [f"{'case':<12} {'phase':<14} {'class':<22} {'voxels':>6} {'d_prime':>8} {'P(found)':>8}"]
    for r in result["lesions"]:
        lines.append(f"{r['case']:<12} {r['phase']:<14} {r['class_name']:<22} {r['voxels']:>6} {r['dprime']:>8.2f} "
                     f"{r['probability_found']:>8.3f}")
    lines.append("")
    lines.append(f"ideal-observer case-level sensitivity at specificity {result['specificity']} "
                 f"({result['cases']} cases)")
    for s in result["summary"]:
        value = "-" if s["ideal_sensitivity"] is None else f"{s['ideal_sensitivity']:.3f}"
        lines.append(f"  {s['class_name']:<22} positive cases {s['positive_cases']:>3}  sensitivity {value}")
    return "\n".join(lines)


def main(argv=None) -> int:
    """CLI; exit status 2 with one line on stderr for bad input."""
    p = argparse.ArgumentParser(prog="python -m phantom_ct.detectability", description=__doc__.split("\n")[0])
    p.add_argument("folder", help="phantom set (case folders with meta.json and combined_labels.nii.gz)")
    p.add_argument("--classes", default="26,27,32", help="lesion class indices (default: kidney tumour, liver "
                                                          "tumour, kidney cyst)")
    p.add_argument("--specificity", type=float, default=0.8, help="case-level specificity to hold (default 0.8)")
    p.add_argument("--json", help="also write the full result to this JSON file")
    args = p.parse_args(argv)
    try:
        classes = [int(c) for c in args.classes.split(",")]
        unknown = [c for c in classes if c not in lesion_indices()]
        if unknown:
            raise ValueError(f"--classes {args.classes}: {unknown} are not lesion classes {lesion_indices()}")
        if not 0.0 < args.specificity < 1.0:
            raise ValueError(f"--specificity {args.specificity}: expected a value between 0 and 1")
        result = assess(args.folder, classes, args.specificity)
    except ValueError as error:
        sys.stderr.write(f"{p.prog}: error: {error}\n")
        return 2
    print(format_report(result))
    if args.json:
        atomic_write_bytes(Path(args.json), json_bytes(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
