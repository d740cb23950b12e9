"""Preview PNG: axial slices (liver/pancreas, kidneys, pelvis) and a coronal slice, abdominal window.

Top row plain CT, bottom row with the labels overlaid in colour. Radiological convention:
the patient's right is on the viewer's left, anterior is up in axial views.
"""
from __future__ import annotations

import io as _io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from .label_space import class_index, classes_by_index  # noqa: E402

WINDOW_CENTRE_HU, WINDOW_WIDTH_HU = 40.0, 400.0


def to_ras(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The array reordered/flipped so that its axes point to R, A, S."""
    ornt = nib.orientations.io_orientation(affine)
    return nib.orientations.apply_orientation(volume, ornt)


def _label_colours() -> ListedColormap:
    palette = [plt.get_cmap("tab20")(i) for i in range(20)] + [plt.get_cmap("tab20b")(i) for i in range(20)]
    n = max(classes_by_index()) + 1
    return ListedColormap([(0, 0, 0, 0)] + palette[: n - 1])


def _centroid_index(labels: np.ndarray, names: list[str], axis: int, fallback: float) -> int:
    mask = np.isin(labels, [class_index(n) for n in names])
    if not mask.any():
        return int(fallback * labels.shape[axis])
    other = tuple(a for a in range(3) if a != axis)
    profile = mask.sum(axis=other)
    return int(round(float((profile * np.arange(len(profile))).sum() / profile.sum())))


def _slices(ct: np.ndarray, labels: np.ndarray, spacing_mm) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    views = []
    for title, names, fallback in (("axial, liver/adrenal level", ["adrenal_gland_right", "adrenal_gland_left"], 0.75),
                                   ("axial, pancreas level", ["pancreas"], 0.6),
                                   ("axial, kidney hilum level", ["kidney_right", "kidney_left"], 0.5),
                                   ("axial, pelvis", ["femur_right", "femur_left"], 0.12)):
        k = _centroid_index(labels, names, 2, fallback)
        views.append((f"{title} (z index {k})", ct[::-1, :, k].T, labels[::-1, :, k].T, spacing_mm[1] / spacing_mm[0]))
    lesion_names = [c["file_name"] for c in classes_by_index().values() if c["kind"] == "lesion"]
    lesion_mask = np.isin(labels, [class_index(n) for n in lesion_names])
    if lesion_mask.any():
        k = int(np.argmax(lesion_mask.sum(axis=(0, 1))))
        views.append((f"axial, largest lesion area (z index {k})", ct[::-1, :, k].T, labels[::-1, :, k].T,
                      spacing_mm[1] / spacing_mm[0]))
    j = _centroid_index(labels, ["kidney_right", "kidney_left"], 1, 0.4)
    views.append((f"coronal (y index {j})", ct[::-1, j, :].T, labels[::-1, j, :].T, spacing_mm[2] / spacing_mm[0]))
    return views


def _body_box(ct: np.ndarray, margin: int = 4) -> tuple[slice, slice, slice]:
    """In-plane bounding box of the body (HU > -500) plus a margin; all slices along z."""
    inside = (ct > -500).any(axis=2)
    if not inside.any():
        return (slice(None),) * 3
    box = []
    for axis in range(2):
        idx = np.flatnonzero(inside.any(axis=1 - axis))
        box.append(slice(max(int(idx[0]) - margin, 0), int(idx[-1]) + margin + 1))
    return box[0], box[1], slice(None)


def render_preview(ct: np.ndarray, labels: np.ndarray, affine: np.ndarray, title: str) -> bytes:
    """PNG bytes of the preview figure (deterministic: no timestamp, fixed metadata)."""
    ct_ras, labels_ras = to_ras(ct, affine), to_ras(labels, affine)
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    body = _body_box(ct_ras)
    ct_ras, labels_ras = ct_ras[body], labels_ras[body]
    views = _slices(ct_ras, labels_ras, spacing)
    cmap = _label_colours()
    lo, hi = WINDOW_CENTRE_HU - WINDOW_WIDTH_HU / 2, WINDOW_CENTRE_HU + WINDOW_WIDTH_HU / 2
    fig, axes = plt.subplots(2, len(views), figsize=(3.6 * len(views), 6.4), dpi=80)
    for col, (name, img, lab, aspect) in enumerate(views):
        for row in range(2):
            ax = axes[row, col]
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=aspect, interpolation="nearest")
            if row == 1:
                ax.imshow(np.ma.masked_equal(lab, 0), cmap=cmap, vmin=0, vmax=cmap.N - 1, origin="lower",
                          aspect=aspect, alpha=0.45, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=9)
        axes[0, col].text(0.01, 0.5, "R", color="yellow", transform=axes[0, col].transAxes, fontsize=9)
    fig.suptitle(f"{title}   window C{WINDOW_CENTRE_HU:.0f}/W{WINDOW_WIDTH_HU:.0f}", fontsize=10)
    fig.tight_layout()
    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()
