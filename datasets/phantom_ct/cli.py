"""Command line of the phantom generator (``python datasets/phantoms.py ...``).

Bad arguments exit with status 2 and one line on stderr.
"""
from __future__ import annotations

import argparse
import sys

from .case import DEFAULT_SHAPE, DEFAULT_SPACING_MM, SEXES
from .dataset import format_summary, generate_dataset
from .intensity import PHASES

PROG = "phantoms.py"


class OneLineParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are a single stderr line and exit status 2."""

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def _triple(kind):
    def parse(text: str):
        parts = text.split(",")
        if len(parts) != 3:
            raise argparse.ArgumentTypeError(f"{text!r}: expected three comma-separated values")
        try:
            return tuple(kind(p) for p in parts)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected three {kind.__name__} values") from None
    parse.__name__ = f"{kind.__name__} triple"
    return parse


def build_parser() -> OneLineParser:
    """The argument parser (defaults: 256x256x160 voxels at 1.5x1.5x2.0 mm)."""
    p = OneLineParser(prog=PROG, description="Synthetic abdominal CT phantoms in the AbdomenAtlas layout.")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--cases", type=int, required=True, help="number of cases (>= 1)")
    p.add_argument("--seed", type=int, required=True, help="dataset seed (>= 0)")
    p.add_argument("--shape", type=_triple(int), default=DEFAULT_SHAPE, help="voxels X,Y,Z (default 256,256,160)")
    p.add_argument("--spacing", type=_triple(float), default=DEFAULT_SPACING_MM,
                   help="voxel size in mm SX,SY,SZ (default 1.5,1.5,2.0)")
    p.add_argument("--healthy", action="store_true", help="no lesions")
    p.add_argument("--dicom", action="store_true", help="also write <case>/dicom/ (CT series)")
    p.add_argument("--preview", action="store_true", help="also write <case>/preview.png")
    p.add_argument("--sex", choices=SEXES, default=None, help="force the sex of every case")
    p.add_argument("--phase", choices=PHASES, default=None, help="force the contrast phase of every case")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary table")
    p.add_argument("--workers", type=int, default=1, help="processes generating cases in parallel (default 1)")
    return p


def main(argv=None) -> int:
    """Run the CLI; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rows = generate_dataset(args.out, args.cases, args.seed, shape=args.shape, spacing=args.spacing,
                                healthy=args.healthy, sex=args.sex, phase=args.phase, dicom=args.dicom,
                                preview=args.preview, progress=not args.quiet, workers=args.workers)
    except (ValueError, OSError) as error:
        message = str(error).replace("\n", " ")
        sys.stderr.write(f"{PROG}: error: {message}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted; completed cases are kept, no partial case was left\n")
        return 130
    if not args.quiet:
        print(format_summary(rows))
    return 0
