"""Fixtures shared by every test tier."""

import shutil
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Helper modules shared by the tiers (tests/faultcases.py) import as top-level modules.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))
REALDATA = REPO_ROOT.parent / "shared" / "realdata"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root, which is the plugin package ``landfuse``."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def realdata(tmp_path_factory) -> Path:
    """A copy of ``../shared/realdata`` for the session (tests that need it are skipped with the
    reason when it is absent).

    A copy, because QGIS writes a ``.aux.xml`` beside every raster whose statistics it computes
    (the contrast stretch of a layer it draws): tests that load the samples as layers wrote 31
    of them into the shared folder, which must stay as it is.
    """
    if not REALDATA.is_dir():
        pytest.skip(f"real sample data not found at {REALDATA} (see DESIGN.md §7)")
    copy = tmp_path_factory.mktemp("realdata-copy") / "realdata"
    shutil.copytree(REALDATA, copy, ignore=shutil.ignore_patterns("*.aux.xml"))
    return copy


@pytest.fixture
def make_geotiff(tmp_path: Path) -> Callable[..., Path]:
    """Factory writing a small seeded GeoTIFF; returns its path.

    Keyword args: name, bands, width, height, dtype, crs (EPSG string or None for no CRS),
    origin (x, y of the top-left corner), resolution, nodata, descriptions, seed.
    """
    import rasterio
    from rasterio.transform import from_origin

    def make(
        name: str = "image.tif",
        bands: int = 3,
        width: int = 32,
        height: int = 24,
        dtype: str = "uint16",
        crs: Optional[str] = "EPSG:32631",
        origin: Sequence[float] = (500000.0, 4500000.0),
        resolution: float = 10.0,
        nodata: Optional[float] = None,
        descriptions: Optional[Sequence[str]] = None,
        seed: int = 0,
    ) -> Path:
        rng = np.random.default_rng(seed)
        data = rng.integers(0, 10000, size=(bands, height, width)).astype(dtype)
        path = tmp_path / name
        profile = {
            "driver": "GTiff",
            "width": width,
            "height": height,
            "count": bands,
            "dtype": dtype,
            "transform": from_origin(origin[0], origin[1], resolution, resolution),
        }
        if crs is not None:
            profile["crs"] = crs
        if nodata is not None:
            profile["nodata"] = nodata
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
            for index, text in enumerate(descriptions or (), start=1):
                dst.set_band_description(index, text)
        return path

    return make


@pytest.fixture(autouse=True)
def qt_slot_exceptions(monkeypatch):
    """Fail the test on an exception raised inside a Qt slot (PyQt would otherwise abort the
    whole process through qFatal, hiding which test and which slot)."""
    import sys
    import traceback

    caught = []

    def hook(kind, value, tb):
        caught.append("".join(traceback.format_exception(kind, value, tb)))

    monkeypatch.setattr(sys, "excepthook", hook)
    yield
    assert not caught, "exception(s) in Qt slots:\n" + "\n".join(caught)
