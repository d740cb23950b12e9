"""Package a bundle folder as the zip `python -m monai.bundle download` expects.

Usage: python bundles/package_bundle.py BUNDLE_DIR [--out DIST_DIR]
Writes DIST_DIR/<name>_v<version>.zip whose single top-level folder is <name>/ (monai 1.6 requires the folder
name to equal `--name` at download time). The version comes from configs/metadata.json. Caches, checkpoints
of half-finished runs and logs are left out. The zip is written to a temporary name and renamed at the end.
"""
import argparse
import json
import os
import sys
import zipfile
from pathlib import Path

EXCLUDED_DIRS = {"__pycache__", ".pytest_cache", "eval", "runs", ".ipynb_checkpoints"}
EXCLUDED_SUFFIXES = {".pyc", ".log", ".tmp"}
# Zip entries get a fixed timestamp so the same bundle gives the same bytes.
FIXED_DATE_TIME = (2020, 1, 1, 0, 0, 0)


def bundle_files(bundle_dir: Path):
    """Files to ship, relative to the bundle folder, sorted."""
    for path in sorted(bundle_dir.rglob("*")):
        relative = path.relative_to(bundle_dir)
        if path.is_file() and not EXCLUDED_DIRS.intersection(relative.parts[:-1]) \
                and path.suffix not in EXCLUDED_SUFFIXES:
            yield relative


def package(bundle_dir: Path, out_dir: Path) -> Path:
    """Zip `bundle_dir` into `out_dir`; returns the zip path."""
    metadata_path = bundle_dir / "configs" / "metadata.json"
    if not metadata_path.is_file():
        raise ValueError(f"{metadata_path}: missing; a bundle needs configs/metadata.json")
    version = json.loads(metadata_path.read_text())["version"]
    name = bundle_dir.resolve().name
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}_v{version}.zip"
    partial = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for relative in bundle_files(bundle_dir):
            info = zipfile.ZipInfo(f"{name}/{relative.as_posix()}", date_time=FIXED_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, (bundle_dir / relative).read_bytes())
    os.replace(partial, target)
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("dist"))
    args = parser.parse_args(argv)
    try:
        print(package(args.bundle_dir, args.out))
    except (OSError, ValueError, KeyError) as err:
        print(f"package_bundle: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
