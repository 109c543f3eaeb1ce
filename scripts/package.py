"""Build the installable plugin zip: dist/landfuse-<version>.zip with one top folder landfuse/.

Only what the plugin needs at run time goes in: the package modules, metadata.txt, the
resources, the demo weights (demo/weights: the "Try LandFuse on a demo scene" of the dock), the
licence and the README. No tests, scripts, docs, caches or virtual environment.

Usage: python scripts/package.py [--output DIR]
"""

import argparse
import configparser
import sys
import zipfile
from pathlib import Path
from typing import Iterator, List

ROOT = Path(__file__).resolve().parents[1]
TOP_FOLDER = "landfuse"
RUNTIME_FILES = ["__init__.py", "plugin.py", "metadata.txt", "LICENSE", "README.md"]
RUNTIME_DIRS = ["core", "models", "processing", "ui", "resources", "demo"]
EXCLUDED_PARTS = {"__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
EXCLUDED_SUFFIXES = {".pyc", ".pyo", ".orig", ".rej", ".swp"}


def plugin_version(root: Path = ROOT) -> str:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(root / "metadata.txt", encoding="utf-8")
    return parser["general"]["version"]


def runtime_files(root: Path = ROOT) -> Iterator[Path]:
    """Every file the zip holds, relative to the repository root, sorted."""
    files: List[Path] = [root / name for name in RUNTIME_FILES if (root / name).is_file()]
    for folder in RUNTIME_DIRS:
        files.extend(p for p in (root / folder).rglob("*") if p.is_file())
    for path in sorted(files):
        rel = path.relative_to(root)
        if EXCLUDED_PARTS.intersection(rel.parts) or path.suffix in EXCLUDED_SUFFIXES:
            continue
        yield rel


def build(output_dir: Path, root: Path = ROOT) -> Path:
    """Write the zip and return its path."""
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / f"{TOP_FOLDER}-{plugin_version(root)}.zip"
    tmp = target.with_suffix(".zip.part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for rel in runtime_files(root):
            archive.write(root / rel, f"{TOP_FOLDER}/{rel.as_posix()}")
    tmp.replace(target)
    return target


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "dist", help="folder for the zip")
    args = parser.parse_args(argv)
    target = build(args.output)
    with zipfile.ZipFile(target) as archive:
        count = len(archive.namelist())
    print(f"{target} ({count} files, {target.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
