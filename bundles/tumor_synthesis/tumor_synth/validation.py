"""Synthetic tumors for validation: a fixed-seed lesion set stratified by diameter and HU contrast, a model's
detection sensitivity on it, and a plot of sensitivity against lesion diameter and against contrast."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from monai.inferers import SlidingWindowInferer
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd, Spacingd
from scipy import ndimage
from tqdm import tqdm

from .array import SynthesizeTumor
from .data import load_datalist
from .presets import get_preset
from .writer import save_figure, save_json


def fixed_lesion_preset(organ: str, diameter_mm: float, contrast_hu: float) -> dict[str, Any]:
    """Preset placing one lesion of nominal diameter ``diameter_mm`` (+-25 %) with HU shift ``contrast_hu``."""
    preset = copy.deepcopy(get_preset(organ))
    r = diameter_mm / 2.0
    for name in preset["size_classes"]:
        sc = preset["size_classes"][name]
        sc.update({"radius_mm": r, "count": [1, 1], "elastic_sigma_mm": [0.125 * r, 0.25 * r]})
    mode = {"name": f"{contrast_hu:g} HU", "probability": 1.0, "hu_shift": [contrast_hu] * 2, "texture_cv": [0.1, 0.2]}
    preset["intensity"] = [mode]
    return preset


class SyntheticValidation:
    """Runs the validation sweep (see module docstring) and writes ``validation_report.json`` and a PNG.

    Args:
        dataset_dir: healthy cases (AbdomenAtlas layout).
        output_dir: where the report and ``sensitivity_vs_size_contrast.png`` go.
        network: segmentation network (4-channel softmax output as in train.json).
        ckpt_path: weights (state dict) loaded with ``torch.load(weights_only=True)``; None keeps the network's.
        organ: preset whose organ receives the lesions.
        class_index: output channel of that organ's tumor class.
        diameters_mm: nominal lesion diameters (one lesion of each per volume).
        contrasts_hu: HU shifts relative to the organ (one volume per contrast and repeat).
        repeats: volumes per (case, contrast), each with new seeds.
        max_cases: use at most this many cases.
        seed: base seed of the fixed set.
        pixdim, hu_window, roi_size, sw_batch_size, overlap: model resolution / window / sliding window.
    """

    def __init__(
        self,
        dataset_dir: str,
        output_dir: str,
        network: torch.nn.Module,
        ckpt_path: str | None = None,
        organ: str = "liver",
        class_index: int = 1,
        diameters_mm: Sequence[float] = (6, 10, 15, 20, 30),
        contrasts_hu: Sequence[float] = (-20, -40, -60, -90),
        repeats: int = 1,
        max_cases: int | None = None,
        seed: int = 0,
        pixdim: Sequence[float] = (3.0, 3.0, 3.0),
        hu_window: Sequence[float] = (-175, 250),
        roi_size: Sequence[int] = (64, 64, 64),
        sw_batch_size: int = 4,
        overlap: float = 0.25,
        device: str | torch.device = "cpu",
    ) -> None:
        self.cases = load_datalist(dataset_dir, max_cases)
        self.output_dir = Path(output_dir)
        self.network, self.ckpt_path, self.device = network, ckpt_path, torch.device(device)
        self.organ, self.class_index = organ, int(class_index)
        self.diameters, self.contrasts = [float(d) for d in diameters_mm], [float(c) for c in contrasts_hu]
        self.repeats, self.seed, self.hu_window = int(repeats), int(seed), hu_window
        self.load = Compose([
            LoadImaged(keys=["image", "label"], image_only=True),
            EnsureChannelFirstd(keys=["image", "label"]),
            Orientationd(keys=["image", "label"], axcodes="RAS"),
            Spacingd(keys=["image", "label"], pixdim=pixdim, mode=("bilinear", "nearest")),
        ])
        self.inferer = SlidingWindowInferer(roi_size=roi_size, sw_batch_size=sw_batch_size, overlap=overlap)

    def paint(self, image, label, contrast: float, seed: int) -> list[dict[str, Any]]:
        """Paints one lesion per diameter (in place) and returns their records."""
        records = []
        for k, d in enumerate(self.diameters):
            t = SynthesizeTumor(fixed_lesion_preset(self.organ, d, contrast), size_class="tiny", inplace=True)
            t.set_random_state(seed + k)
            t(image, label)
            records += [dict(r, nominal_diameter_mm=d, contrast_level_hu=contrast) for r in t.last_lesions]
        return records

    @torch.no_grad()
    def predict(self, image) -> np.ndarray:
        lo, hi = self.hu_window
        x = ((torch.as_tensor(image).float() - lo) / (hi - lo)).clamp(0, 1)[None].to(self.device)
        return self.inferer(x, self.network).argmax(1)[0].cpu().numpy() == self.class_index

    def run(self) -> dict[str, Any]:
        if self.ckpt_path:
            self.network.load_state_dict(torch.load(self.ckpt_path, map_location=self.device, weights_only=True))
        self.network.eval()
        lesions = []
        jobs = [(i, c, r) for i in range(len(self.cases)) for c in self.contrasts for r in range(self.repeats)]
        loaded: dict[int, Any] = {}
        for i, contrast, rep in tqdm(jobs, desc="synthetic validation", unit="volume"):
            if i not in loaded:
                loaded = {i: self.load({k: self.cases[i][k] for k in ("image", "label")})}
            base = loaded[i]
            image, label = base["image"].clone(), base["label"].clone()
            seed = self.seed + 100_000 * i + 1000 * self.contrasts.index(contrast) + 100 * rep
            records = self.paint(image, label, contrast, seed)
            pred = self.predict(image)
            tumor = label[0].numpy() == get_preset(self.organ)["tumor_label"]
            comps, _ = ndimage.label(tumor, structure=np.ones((3, 3, 3), bool))
            for rec in records:
                comp = comps[tuple(np.round(rec["centre_vox"]).astype(int))]
                hit = bool(pred[comps == comp].any()) if comp else False
                keep = ("diameter_mm", "equivalent_diameter_mm", "contrast_hu", "mean_hu")
                lesions.append({**{k: rec[k] for k in keep},
                                "nominal_diameter_mm": rec["nominal_diameter_mm"], "contrast_level_hu": contrast,
                                "case": self.cases[i]["case"], "detected": hit})
        report = {"organ": self.organ, "seed": self.seed, "lesions": lesions,
                  "by_diameter": _rate(lesions, "nominal_diameter_mm", self.diameters),
                  "by_contrast": _rate(lesions, "contrast_level_hu", self.contrasts)}
        self.output_dir.mkdir(parents=True, exist_ok=True)
        save_json(self.output_dir / "validation_report.json", report)
        plot_sensitivity(report, self.output_dir / "sensitivity_vs_size_contrast.png")
        return report


def _rate(lesions: list[dict], key: str, levels: list[float]) -> dict[str, Any]:
    out = {}
    for v in levels:
        sel = [r for r in lesions if r[key] == v]
        rate = round(sum(r["detected"] for r in sel) / len(sel), 4) if sel else None
        out[f"{v:g}"] = {"lesions": len(sel), "sensitivity": rate}
    return out


def plot_sensitivity(report: dict[str, Any], path: Path) -> None:
    """Two panels: sensitivity vs nominal diameter (mm) and vs HU contrast; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    panels = ((axes[0], "by_diameter", "lesion diameter (mm)"), (axes[1], "by_contrast", "HU contrast vs organ"))
    for ax, key, label in panels:
        xs = [float(k) for k in report[key]]
        ys = [v["sensitivity"] if v["sensitivity"] is not None else np.nan for v in report[key].values()]
        ax.plot(xs, ys, "o-")
        ax.set_xlabel(label)
        ax.set_ylabel("sensitivity")
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Synthetic {report['organ']} tumors: detection sensitivity ({len(report['lesions'])} lesions)")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
