"""A real QGIS main window under Xvfb with the packaged plugin installed in a fresh profile.

The zip that `make package` builds is unpacked into a new profile, QGIS starts with the plugin
enabled, `qgis_session.py` opens the dock from the toolbar button with a raster in the project,
and screenshots land in build/screenshots/ for people to look at.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.gui, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "build" / "screenshots"
SESSION_SCRIPT = Path(__file__).with_name("qgis_session.py")


def _load_packager():
    script = ROOT / "scripts" / "package.py"
    spec = importlib.util.spec_from_file_location("landfuse_package", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scene(path: Path) -> Path:
    """A 3-band 10 m UInt16 raster with smooth fields, so the map shows something."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:200, 0:300].astype("float32")
    base = np.stack(
        [
            1200 + 600 * np.sin(xx / 23.0) * np.cos(yy / 31.0),
            1000 + 500 * np.cos(xx / 41.0 + yy / 17.0),
            800 + 400 * np.sin((xx + yy) / 29.0),
        ]
    )
    data = (base + rng.normal(0, 40, base.shape)).clip(0, 10000).astype("uint16")
    profile = dict(
        driver="GTiff",
        width=300,
        height=200,
        count=3,
        dtype="uint16",
        crs="EPSG:32631",
        transform=from_origin(600000, 5300000, 10, 10),
        nodata=0,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for band, name in enumerate(["B04", "B03", "B02"], start=1):
            dst.set_band_description(band, name)
    return path


def _image_has_content(path: Path) -> bool:
    from qgis.PyQt.QtGui import QImage

    image = QImage(str(path))
    if image.isNull() or image.width() < 200 or image.height() < 200:
        return False
    colours = {
        image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)
    }
    return len(colours) > 10


@pytest.fixture(scope="module")
def qgis_run(tmp_path_factory):
    if shutil.which("qgis") is None:
        pytest.fail("the qgis executable is missing: run scripts/setup.sh")
    tmp = tmp_path_factory.mktemp("realqgis")
    zip_path = _load_packager().build(tmp / "dist")
    profile = tmp / "profiles" / "default"
    plugins_dir = profile / "python" / "plugins"
    plugins_dir.mkdir(parents=True)
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(plugins_dir)
    (profile / "QGIS").mkdir()
    (profile / "QGIS" / "QGIS3.ini").write_text("[PythonPlugins]\nlandfuse=true\n")
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in ("qgis_main_window.png", "landfuse_dock.png"):
        (SHOTS / old).unlink(missing_ok=True)
    result = tmp / "result.json"
    env = dict(os.environ)
    env.update(
        PYTHONPATH=sysconfig.get_paths()["purelib"],  # the venv's torch for QGIS's Python
        LANDFUSE_GUI_RESULT=str(result),
        LANDFUSE_GUI_SHOTS=str(SHOTS),
        LANDFUSE_GUI_RASTER=str(_scene(tmp / "s2_demo.tif")),
        XDG_RUNTIME_DIR=str(tmp),
    )
    env.pop("QT_QPA_PLATFORM", None)  # a real window, not the offscreen platform of pytest-qgis
    command = [
        "qgis",
        "--profiles-path",
        str(tmp),
        "--nologo",
        "--noversioncheck",
        "--code",
        str(SESSION_SCRIPT),
    ]
    if not env.get("DISPLAY"):
        command = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", *command]
    proc = subprocess.run(command, env=env, cwd=tmp, capture_output=True, text=True, timeout=240)
    log = f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert result.is_file(), f"QGIS ended without running the session script.\n{log}"
    return json.loads(result.read_text()), log, zip_path


def test_plugin_loads_from_the_packaged_zip(qgis_run):
    state, log, _ = qgis_run
    assert state["errors"] == [], log
    assert "landfuse" in state["plugins"]


def test_dock_opens_and_lists_the_raster(qgis_run):
    state, log, _ = qgis_run
    assert state.get("layer_valid") is True, log
    assert state.get("dock_visible") is True, log
    assert state.get("toolbar_checked") is True
    assert state["dock_layers"] == [
        ["Sentinel-2 demo (B04 B03 B02)", "3 bands · UInt16 · EPSG:32631 · 10 m"]
    ]


def test_screenshots_show_something(qgis_run):
    for name in ("qgis_main_window.png", "landfuse_dock.png"):
        assert _image_has_content(SHOTS / name), f"{name} is missing or blank"


def test_zip_holds_only_the_runtime_plugin(qgis_run):
    _, _, zip_path = qgis_run
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
    assert all(name.startswith("landfuse/") for name in names)
    assert "landfuse/metadata.txt" in names and "landfuse/__init__.py" in names
    assert "landfuse/resources/icon.png" in names
    forbidden = ("tests/", "scripts/", ".venv/", "__pycache__", ".pyc", "dist/", "build/", ".git")
    assert [n for n in names if any(f in n for f in forbidden)] == []
