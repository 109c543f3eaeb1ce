#!/usr/bin/env bash
# Open a real QGIS with LandFuse linked (not copied) into a dedicated profile, so edits to the
# repository show after a plugin reload, and with the venv's packages (torch) visible to QGIS.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
profiles="$here/build/qgis-profile"
profile="$profiles/profiles/default"
mkdir -p "$profile/python/plugins" "$profile/QGIS"
ln -sfn "$here" "$profile/python/plugins/landfuse"
ini="$profile/QGIS/QGIS3.ini"
if ! grep -q '^landfuse=true' "$ini" 2>/dev/null; then
  printf '[PythonPlugins]\nlandfuse=true\n' >> "$ini"
fi
site=$("$here/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ -z "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
  echo "make qgis: no display. Run it on a desktop session, or for a headless smoke run: xvfb-run -a make qgis" >&2
  exit 1
fi
echo "[qgis] profile $profiles (plugin linked from $here); venv packages from $site"
cd "$profiles"
PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" exec qgis --profiles-path "$profiles" "$@"
