"""A whole phantom dataset: cases ``case_0000`` ..., ``datalist.json`` and a summary table."""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import numpy as np

from .case import DEFAULT_SHAPE, DEFAULT_SPACING_MM, ORIENTATIONS, generate_case, validate_geometry
from .io import atomic_write_bytes, json_bytes, write_case
from .label_space import classes_by_index

MAX_CASES = 100_000


def case_seed(seed: int, index: int) -> int:
    """Per-case seed derived deterministically from the dataset seed and the case index."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint32)[0])


def split_cases(case_ids: list[str]) -> dict[str, list[str]]:
    """Deterministic split: ~70 % training, ~15 % validation, ~15 % test (>= 1 each from 3 cases)."""
    n = len(case_ids)
    n_eval = 0 if n < 3 else max(1, int(round(0.15 * n)))
    return {"training": case_ids[: n - 2 * n_eval], "validation": case_ids[n - 2 * n_eval: n - n_eval],
            "test": case_ids[n - n_eval:]}


def datalist(case_ids: list[str]) -> dict:
    """MONAI decathlon-style data list with paths relative to the dataset folder."""
    return {key: [{"image": f"{c}/ct.nii.gz", "label": f"{c}/combined_labels.nii.gz", "case": c} for c in ids]
            for key, ids in split_cases(case_ids).items()}


def check_writable(out_dir: Path) -> None:
    """Raise ``ValueError`` naming the folder when it cannot be created or written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"{out_dir}: output folder is not writable ({error.strerror or error})") from None


def generate_dataset(out_dir, cases: int, seed: int, shape=DEFAULT_SHAPE, spacing=DEFAULT_SPACING_MM,
                     healthy: bool = False, sex: str | None = None, phase: str | None = None,
                     dicom: bool = False, preview: bool = False, progress: bool = True,
                     workers: int = 1) -> list[dict]:
    """Generate and write ``cases`` cases plus ``datalist.json``; returns one summary row per case.

    Case ``i`` uses seed :func:`case_seed` (seed, i); array orientation alternates RAS / LPS with ``i``
    so every dataset of two or more cases has both. ``workers`` > 1 generates cases in that many processes;
    each case depends only on (seed, i), so the files are the same for any number of workers.
    """
    if int(cases) != cases or not 1 <= cases <= MAX_CASES:
        raise ValueError(f"cases {cases}: expected an integer between 1 and {MAX_CASES}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed {seed}: expected a non-negative integer")
    if int(workers) != workers or workers < 1:
        raise ValueError(f"workers {workers}: expected an integer >= 1")
    validate_geometry(shape, spacing)
    out_dir = Path(out_dir)
    check_writable(out_dir)
    make = partial(_write_one_case, out_dir=out_dir, seed=seed, shape=shape, spacing=spacing, healthy=healthy,
                   sex=sex, phase=phase, dicom=dicom, preview=preview)
    with ProcessPoolExecutor(workers) if workers > 1 else nullcontext() as pool:
        rows = (pool.map if pool else map)(make, range(cases))
        if progress and cases > 1:
            from tqdm import tqdm
            rows = tqdm(rows, total=cases, desc="phantom cases", unit="case")
        rows = list(rows)
    atomic_write_bytes(out_dir / "datalist.json", json_bytes(datalist([row["case"] for row in rows])))
    return rows


def _write_one_case(i: int, out_dir: Path, seed: int, shape, spacing, healthy, sex, phase, dicom, preview) -> dict:
    """Generate and write case ``i``; returns its summary row."""
    case_id = f"case_{i:04d}"
    case = generate_case(case_seed(seed, i), shape, spacing, healthy=healthy, sex=sex, phase=phase,
                         orientation=ORIENTATIONS[i % 2])
    case.meta.update({"case": case_id, "dataset_seed": int(seed), "index": i})
    write_case(case, out_dir, case_id, dicom=dicom, preview=preview)
    return summary_row(case.meta)


def summary_row(meta: dict) -> dict:
    """The printed summary of one case."""
    organs = [i for i in meta["organs_present"] if classes_by_index()[i]["kind"] != "lesion"]
    lesions = ", ".join(f"{l['class_name']} {l['diameter_mm']:.0f} mm" for l in meta["lesions"]) or "none"
    return {"case": meta.get("case", "?"), "sex": meta["sex"], "phase": meta["phase"],
            "orientation": meta["orientation"], "organs": len(organs), "lesions": lesions}


def format_summary(rows: list[dict]) -> str:
    """Plain-text table of the summary rows."""
    headers = ["case", "sex", "phase", "orientation", "organs", "lesions"]
    cells = [[str(r[h]) for h in headers] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)
