"""Speed and memory of SynthesizeTumor on a 256x256x160 CT with a liver label (prints a Markdown table).

Usage (from the repository root):
    .venv/bin/python benchmarks/bench_tumor_synthesis.py [--runs 15] [--spacing 1,1,1] [--inplace] [--metatensor]

Per-call time is the median wall time of ``runs`` calls with different seeds (each on the same input),
CPU time from time.process_time. Start-up = constructing the transform + its first call, in a process that
has already imported monai (import time is printed separately). Extra memory = tracemalloc peak of one
call and the RSS growth over all calls.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

T_IMPORT0 = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundles" / "tumor_synthesis"))
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402

from monai.data import MetaTensor  # noqa: E402
from tumor_synth import SynthesizeTumor  # noqa: E402
from tumor_synth.testing import make_abdomen  # noqa: E402

T_IMPORT = time.perf_counter() - T_IMPORT0


def _fresh(x):
    """A private copy of an input for the in-place mode (numpy or MetaTensor)."""
    return x.clone() if isinstance(x, torch.Tensor) else x.copy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--spacing", default="1,1,1", help="voxel size in mm, e.g. 1,1,1 or 1.5,1.5,2.5")
    parser.add_argument("--inplace", action="store_true", help="write into the input (no copy of the volume)")
    parser.add_argument("--organ", default="liver")
    parser.add_argument("--metatensor", action="store_true",
                        help="MetaTensor inputs, as SynthesizeTumord gets them after LoadImaged (default: numpy)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    spacing = tuple(float(s) for s in args.spacing.split(","))
    shape = (256, 256, 160)
    ext = np.asarray(shape) * spacing
    liver = {6: ((0.42, 0.45, 0.5), (0.33 * ext[0], 0.25 * ext[1], 0.31 * ext[2]), 100.0)}
    image, label = make_abdomen(shape, spacing, liver, seed=0, vessel=15)
    n_liver = int((label == 6).sum())
    if args.metatensor:
        affine = torch.diag(torch.tensor([*spacing, 1.0], dtype=torch.float64))
        image, label = (MetaTensor(torch.from_numpy(x), affine=affine) for x in (image, label))
    proc = psutil.Process(os.getpid())
    print(f"# SynthesizeTumor benchmark: volume {shape} at {spacing} mm, liver {n_liver} voxels, "
          f"torch threads {torch.get_num_threads()}, inplace={args.inplace}, metatensor={args.metatensor}, "
          f"cpu_count={os.cpu_count()}, "
          f"loadavg {os.getloadavg()[0]:.2f}")
    print(f"import (monai + tumor_synth): {T_IMPORT:.2f} s")
    rss0 = proc.memory_info().rss
    t0 = time.perf_counter()
    first = SynthesizeTumor("liver", size_class="mix", spacing=spacing, inplace=args.inplace)
    first.set_random_state(0)
    work = (_fresh(image), _fresh(label)) if args.inplace else (image, label)
    first(*work)
    print(f"start-up (construct + first mix call): {1000 * (time.perf_counter() - t0):.1f} ms")
    print("| size class | median ms | min-max ms | CPU ms | lesions (median) | lesion voxels (median) "
          "| tracemalloc peak MB |")
    print("|---|---|---|---|---|---|---|")
    for size in ("tiny", "small", "medium", "large", "mix"):
        t = SynthesizeTumor(args.organ, size_class=size, spacing=spacing, inplace=args.inplace)
        walls, cpus, counts, voxels = [], [], [], []
        for run in range(args.runs):
            t.set_random_state(1000 + run)
            work = (_fresh(image), _fresh(label)) if args.inplace else (image, label)
            w0, c0 = time.perf_counter(), time.process_time()
            t(*work)
            walls.append(1000 * (time.perf_counter() - w0))
            cpus.append(1000 * (time.process_time() - c0))
            counts.append(len(t.last_lesions))
            voxels.append(sum(r["n_voxels"] for r in t.last_lesions))
        t.set_random_state(1000)
        work = (_fresh(image), _fresh(label)) if args.inplace else (image, label)
        tracemalloc.start()
        t(*work)
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        med = statistics.median
        print(f"| {size} | {med(walls):.1f} | {min(walls):.1f}-{max(walls):.1f} | {med(cpus):.1f} | "
              f"{med(counts):.0f} | {med(voxels):.0f} | {peak:.1f} |")
    print(f"RSS growth over all calls: {(proc.memory_info().rss - rss0) / 2**20:.1f} MB "
          f"(input image {image.nbytes / 2**20:.0f} MB + label {label.nbytes / 2**20:.0f} MB)")


if __name__ == "__main__":
    main()
