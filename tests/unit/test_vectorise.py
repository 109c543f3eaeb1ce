"""Change polygons with areas, minimum area and simplification."""

import numpy as np
import pytest
import rasterio
from osgeo import ogr
from rasterio.transform import from_origin

from landfuse.core.errors import InputError, InputFileError
from landfuse.core.vectorise import FIELD_AREA, FIELD_AREA_HA, vectorise_mask

pytestmark = pytest.mark.unit


def _mask(path, data, crs="EPSG:32631", transform=None):
    transform = transform or from_origin(500000, 4500000, 10, 10)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[1],
        height=data.shape[0],
        count=1,
        dtype="uint8",
        crs=crs,
        transform=transform,
        nodata=255,
    ) as dst:
        dst.write(data, 1)
    return str(path)


def _areas(path):
    source = ogr.Open(path)
    layer = source.GetLayer(0)
    return sorted((f.GetField(FIELD_AREA), f.GetField(FIELD_AREA_HA)) for f in layer)


def test_polygons_areas_and_minimum(tmp_path):
    data = np.zeros((40, 40), np.uint8)
    data[2:12, 2:12] = 1  # 100 px = 10000 m²
    data[20:22, 30:33] = 1  # 6 px = 600 m²
    data[30:35, 5:9] = 255  # nodata is not change
    result = vectorise_mask(_mask(tmp_path / "m.tif", data), str(tmp_path / "c.gpkg"))
    assert (result.count, result.dropped) == (2, 0)
    assert result.total_area_m2 == pytest.approx(10600)
    assert _areas(result.path) == [
        (pytest.approx(600), pytest.approx(0.06)),
        (pytest.approx(10000), pytest.approx(1.0)),
    ]
    filtered = vectorise_mask(
        _mask(tmp_path / "m.tif", data), str(tmp_path / "f.gpkg"), min_area_m2=1000
    )
    assert (filtered.count, filtered.dropped) == (1, 1)


def test_geographic_crs_areas_are_in_metres(tmp_path):
    data = np.zeros((20, 20), np.uint8)
    data[5:15, 5:15] = 1
    # 0.001° pixels at the equator: about 111.3 m x 110.6 m.
    path = _mask(tmp_path / "g.tif", data, "EPSG:4326", from_origin(10.0, 0.01, 0.001, 0.001))
    result = vectorise_mask(path, str(tmp_path / "g.gpkg"))
    assert result.total_area_m2 == pytest.approx(100 * 111320 * 110574 / 1e6, rel=0.01)


def test_simplify_reduces_vertices(tmp_path):
    yy, xx = np.mgrid[0:200, 0:200]
    data = (((yy - 100) ** 2 + (xx - 100) ** 2) < 80**2).astype(np.uint8)
    path = _mask(tmp_path / "circle.tif", data)
    raw = vectorise_mask(path, str(tmp_path / "raw.gpkg"))
    smooth = vectorise_mask(path, str(tmp_path / "smooth.gpkg"), simplify=25.0)

    def vertices(p):
        source = ogr.Open(p)  # keep the data source alive while its layer is used
        feature = source.GetLayer(0).GetNextFeature()
        return feature.GetGeometryRef().GetGeometryRef(0).GetGeometryRef(0).GetPointCount()

    assert vertices(smooth.path) < vertices(raw.path) / 3
    assert smooth.total_area_m2 == pytest.approx(raw.total_area_m2, rel=0.05)


def test_bad_inputs(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        vectorise_mask(str(tmp_path / "missing.tif"), str(tmp_path / "x.gpkg"))
    two = tmp_path / "two.tif"
    with rasterio.open(
        two,
        "w",
        driver="GTiff",
        width=4,
        height=4,
        count=2,
        dtype="uint8",
        crs="EPSG:32631",
        transform=from_origin(0, 0, 1, 1),
    ) as dst:
        dst.write(np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(InputError, match="2 bands"):
        vectorise_mask(str(two), str(tmp_path / "x.gpkg"))
