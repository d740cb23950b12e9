"""Synthetic abdominal CT phantom generator: thin command-line wrapper around ``phantom_ct``.

Usage: python datasets/phantoms.py --out DIR --cases N --seed S [--shape X,Y,Z] [--spacing SX,SY,SZ]
       [--healthy] [--dicom] [--preview] [--sex male|female] [--phase PHASE]
See docs/phantoms.md.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from phantom_ct.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
