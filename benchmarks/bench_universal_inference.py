"""Seconds and peak memory of universal_abdomen_ct_segmentation inference on one synthetic phantom (CPU).

Generates a phantom with ``datasets/phantoms.py``, uses shipped weights (``--weights``, default ``models/model.pt``;
with ``--random_weights`` or when the file is missing, random weights of the default network), runs the real CLI
(``python -m monai.bundle run --config_file configs/inference.json ...``, or ``--config_file``'s list) as a child
process and prints its wall time and peak resident memory (``os.wait4`` resource usage of that child, ``ru_maxrss``).

Usage:
    python benchmarks/bench_universal_inference.py --shape 256,256,160 --spacing 1.5,1.5,2.0
    python benchmarks/bench_universal_inference.py --shape 512,512,300 --spacing 0.8,0.8,1.5 [--prompts "['liver']"]
    [--work DIR] [--extra "--stitch_dtype \\$torch.float16"]
    python benchmarks/bench_universal_inference.py --weights models/model_whole_grid.pt \\
        --config_file "['configs/inference.json','configs/inference_whole_grid.json']"   # the whole-grid variant
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "universal_abdomen_ct_segmentation"


def random_default_weights(path: Path) -> None:
    """State dict of the default inference network (light U-Net, feature size 8, 64^3, text prompts), random init."""
    sys.path.insert(0, str(BUNDLE))
    import torch

    from universal_model.network import UniversalModel

    torch.manual_seed(0)
    net = UniversalModel(backbone="unet", img_size=(64, 64, 64), encoding="text", feature_size=8,
                         prompt_embeddings=str(BUNDLE / "models" / "prompt_embeddings.pt"))
    torch.save(net.state_dict(), path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="256,256,160")
    ap.add_argument("--spacing", default="1.5,1.5,2.0")
    ap.add_argument("--prompts", default=None)
    ap.add_argument("--work", default=None, help="working folder (default: a new temporary folder)")
    ap.add_argument("--extra", default="", help="extra CLI overrides for the bundle run")
    ap.add_argument("--random_weights", action="store_true", help="time random weights, not the shipped model")
    ap.add_argument("--config_file", default="configs/inference.json", help="bundle config(s), as the CLI takes them")
    ap.add_argument("--weights", default="models/model.pt", help="shipped weights to time, relative to the bundle")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="universal_bench_"))
    data, out = work / "data", work / "out"
    shipped = BUNDLE / args.weights
    model = work / "random_default.pt" if args.random_weights or not shipped.exists() else shipped
    if not data.exists():
        subprocess.run([sys.executable, str(REPO / "datasets" / "phantoms.py"), "--out", str(data), "--cases", "1",
                        "--seed", "1", "--shape", args.shape, "--spacing", args.spacing, "--quiet"], check=True)
    if not model.exists():
        random_default_weights(model)
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", args.config_file,
           "--dataset_dir", str(data), "--output_dir", str(out), "--ckpt_path", str(model), *shlex.split(args.extra)]
    if args.prompts:
        cmd += ["--prompts", args.prompts]
    log = work / "inference.log"
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=BUNDLE, stdout=f, stderr=subprocess.STDOUT, env=dict(os.environ))
        _, status, usage = os.wait4(proc.pid, 0)  # resource usage of this child alone
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status):
        print(log.read_text()[-3000:], file=sys.stderr)
        return 1
    print(f"shape {args.shape} spacing {args.spacing} prompts {args.prompts or 'all'} weights {model.name} "
          f"{args.extra}: {seconds:.1f} s wall, peak RSS {usage.ru_maxrss / 2**20:.2f} GiB; outputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
