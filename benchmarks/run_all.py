"""Run every benchmarks/bench_*.py script in turn (one process each) and print what they measure.

Usage: python benchmarks/run_all.py [name-substring ...]
Figures go to stdout; benchmarks/RESULTS.md records them together with the command that produced them.
"""
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch


def main(filters: list[str]) -> int:
    here = Path(__file__).resolve().parent
    scripts = sorted(p for p in here.glob("bench_*.py") if not filters or any(f in p.name for f in filters))
    print(f"# {platform.platform()} | python {platform.python_version()} | torch {torch.__version__} "
          f"| {torch.get_num_threads()} threads | {time.strftime('%Y-%m-%d %H:%M')}")
    failed = []
    for script in scripts:
        print(f"\n## {script.name}", flush=True)
        if subprocess.run([sys.executable, str(script)], cwd=here.parent).returncode != 0:
            failed.append(script.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
