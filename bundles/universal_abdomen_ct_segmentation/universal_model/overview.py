"""``overview.png``: axial, coronal and sagittal slices through the segmented anatomy with the labels overlaid.

Slices are shown in radiological display convention after reorienting the original grid to RAS (so LPS and RAS
inputs look the same); the CT is windowed to [-175, 250] HU; a legend names the classes visible.
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from .label_space import classes as ls_classes
from .writer import atomic_write, case_dir

__all__ = ["to_ras", "label_colormap", "render_overview", "SaveOverviewd"]


def to_ras(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``volume`` with array axes towards R, A, S (flips/transposes only) and the voxel spacing (mm) of those axes."""
    aff = np.asarray(affine, np.float64)
    ornt = nib.orientations.io_orientation(aff)
    spacing = np.empty(3)
    spacing[ornt[:, 0].astype(int)] = np.linalg.norm(aff[:3, :3], axis=0)
    return nib.orientations.apply_orientation(volume, ornt), spacing


def label_colormap(num_labels: int = 32):
    """One distinct colour per label index 1..``num_labels`` (tab20, then tab20b; ``tab20`` alone repeats after 20)."""
    from matplotlib import pyplot as plt
    from matplotlib.colors import ListedColormap

    colours = list(plt.get_cmap("tab20").colors) + list(plt.get_cmap("tab20b").colors)
    if num_labels > len(colours):
        raise ValueError(f"overview: {num_labels} labels, only {len(colours)} distinct colours")
    return ListedColormap(colours[:num_labels])


def render_overview(path, image_hu: np.ndarray, labels: np.ndarray, affine: np.ndarray, names: dict[int, str],
                    title: str = "", window_hu=(-175.0, 250.0)) -> None:
    """Save the three-view picture of ``labels`` over ``image_hu`` (both on the grid of ``affine``) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import Patch

    img, sp = to_ras(image_hu, affine)
    lab, _ = to_ras(labels, affine)
    fg = np.argwhere(lab > 0)
    centre = fg.mean(axis=0).astype(int) if len(fg) else np.array(lab.shape) // 2
    views = [  # (name, CT slice, label slice, row/column pixel aspect)
        ("axial", img[:, :, centre[2]], lab[:, :, centre[2]], sp[1] / sp[0]),
        ("coronal", img[:, centre[1], :], lab[:, centre[1], :], sp[2] / sp[0]),
        ("sagittal", img[centre[0], :, :], lab[centre[0], :, :], sp[2] / sp[1]),
    ]
    cmap = label_colormap()
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.6), dpi=100)
    for ax, (name, im, lb, aspect) in zip(axes, views):
        # radiological display: patient right / anterior on the image left, anterior / superior at the top
        im, lb = im.T[::-1, ::-1], lb.T[::-1, ::-1]
        ax.imshow(np.clip(im, *window_hu), cmap="gray", vmin=window_hu[0], vmax=window_hu[1], aspect=aspect)
        ax.imshow(np.ma.masked_equal(lb, 0), cmap=cmap, vmin=0.5, vmax=32.5, alpha=0.45, aspect=aspect,
                  interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    present = [int(v) for v in np.unique(lab) if v > 0]
    handles = [Patch(color=cmap((v - 0.5) / 32.0), label=names.get(v, str(v))) for v in present]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=7, frameon=False)
    fig.suptitle(title)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


class SaveOverviewd(MapTransform):
    """Write ``<output_dir>/<case>/overview.png`` from the combined label map and the original-space CT.

    Args:
        keys: combined label map keys (``SaveAbdomenAtlasd`` output, on the original grid).
        output_dir: root output folder.
        image_key: original-space CT in HU (a ``MetaTensor``: its affine places the picture).
        label_space: label-space dict or path (names in the legend).
    """

    def __init__(self, keys: KeysCollection, output_dir: str, image_key: str = "original_ct", label_space=None,
                 case_key: str = "case", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.output_dir, self.image_key, self.case_key = output_dir, image_key, case_key
        self.names = {int(c["index"]): c["name"] for c in ls_classes(label_space)}

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        img = d[self.image_key]
        image_hu = (img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img))[0]
        affine = img.affine.numpy()
        for key in self.key_iterator(d):
            labels = np.asarray(d[key])
            case = str(d[self.case_key])
            render_overview(case_dir(self.output_dir, case) / "overview.png", image_hu, labels, affine, self.names,
                            title=case)
        return d
