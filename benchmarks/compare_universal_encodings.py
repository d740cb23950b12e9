"""Text-prompt vs learned-embedding class codes of the universal model at an equal training budget (CPU, ~1 hour).

Both variants start from the same image side (backbone, ``precls``, image code) taken from ``--weights``; the task
side (``text_to_code`` or the learned code table) and the controller are freshly initialised with the same seed. Each
is then trained with the bundle's ``configs/train.json`` for the same epochs, seed and learning rate, and both are
scored by ``configs/inference.json`` + ``configs/evaluate.json`` on the same held-out cases. Prints the two side by
side (mean Dice over the 25 organ classes and the main organs). Not part of ``make bench`` (too long); run it with
``make bench-encodings`` or directly:

    python datasets/phantoms.py --out TRAIN --cases 54 --seed 7 --shape 128,128,108 --spacing 3,3,3 --quiet
    (cd bundles/universal_abdomen_ct_segmentation && python -m universal_model.partial_labels --phantoms TRAIN \
        --num_val 3 --rotation atlas --assign round_robin)  # the split of the reported figures
    python datasets/phantoms.py --out HELD --cases 24 --seed 4242 --shape 128,128,108 --spacing 3,3,3 --quiet
    python benchmarks/compare_universal_encodings.py --train_dir TRAIN --eval_dir HELD --work OUT
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "universal_abdomen_ct_segmentation"
IMAGE_SIDE = ("backbone.", "precls.", "image_code.", "image_norm.")
ENCODINGS = ("text", "learned")
SHOWN = ("liver", "spleen", "kidney_right", "kidney_left", "stomach", "aorta", "pancreas", "lung_right")


def start_checkpoint(weights: Path, encoding: str, out: Path, seed: int) -> None:
    """Write a start state dict: the image side of ``weights``, a fresh task side and controller (``seed``)."""
    sys.path.insert(0, str(BUNDLE))
    from universal_model.network import UniversalModel

    torch.manual_seed(seed)
    prompts = str(BUNDLE / "models" / "prompt_embeddings.pt") if encoding == "text" else None
    net = UniversalModel(backbone="unet", img_size=(64, 64, 64), num_classes=32, encoding=encoding, feature_size=8,
                         prompt_embeddings=prompts)
    state = net.state_dict()
    shipped = torch.load(weights, map_location="cpu", weights_only=True)
    state.update({k: v for k, v in shipped.items() if k.startswith(IMAGE_SIDE)})
    net.load_state_dict(state)
    torch.save(net.state_dict(), out)


def eval_subset(eval_dir: Path, cases: int, out: Path) -> tuple[Path, Path]:
    """A folder of links to the first ``cases`` held-out cases and its evaluation datalist."""
    entries = json.loads((eval_dir / "datalist.json").read_text())
    names = sorted({e["case"] for k in ("training", "validation", "test") for e in entries.get(k, [])})[:cases]
    data = out / "eval_cases"
    data.mkdir(parents=True, exist_ok=True)
    rows = []
    for case in names:
        link = data / case
        if not link.exists():
            link.symlink_to((eval_dir / case).resolve(), target_is_directory=True)
        rows.append({"case": case, "image": f"{case}/ct.nii.gz", "label": f"{case}/combined_labels.nii.gz"})
    datalist = data / "datalist_eval.json"
    datalist.write_text(json.dumps({"evaluation": rows}, indent=1))
    return data, datalist


def bundle_run(config: str, log: Path, *overrides: str) -> None:
    """``python -m monai.bundle run`` in the bundle folder; raises with the log's path when it fails."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", f"configs/{config}", *overrides]
    with open(log, "w") as f:
        if subprocess.run(cmd, cwd=BUNDLE, stdout=f, stderr=subprocess.STDOUT).returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed, see {log}")


def summary(metrics_dir: Path) -> dict[str, float]:
    """Dice per class from ``summary.csv`` plus ``mean25`` over the 25 organ classes (NaN-free classes)."""
    rows = list(csv.DictReader((metrics_dir / "summary.csv").read_text().splitlines()))
    dice = {r["class"]: float(r["dice"]) for r in rows if r["dice"] not in ("", "nan")}
    organs = [float(r["dice"]) for r in rows if int(r["index"]) <= 25 and r["dice"] not in ("", "nan")]
    dice["mean25"] = sum(organs) / len(organs)
    return dice


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train_dir", type=Path, required=True, help="phantoms with datalist_partial.json")
    ap.add_argument("--eval_dir", type=Path, required=True, help="held-out phantoms with datalist.json")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--weights", type=Path, default=BUNDLE / "models" / "model.pt", help="source of the image side")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--learning_rate", type=float, default=3e-4)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--eval_cases", type=int, default=12)
    args = ap.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    data, datalist = eval_subset(args.eval_dir.resolve(), args.eval_cases, work)
    results = {}
    for enc in ENCODINGS:
        run = work / enc
        run.mkdir(exist_ok=True)
        start_checkpoint(args.weights.resolve(), enc, run / "start_model.pt", seed=0)
        print(f"[{enc}] training {args.epochs} epochs -> {run}", flush=True)
        bundle_run("train.json", run / "train.log", "--dataset_dir", str(args.train_dir.resolve()), "--ckpt_dir",
                   str(run), "--encoding", enc, "--initial_weights", str(run / "start_model.pt"), "--learning_rate",
                   str(args.learning_rate), "--max_epochs", str(args.epochs), "--val_interval", str(args.epochs),
                   "--seed", str(args.seed), "--rotate90_prob", "0.0")
        print(f"[{enc}] evaluating on {args.eval_cases} held-out cases", flush=True)
        bundle_run("inference.json", run / "inference.log", "--dataset_dir", str(data), "--output_dir",
                   str(run / "pred"), "--ckpt_path", str(run / "model_final.pt"), "--encoding", enc)
        bundle_run("evaluate.json", run / "evaluate.log", "--dataset_dir", str(data), "--prediction_dir",
                   str(run / "pred"), "--datalist", str(datalist), "--metrics_dir", str(run / "metrics"))
        results[enc] = summary(run / "metrics")
    print(f"\n{'Dice':<16}" + "".join(f"{e:>10}" for e in ENCODINGS))
    for name in ("mean25", *SHOWN):
        print(f"{name:<16}" + "".join(f"{results[e].get(name, float('nan')):>10.3f}" for e in ENCODINGS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
