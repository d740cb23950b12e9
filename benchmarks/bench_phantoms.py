"""Benchmark of the phantom generator: seconds per default case and peak resident memory.

Run: python benchmarks/bench_phantoms.py [--cases N] [--dicom] [--preview]
Prints, per stage, the median seconds over N default cases (256x256x160 at 1.5x1.5x2.0 mm):
``generate_case`` (anatomy, lesions, rendering; no I/O), ``write_case`` (NIfTI + masks + meta),
their sum, and the process's peak RSS.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "datasets"))

from phantom_ct import case_seed, generate_case, write_case  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--dicom", action="store_true")
    parser.add_argument("--preview", action="store_true")
    args = parser.parse_args()
    gen, wri, cpu = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.cases):
            c0 = time.process_time()
            t0 = time.perf_counter()
            case = generate_case(case_seed(0, i))
            t1 = time.perf_counter()
            write_case(case, tmp, f"case_{i:04d}", dicom=args.dicom, preview=args.preview)
            t2 = time.perf_counter()
            cpu.append(time.process_time() - c0)
            gen.append(t1 - t0)
            wri.append(t2 - t1)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    total = [g + w for g, w in zip(gen, wri)]
    print(f"phantom benchmark: {args.cases} default cases (256x256x160 @ 1.5x1.5x2.0 mm), "
          f"dicom={args.dicom} preview={args.preview}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
          f"python {platform.python_version()}")
    print(f"generate_case  median {statistics.median(gen):6.2f} s   (min {min(gen):.2f}, max {max(gen):.2f})")
    print(f"write_case     median {statistics.median(wri):6.2f} s   (min {min(wri):.2f}, max {max(wri):.2f})")
    print(f"total per case median {statistics.median(total):6.2f} s   (min {min(total):.2f}, max {max(total):.2f})")
    print(f"CPU time/case  median {statistics.median(cpu):6.2f} s   (user+sys of this process, all threads)")
    print(f"load average   {os.getloadavg()[0]:.2f} (other jobs on the machine inflate wall-clock figures)")
    print(f"peak RSS       {peak_mib:8.0f} MiB")


if __name__ == "__main__":
    main()
