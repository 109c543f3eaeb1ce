#!/usr/bin/env bash
# LandFuse development setup for Debian 12 (bookworm). Idempotent: safe to re-run.
#
#   1. Debian packages: QGIS 3.22 LTR + providers, python3-rasterio, python3-gdal, xvfb, make, zip
#   2. .venv from /usr/bin/python3 with --system-site-packages (so PyQGIS, GDAL, rasterio and
#      numpy stay Debian's), pinned Python requirements, and LandFuse itself (editable) so that
#      `import landfuse` and the `landfuse` command work.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
venv="$here/.venv"
say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# --- 0. Can we handle this machine? -----------------------------------------------------------
[ "$(uname -s)" = "Linux" ] || die "LandFuse's setup script supports Debian 12 only (this is $(uname -s)). Install QGIS 3.22+ and follow README.md by hand."
if [ -r /etc/os-release ]; then . /etc/os-release; else die "no /etc/os-release: cannot tell which Linux this is. LandFuse's setup supports Debian 12."; fi
if [ "${ID:-}" != "debian" ] || [ "${VERSION_ID:-}" != "12" ]; then
  die "this is ${PRETTY_NAME:-an unknown system}; scripts/setup.sh supports Debian 12 (bookworm) only. On other systems install QGIS (with python3-qgis), rasterio built on QGIS's GDAL, and torch 2.13, then run: python3 -m venv --system-site-packages .venv && .venv/bin/pip install -c requirements/constraints.txt -r requirements/dev.txt && .venv/bin/pip install --no-deps -e ."
fi

# --- 1. Debian packages ----------------------------------------------------------------------
debs=(qgis python3-qgis qgis-providers python3-rasterio python3-gdal python3-numpy python3-venv
      python3-pip xvfb xauth make zip python3-sklearn)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "these Debian packages are missing and this is not root: ${missing[*]}. Run as root (or install them with apt-get) and re-run."
    SUDO=sudo
  else
    SUDO=
  fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  say "Debian packages present: ${debs[*]}"
fi
qgis_version=$(/usr/bin/python3 -c 'from qgis.core import Qgis; print(Qgis.QGIS_VERSION)' 2>/dev/null) \
  || die "PyQGIS does not import with /usr/bin/python3 after installing python3-qgis."
say "QGIS $qgis_version"

# --- 2. Virtual environment --------------------------------------------------------------------
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import qgis.core' 2>/dev/null; then
  say "creating $venv from /usr/bin/python3 (--system-site-packages: PyQGIS, GDAL, rasterio, numpy from Debian)"
  rm -rf "$venv"
  /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
# pip's own chatter about unreachable extra indexes of this machine's pip.conf is dropped.
pip_install() {
  "${pip[@]}" install "$@" 2>&1 | { grep -v "is neither a file nor a directory" || true; }
  return "${PIPESTATUS[0]}"
}
stamp="$venv/.landfuse-requirements.sha256"
want=$(cat requirements/*.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing pinned Python requirements (torch 2.13.0, pytest, pytest-qgis, ruff, mypy)"
  pip_install -q -c requirements/constraints.txt -r requirements/dev.txt
  say "installing LandFuse itself (editable: the repository root is the package 'landfuse')"
  pip_install -q --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
else
  say "Python requirements up to date"
fi
"$venv/bin/python" - <<'PY' || die "the environment is incomplete (see the error above); remove .venv and re-run scripts/setup.sh"
import numpy, rasterio, torch, landfuse
from osgeo import gdal
assert numpy.__version__.startswith("1.24"), f"numpy {numpy.__version__} in the venv: Debian's rasterio/GDAL need 1.24"
print(f"[setup] ok: torch {torch.__version__}, numpy {numpy.__version__}, rasterio {rasterio.__version__}, GDAL {gdal.__version__}, landfuse at {landfuse.__path__[0]}")
PY
