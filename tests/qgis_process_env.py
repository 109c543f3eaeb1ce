"""A throwaway QGIS profile with this checkout enabled as the landfuse plugin, for running the
``qgis_process`` binary in tests."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def qgis_process_binary() -> str:
    """Debian's wrapper passes --noversioncheck, which qgis_process refuses: call the binary."""
    return (
        "/usr/bin/qgis_process.bin"
        if os.path.exists("/usr/bin/qgis_process.bin")
        else "qgis_process"
    )


def qgis_process_env(folder: Path, ini_extra: str = "") -> dict:
    """The environment of a ``qgis_process`` run in a fresh profile under ``folder`` with the
    plugin enabled (``ini_extra``: more QGIS3.ini sections, e.g. the worker's Python)."""
    profile = folder / "cfg" / "profiles" / "default"
    (profile / "python" / "plugins").mkdir(parents=True)
    (profile / "QGIS").mkdir()
    (profile / "QGIS" / "QGIS3.ini").write_text("[PythonPlugins]\nlandfuse=true\n" + ini_extra)
    (profile / "python" / "plugins" / "landfuse").symlink_to(ROOT)
    return dict(
        os.environ, QGIS_CUSTOM_CONFIG_PATH=str(folder / "cfg"), QT_QPA_PLATFORM="offscreen"
    )
