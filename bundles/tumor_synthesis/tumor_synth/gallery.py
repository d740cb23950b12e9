"""Picture grid for docs/README.md: synthetic liver lesions of each size class next to phantom lesions.

Usage (from the bundle folder):
    python -m tumor_synth.gallery --healthy DIR --lesions DIR --out docs/lesion_grid.png [--seed 0]
``--healthy``: healthy phantom cases; ``--lesions``: phantom cases with their own lesions (meta.json ``lesions``).
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import nibabel as nib
import numpy as np

from .array import SynthesizeTumor
from .data import load_datalist
from .presets import SIZE_CLASSES, get_preset
from .writer import save_figure

HALF_MM = 45.0  # half width of each panel, mm
WINDOW_HU = (-100, 250)


def _axial_patch(ct: np.ndarray, spacing, centre_vox) -> np.ndarray:
    c = np.round(centre_vox).astype(int)
    h = np.round(HALF_MM / np.asarray(spacing[:2])).astype(int)
    sl = ct[:, :, int(np.clip(c[2], 0, ct.shape[2] - 1))].astype(np.float32)
    pad = np.pad(sl, ((h[0], h[0]), (h[1], h[1])), constant_values=-1000)
    patch = pad[c[0] : c[0] + 2 * h[0] + 1, c[1] : c[1] + 2 * h[1] + 1]
    return np.rot90(patch)


def synthetic_panels(healthy_dir: str, seed: int) -> list[tuple[str, np.ndarray, tuple]]:
    case = load_datalist(healthy_dir, max_cases=1)[0]
    ct_nii, lab_nii = nib.load(case["image"]), nib.load(case["label"])
    spacing = ct_nii.header.get_zooms()[:3]
    ct, lab = np.asarray(ct_nii.dataobj, np.float32)[None], np.asarray(lab_nii.dataobj, np.uint8)[None]
    panels = []
    for k, size in enumerate(SIZE_CLASSES):
        preset = copy.deepcopy(get_preset("liver"))
        preset["size_classes"][size]["count"] = [1, 1]
        t = SynthesizeTumor(preset, size_class=size, spacing=spacing)
        t.set_random_state(seed + k)
        out, _ = t(ct, lab)
        if t.last_lesions:
            rec = t.last_lesions[0]
            title = f"synthetic {size}\n{rec['diameter_mm']:.0f} mm, {rec['contrast_hu']:+.0f} HU"
            panels.append((title, _axial_patch(out[0], spacing, rec["centre_vox"]), spacing))
    return panels


def phantom_panels(lesion_dir: str, n: int = 4) -> list[tuple[str, np.ndarray, tuple]]:
    found = []
    for case in load_datalist(lesion_dir):
        meta = json.loads((Path(case["image"]).parent / "meta.json").read_text())
        for les in meta.get("lesions", []):
            found.append((les["diameter_mm"], case, les))
    found.sort(key=lambda x: x[0])
    if len(found) > n:
        found = [found[int(i)] for i in np.linspace(0, len(found) - 1, n)]
    panels = []
    for d, case, les in found:
        nii = nib.load(case["image"])
        inv = np.linalg.inv(nii.affine)
        centre = (inv @ np.array([*les["centre_mm"], 1.0]))[:3]
        title = f"phantom {les['class_name'].lower()}\n{d:.0f} mm, {les['mean_hu']:.0f} HU"
        zooms = nii.header.get_zooms()
        panels.append((title, _axial_patch(np.asarray(nii.dataobj, np.float32), zooms, centre), zooms))
    return panels


def main() -> None:
    parser = argparse.ArgumentParser(description="synthetic vs phantom lesion picture grid")
    parser.add_argument("--healthy", required=True)
    parser.add_argument("--lesions", required=True)
    parser.add_argument("--out", default="docs/lesion_grid.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [synthetic_panels(args.healthy, args.seed), phantom_panels(args.lesions)]
    ncol = max(len(r) for r in rows)
    fig, axes = plt.subplots(2, ncol, figsize=(2.6 * ncol, 6.4), squeeze=False)
    for r, row in enumerate(rows):
        for c in range(ncol):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(row):
                title, patch, sp = row[c]
                ax.imshow(patch, cmap="gray", vmin=WINDOW_HU[0], vmax=WINDOW_HU[1], aspect=sp[0] / sp[1])
                ax.set_title(title, fontsize=8)
    fig.suptitle(f"axial {2 * HALF_MM:.0f} mm crops, window {WINDOW_HU[0]}..{WINDOW_HU[1]} HU", fontsize=9)
    fig.tight_layout()
    out = Path(args.out)
    save_figure(fig, out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
