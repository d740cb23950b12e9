"""Ignite handler writing a per-class Dice and size-stratified lesion sensitivity report (JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from . import lesion_metrics
from .writer import save_json


class LesionReportHandler:
    """Collects Dice, lesion detection by diameter and false-positive components over an evaluator run.

    Expects ``engine.state.output`` to be the decollated list of dicts with ``pred`` and ``label`` as
    (1, X, Y, Z) class-index maps (after ``AsDiscreted(argmax=True)``), MetaTensors carrying the spacing.

    Args:
        output_path: JSON report written atomically when the run completes.
        class_names: class index in pred/label -> name (e.g. {1: "liver tumor"}).
        lesion_classes: the class indices counted as lesions (detection, false-positive components); the others,
            e.g. a host organ segmented with its tumors, get Dice only. None: every class is a lesion class.
    """

    def __init__(self, output_path: str, class_names: dict[Any, str], lesion_classes: list[int] | None = None) -> None:
        self.output_path = Path(output_path)
        self.class_names = {int(k): v for k, v in class_names.items()}
        lesion_classes = self.class_names if lesion_classes is None else [int(i) for i in lesion_classes]
        unknown = sorted(set(lesion_classes) - set(self.class_names))
        if unknown:
            raise ValueError(f"LesionReportHandler: lesion_classes {unknown} are not in class_names {self.class_names}")
        self.lesion_names = [self.class_names[i] for i in lesion_classes]
        self.reset()

    def reset(self) -> None:
        self.cases: list[dict[str, Any]] = []
        self.lesions: dict[str, list[dict[str, Any]]] = {n: [] for n in self.lesion_names}

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, lambda e: self.reset())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def iteration_completed(self, engine) -> None:
        outputs = engine.state.output
        for item in outputs if isinstance(outputs, list) else [outputs]:
            self.add_case(item["pred"], item["label"])

    def add_case(self, pred: Any, label: Any) -> dict[str, Any]:
        """Adds one case: pred / label (1, X, Y, Z) class-index maps."""
        spacing = pred.pixdim.tolist() if isinstance(pred, MetaTensor) else [1.0, 1.0, 1.0]
        name = pred.meta.get("filename_or_obj", f"case_{len(self.cases)}") if isinstance(pred, MetaTensor) else ""
        p, t = _np(pred)[0], _np(label)[0]
        case: dict[str, Any] = {"case": str(name), "dice": {}, "false_positive_components": {}}
        for idx, cname in self.class_names.items():
            pm, tm = p == idx, t == idx
            case["dice"][cname] = lesion_metrics.dice(pm, tm)
            if cname in self.lesions:
                case["false_positive_components"][cname] = lesion_metrics.false_positive_components(pm, tm)
                self.lesions[cname] += lesion_metrics.detect_lesions(pm, tm, spacing)
        self.cases.append(case)
        return case

    def report(self) -> dict[str, Any]:
        """Mean Dice over cases where the class is present (in truth or prediction) and sensitivity by size."""
        out: dict[str, Any] = {"cases": len(self.cases), "classes": {}}
        for cname in self.class_names.values():
            dices = [c["dice"][cname] for c in self.cases if c["dice"][cname] is not None]
            out["classes"][cname] = {"mean_dice": round(float(np.mean(dices)), 4) if dices else None}
            if cname in self.lesions:
                out["classes"][cname]["false_positive_components"] = int(
                    sum(c["false_positive_components"][cname] for c in self.cases)
                )
                out["classes"][cname]["sensitivity_by_diameter"] = lesion_metrics.summarize(self.lesions[cname])
        all_lesions = [r for v in self.lesions.values() for r in v]
        out["all_tumors"] = {"sensitivity_by_diameter": lesion_metrics.summarize(all_lesions)}
        out["per_case"] = self.cases
        return out

    def completed(self, engine=None) -> None:
        self.output_path.parent.mkdir(parents=True, exist_ok=True)
        save_json(self.output_path, self.report())


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
