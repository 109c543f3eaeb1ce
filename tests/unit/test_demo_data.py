"""The demo scene generator: seeded, plausible, on three different grids, with known truth."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import rasterio

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_data():
    spec = importlib.util.spec_from_file_location("demo_data", ROOT / "scripts" / "demo_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def scene(demo_data, tmp_path_factory):
    return demo_data.write_landcover_scene(tmp_path_factory.mktemp("lc"), size=256, seed=3)


def test_same_seed_same_scene(demo_data, scene, tmp_path):
    again = demo_data.write_landcover_scene(tmp_path, size=256, seed=3)
    other = demo_data.write_landcover_scene(tmp_path / "other", size=256, seed=4)
    for name in ("s2", "s1", "dem", "truth"):
        with rasterio.open(getattr(scene, name)) as a, rasterio.open(getattr(again, name)) as b:
            np.testing.assert_array_equal(a.read(), b.read())
    with rasterio.open(scene.truth) as a, rasterio.open(other.truth) as b:
        assert (a.read() != b.read()).mean() > 0.2


def test_every_class_present(demo_data, scene):
    with rasterio.open(scene.truth) as src:
        fractions = demo_data.class_fractions(src.read(1))
    assert set(fractions) == set(demo_data.CLASS_NAMES)
    assert min(fractions.values()) > 0.005, fractions
    assert max(fractions.values()) < 0.6, fractions


def test_inputs_are_on_three_grids_with_band_names(scene):
    with (
        rasterio.open(scene.s2) as s2,
        rasterio.open(scene.s1) as s1,
        rasterio.open(scene.dem) as dem,
    ):
        assert (s2.count, s2.res, s2.crs.to_epsg(), s2.dtypes[0]) == (
            13,
            (10.0, 10.0),
            32633,
            "uint16",
        )
        assert s2.descriptions[8] == "B8A" and s2.descriptions[12] == "B12"
        assert (s1.count, s1.res, s1.crs.to_epsg(), s1.descriptions) == (
            2,
            (20.0, 20.0),
            32633,
            ("VV", "VH"),
        )
        assert dem.crs.to_epsg() == 4326 and dem.count == 1
        # Sentinel-1 covers the optical footprint with margin; the DEM covers it too.
        assert s1.bounds.left < s2.bounds.left and s1.bounds.top > s2.bounds.top
        from rasterio.warp import transform_bounds

        geo = transform_bounds(s2.crs, dem.crs, *s2.bounds)
        assert dem.bounds.left <= geo[0] + 1e-3 and dem.bounds.right >= geo[2] - 1e-3


def test_spectra_and_backscatter_are_plausible(demo_data, scene):
    with rasterio.open(scene.truth) as t, rasterio.open(scene.s2) as s2:
        classes = t.read(1)
        red, nir = s2.read(4).astype(float), s2.read(8).astype(float)
    ndvi = (nir - red) / (nir + red)
    assert ndvi[classes == demo_data.FOREST].mean() > 0.6
    assert ndvi[classes == demo_data.WATER].mean() < 0.0
    with rasterio.open(scene.s1) as s1:
        vv = s1.read(1)
    assert -30 < float(np.median(vv)) < 0


def test_change_pair(demo_data, tmp_path):
    pair = demo_data.write_change_pair(tmp_path, size=256, seed=5)
    with (
        rasterio.open(pair.truth) as t,
        rasterio.open(pair.before) as b,
        rasterio.open(pair.after) as a,
    ):
        change = t.read(1)
        assert b.transform == a.transform and b.crs == a.crs
        before, after = b.read().astype(float), a.read().astype(float)
    assert set(np.unique(change)) == {0, 1}
    assert 0.01 < change.mean() < 0.3
    diff = np.abs(after - before).mean(axis=0)
    assert diff[change == 1].mean() > 2 * diff[change == 0].mean()
