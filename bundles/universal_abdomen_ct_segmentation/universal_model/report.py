"""Machine-readable case report (``<output_dir>/<case>/report.json``), computed on the original grid.

Per class: voxel count, volume in ml, mean HU. Per lesion class additionally the lesions (26-connected components):
volume, largest diameter in mm, centroid in world mm (RAS), host organ, and a sentence such as
``"Pancreas Tumor 1: 25 mm largest diameter, in the Pancreas"``.
"""

from __future__ import annotations

import datetime
import time
from typing import Any, Hashable, Mapping, Sequence

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import cdist

from .label_space import classes as ls_classes
from .postprocess import STRUCTURE_26, bounding_box, voxel_spacing_mm, voxel_volume_mm3
from .writer import case_dir, save_json

__all__ = ["largest_diameter_mm", "component_diameter_mm", "lesion_records", "class_statistics", "CaseReportd"]


def largest_diameter_mm(points_vox: np.ndarray, affine: np.ndarray) -> float:
    """Largest edge-to-edge extent (mm) of a set of voxels ``[N, 3]``.

    The largest distance between voxel centres (over the convex hull) plus the extent of one voxel along that
    direction, so a single voxel measures its own size rather than 0.
    """
    aff = np.asarray(affine, np.float64)
    pts = points_vox.astype(np.float64) @ aff[:3, :3].T
    if len(pts) > 4:
        try:
            pts = pts[ConvexHull(pts).vertices]
        except (QhullError, ValueError):  # flat lesion: fall back to all points (sub-sampled)
            pts = pts[:: max(1, len(pts) // 2000)]
    if len(pts) < 2:
        return float(np.abs(aff[:3, :3]).sum(axis=1).min())
    best, pair = -1.0, (0, 0)
    for start in range(0, len(pts), 512):  # row blocks: memory O(512 * N), not O(N^2)
        block = cdist(pts[start : start + 512], pts)
        k = int(np.argmax(block))
        if block.flat[k] > best:
            best, pair = float(block.flat[k]), (start + k // len(pts), k % len(pts))
    u = (pts[pair[0]] - pts[pair[1]]) / max(best, 1e-9)
    return float(best + np.abs(u @ aff[:3, :3]).sum())


def component_diameter_mm(component: np.ndarray, start: np.ndarray, affine: np.ndarray) -> float:
    """Largest diameter (mm) of one component, a boolean sub-array whose first voxel sits at index ``start`` of the
    grid of ``affine``; the extent is measured over its surface voxels (all voxels when small)."""
    pts = np.argwhere(component)
    surface = pts if len(pts) < 64 else np.argwhere(component & ~ndimage.binary_erosion(component))
    return largest_diameter_mm(surface + start, affine)


def lesion_records(mask: np.ndarray, affine: np.ndarray, hosts: dict[str, np.ndarray], name: str) -> list[dict]:
    """One record per 26-connected lesion component of ``mask`` (host = the host mask it overlaps most)."""
    box = bounding_box(mask > 0)
    if box is None:
        return []
    lab, n = ndimage.label(mask[box] > 0, structure=STRUCTURE_26)
    origin = np.array([s.start for s in box])
    aff = np.asarray(affine, np.float64)
    voxel_ml = voxel_volume_mm3(aff) / 1000.0
    out = []
    for comp, sl in enumerate(ndimage.find_objects(lab), start=1):
        sub = lab[sl] == comp
        start = origin + np.array([s.start for s in sl])
        pts = np.argwhere(sub)
        diam = component_diameter_mm(sub, start, aff)
        centroid = aff[:3, :3] @ (pts.mean(axis=0) + start) + aff[:3, 3]
        where = tuple((pts + start).T)
        overlap = {h: int(np.count_nonzero(m[where])) for h, m in hosts.items()}
        host = max(overlap, key=overlap.get) if overlap and max(overlap.values()) > 0 else None
        if host is None and len(hosts) == 1:  # kept by the dilated-host rule: next to its only host
            host = next(iter(hosts))
        out.append({
            "id": comp,
            "volume_ml": round(len(pts) * voxel_ml, 3),
            "diameter_mm": round(diam, 1),
            "centroid_mm": [round(float(v), 1) for v in centroid],
            "host_organ": host,
            "description": f"{name} {comp}: {diam:.0f} mm largest diameter" + (f", in the {host}" if host else ""),
        })
    return sorted(out, key=lambda r: -r["diameter_mm"])


def class_statistics(mask: np.ndarray, image_hu: np.ndarray | None, voxel_ml: float) -> dict[str, Any]:
    """Voxel count, volume (ml) and mean HU of one binary mask."""
    n = int(np.count_nonzero(mask))
    mean_hu = float(image_hu[mask > 0].mean()) if (n and image_hu is not None) else None
    return {"voxels": n, "volume_ml": round(n * voxel_ml, 3), "mean_hu": None if mean_hu is None else round(mean_hu, 1)}


class CaseReportd(MapTransform):
    """Write ``report.json`` for one case (see the module docstring for the content).

    Args:
        keys: mask keys, ``uint8`` ``[K, X, Y, Z]`` on the original grid.
        output_dir: root output folder (the report goes to ``output_dir/<case>/report.json``).
        image_key: original-space CT in HU (``LoadCTd(copy_to=...)``), for mean HU.
        label_space: label-space dict or path.
        extra: constant entries added to every report (model, settings), e.g. from the config.
    """

    def __init__(self, keys: KeysCollection, output_dir: str, image_key: str = "original_ct", label_space=None,
                 case_key: str = "case", classes_key: str = "pred_classes", extra: dict | None = None,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.output_dir, self.image_key = output_dir, image_key
        self.records = {int(c["index"]): c for c in ls_classes(label_space)}
        self.case_key, self.classes_key, self.extra = case_key, classes_key, dict(extra or {})

    def build(self, masks: np.ndarray, classes: Sequence[int], affine: np.ndarray, image_hu: np.ndarray | None) -> dict:
        """The per-class part of the report."""
        voxel_ml = voxel_volume_mm3(affine) / 1000.0
        ch = {c: i for i, c in enumerate(classes)}
        out = {}
        for idx in classes:
            rec = self.records[idx]
            entry = {"index": idx, "name": rec["name"], "kind": rec.get("kind", "organ")}
            entry.update(class_statistics(masks[ch[idx]], image_hu, voxel_ml))
            if rec.get("kind") == "lesion":
                hosts = {self.records[h]["name"]: masks[ch[h]] for h in rec.get("host_organs") or [] if h in ch}
                lesions = lesion_records(masks[ch[idx]], affine, hosts, rec["name"])
                entry.update({"num_lesions": len(lesions), "lesions": lesions})
            out[rec["file_name"]] = entry
        return out

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        img = d.get(self.image_key)
        image_hu = None
        if img is not None:
            image_hu = (img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img))[0]
        for key in self.key_iterator(d):
            t = d[key]
            masks = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
            affine = t.affine.numpy().astype(np.float64)
            classes = list(d[self.classes_key])
            report = {
                "case": str(d[self.case_key]),
                "input": str(t.meta.get("filename_or_obj", "")),
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "shape": [int(s) for s in masks.shape[1:]],
                "spacing_mm": [round(float(s), 4) for s in voxel_spacing_mm(affine)],
                "orientation": "".join(nib.aff2axcodes(affine)),
                "affine": np.round(affine, 6).tolist(),
                "segmented_classes": [self.records[c]["file_name"] for c in classes],
                "postprocess_notes": list(d.get("postprocess_notes", [])),
                **self.extra,
                "classes": self.build(masks, classes, affine, image_hu),
            }
            if "start_time" in d:
                report["seconds"] = round(time.time() - float(d["start_time"]), 2)
            save_json(case_dir(self.output_dir, report["case"]) / "report.json", report)
        return d
