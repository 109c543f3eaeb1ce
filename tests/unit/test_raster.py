"""Raster sources on a reference grid: reading, warping, masks, bands, areas of interest."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from landfuse.core.errors import (
    AlignmentError,
    AreaOfInterestError,
    BandMismatchError,
    GeoreferenceError,
    InputFileError,
)
from landfuse.core.raster import (
    AlignedSource,
    Grid,
    build_area_mask,
    check_georeferenced,
    choose_reference,
    footprint_window,
    inspect_raster,
    open_aligned,
    select_bands,
)
from landfuse.core.requests import AreaOfInterest, RasterSource

pytestmark = [
    pytest.mark.unit,
    pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning"),
]

UTM = "EPSG:32631"
REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"


def write(path, data, transform=None, crs=UTM, nodata=None, descriptions=None, driver="GTiff"):
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    count, height, width = data.shape
    profile = {"driver": driver, "width": width, "height": height, "count": count}
    profile["dtype"] = str(data.dtype)
    if transform is not None:
        profile["transform"] = transform
    if crs is not None:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, text in enumerate(descriptions or (), start=1):
            dst.set_band_description(i, text)
    return str(path)


def grid_of(path):
    return inspect_raster(str(path)).grid


def test_missing_folder_and_non_raster_files_are_input_file_errors(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        inspect_raster(str(tmp_path / "nope.tif"))
    with pytest.raises(InputFileError, match="folder"):
        inspect_raster(str(tmp_path))
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    with pytest.raises(InputFileError, match="cannot read"):
        inspect_raster(str(text))


def test_missing_crs_or_geotransform_is_a_georeference_error(tmp_path):
    no_crs = write(
        tmp_path / "nocrs.tif", np.ones((4, 4), np.uint8), from_origin(0, 4, 1, 1), crs=None
    )
    with pytest.raises(GeoreferenceError, match="a CRS missing"):
        check_georeferenced(inspect_raster(no_crs))
    png = write(tmp_path / "plain.png", np.ones((3, 8, 8), np.uint8), crs=None, driver="PNG")
    info = inspect_raster(png)
    assert not info.georeferenced and not info.has_geotransform
    with pytest.raises(GeoreferenceError, match="pixel-grid"):
        check_georeferenced(info)


def test_band_selection_by_number_and_description(tmp_path):
    path = write(
        tmp_path / "s2.tif",
        np.zeros((3, 4, 4), np.uint16),
        from_origin(500000, 100, 10, 10),
        descriptions=("B2", "B03", "B8A"),
    )
    info = inspect_raster(path)
    assert select_bands(info, ()) == (1, 2, 3)
    assert select_bands(info, (3, 1)) == (3, 1)
    assert select_bands(info, ("b02", "B8a", "3")) == (1, 3, 3)
    with pytest.raises(BandMismatchError, match="band 4 does not exist"):
        select_bands(info, (4,))
    with pytest.raises(BandMismatchError, match="B2, B03, B8A"):
        select_bands(info, ("VV",))


def test_reference_is_the_finest_file_of_the_first_modality(tmp_path):
    coarse = write(tmp_path / "b01.tif", np.ones((2, 2), np.uint16), from_origin(0, 120, 60, 60))
    fine = write(tmp_path / "b02.tif", np.ones((12, 12), np.uint16), from_origin(0, 120, 10, 10))
    mid = write(tmp_path / "b05.tif", np.ones((6, 6), np.uint16), from_origin(0, 120, 20, 20))
    infos = [inspect_raster(p) for p in (coarse, fine, mid)]
    assert choose_reference(infos).path == fine
    assert choose_reference(infos, mid).path == mid


def test_same_grid_is_read_directly_and_exactly(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 5000, (2, 20, 30)).astype(np.uint16)
    path = write(tmp_path / "a.tif", data, from_origin(500000, 4000000, 10, 10))
    grid = grid_of(path)
    source = AlignedSource(RasterSource(path), (2, 1), grid)
    try:
        assert not source.warped
        out, valid = source.read(Window(5, 3, 10, 7))
        np.testing.assert_array_equal(out, data[[1, 0], 3:10, 5:15].astype(np.float32))
        assert valid.all() and out.dtype == np.float32
    finally:
        source.close()


def test_whole_pixel_offset_is_read_directly_on_a_sub_grid(tmp_path):
    data = np.arange(400, dtype=np.float32).reshape(20, 20)
    path = write(tmp_path / "big.tif", data, from_origin(500000, 4000000, 10, 10))
    # A 10 m grid starting 3 columns right and 2 rows down, with floating-point noise.
    sub = Grid(5, 4, from_origin(500030.0000001, 3999980, 10, 10), CRS.from_string(UTM))
    source = AlignedSource(RasterSource(path), (1,), sub)
    try:
        assert not source.warped
        out, _ = source.read(Window(0, 0, 5, 4))
        np.testing.assert_array_equal(out[0], data[2:6, 3:8])
    finally:
        source.close()


def test_a_20m_band_is_warped_onto_the_10m_grid(tmp_path):
    # A linear ramp in x: bilinear resampling reproduces it between pixel centres.
    x = np.arange(10, dtype=np.float32) * 20.0
    coarse = np.tile(x, (10, 1))
    coarse_path = write(tmp_path / "b05.tif", coarse, from_origin(500000, 4000000, 20, 20))
    fine_path = write(
        tmp_path / "b02.tif", np.zeros((20, 20), np.uint16), from_origin(500000, 4000000, 10, 10)
    )
    grid = grid_of(fine_path)
    source = AlignedSource(RasterSource(coarse_path), (1,), grid, "bilinear")
    try:
        assert source.warped
        out, valid = source.read(Window(0, 0, 20, 20))
        assert valid.all()
        # 10 m pixel centres at x = 5 + 10 i; the 20 m ramp (centres 10, 30...) reads x - 10.
        inner = out[0, 5, 2:18]
        expected = (5 + 10 * np.arange(2, 18)) - 10.0
        np.testing.assert_allclose(inner, expected, atol=1e-3)
    finally:
        source.close()


def test_geographic_raster_warped_onto_utm_masks_outside_its_footprint(tmp_path):
    utm = write(
        tmp_path / "utm.tif", np.ones((50, 50), np.uint16), from_origin(500000, 4000000, 10, 10)
    )
    grid = grid_of(utm)
    left, _, right, top = transform_bounds(UTM, "EPSG:4326", *grid.bounds)
    # A WGS84 raster covering only the western half of the UTM grid, no nodata value.
    mid = (left + right) / 2
    res = (mid - left) / 25
    geo = write(
        tmp_path / "geo.tif",
        np.full((60, 25), 7, np.uint8),
        from_origin(left - res, top + res * 5, res, res),
        crs="EPSG:4326",
    )
    window = footprint_window(inspect_raster(geo), grid)
    assert window.col_off == 0 and 20 <= window.width <= 30
    source = AlignedSource(RasterSource(geo), (1,), grid)
    try:
        out, valid = source.read(Window(0, 0, 50, 50))
        assert valid[:, :20].all()
        assert not valid[:, 30:].any()  # outside the footprint: invalid, not zero data
        np.testing.assert_allclose(out[0][valid], 7.0)
    finally:
        source.close()


def test_nodata_nan_and_override_make_pixels_invalid(tmp_path):
    data = np.full((2, 6, 6), 100, np.int16)
    data[0, 0, 0] = -9999
    path = write(tmp_path / "nd.tif", data, from_origin(0, 60, 10, 10), nodata=-9999)
    floats = np.ones((6, 6), np.float32)
    floats[5, 5] = np.nan
    fpath = write(tmp_path / "f.tif", floats, from_origin(0, 60, 10, 10))
    grid = grid_of(path)
    stack = open_aligned(
        [RasterSource(path), RasterSource(fpath), RasterSource(path, bands=(2,), nodata=100)],
        [(1, 2), (1,), (2,)],
        grid,
    )
    try:
        out, valid = stack.read(Window(0, 0, 6, 6))
        assert out.shape == (4, 6, 6) and stack.band_count == 4
        assert not valid.any()  # the override declares every 100 in band 2 nodata
        partial = open_aligned([RasterSource(path), RasterSource(fpath)], [(1, 2), (1,)], grid)
        _, ok = partial.read(Window(0, 0, 6, 6))
        partial.close()
        assert not ok[0, 0] and not ok[5, 5] and ok.sum() == 34
    finally:
        stack.close()


def test_nodata_is_honoured_through_the_warp(tmp_path):
    data = np.full((10, 10), 50, np.uint16)
    data[:, :5] = 0
    coarse = write(tmp_path / "c.tif", data, from_origin(0, 200, 20, 20), nodata=0)
    fine = write(tmp_path / "f.tif", np.ones((20, 20), np.uint8), from_origin(0, 200, 10, 10))
    source = AlignedSource(RasterSource(coarse), (1,), grid_of(fine), "nearest")
    try:
        _, valid = source.read(Window(0, 0, 20, 20))
        assert not valid[:, :10].any() and valid[:, 10:].all()
    finally:
        source.close()


def test_has_valid_pixels_finds_a_single_valid_pixel(tmp_path):
    data = np.zeros((600, 600), np.uint16)
    path = write(tmp_path / "empty.tif", data, from_origin(0, 6000, 10, 10), nodata=0)
    data[301, 417] = 5  # a decimated read at 256 px would step over it
    one = write(tmp_path / "one.tif", data, from_origin(0, 6000, 10, 10), nodata=0)
    # The same single pixel in a 20 m file, read through the warp onto the 10 m grid.
    coarse = np.zeros((300, 300), np.uint16)
    coarse[150, 208] = 5
    warped = write(tmp_path / "coarse.tif", coarse, from_origin(0, 6000, 20, 20), nodata=0)
    grid = grid_of(path)
    whole = Window(0, 0, 600, 600)
    sources = [AlignedSource(RasterSource(p), (1,), grid) for p in (path, one, warped)]
    try:
        assert sources[2].warped
        assert [s.has_valid_pixels(whole) for s in sources] == [False, True, True]
        # Only where the pixel is: a window elsewhere holds nothing valid.
        assert not sources[2].has_valid_pixels(Window(0, 0, 200, 200))
    finally:
        for source in sources:
            source.close()


def test_pixel_grid_mode_requires_equal_sizes(tmp_path):
    a = write(tmp_path / "a.png", np.zeros((3, 8, 8), np.uint8), crs=None, driver="PNG")
    b = write(tmp_path / "b.png", np.zeros((3, 8, 6), np.uint8), crs=None, driver="PNG")
    grid = Grid(8, 8, Affine.identity(), None)
    assert footprint_window(inspect_raster(a), grid) == Window(0, 0, 8, 8)
    with pytest.raises(AlignmentError, match="8x8"):
        footprint_window(inspect_raster(b), grid)


def test_pixel_areas_projected_geographic_and_pixel_grid():
    utm = Grid(10, 10, from_origin(500000, 4000000, 10, 20), CRS.from_string(UTM))
    np.testing.assert_allclose(utm.pixel_areas_m2(0, 3), [200.0] * 3)
    geo = Grid(10, 10, from_origin(-1.0, 48.0, 0.001, 0.001), CRS.from_epsg(4326))
    area = geo.pixel_areas_m2(0, 1)[0]
    # ~111.2 km per degree of latitude, times cos(48°) along the parallel.
    expected = (0.001 * 111_195) ** 2 * math.cos(math.radians(47.9995))
    assert area == pytest.approx(expected, rel=2e-3)
    assert Grid(4, 4, Affine.identity(), None).pixel_areas_m2(0, 2) is None


def test_bounds_in_grid_crs_give_a_window_without_mask():
    grid = Grid(100, 100, from_origin(500000, 4001000, 10, 10), CRS.from_string(UTM))
    area = build_area_mask(AreaOfInterest(bounds=(500105, 4000500, 500300, 4000895)), grid)
    assert area.is_rectangle
    assert area.window == Window(10, 10, 20, 40)
    assert area.mask(grid, Window(0, 0, 5, 5)) is None


def test_bounds_in_another_crs_become_a_polygon_mask():
    grid = Grid(100, 100, from_origin(500000, 4001000, 10, 10), CRS.from_string(UTM))
    lon0, lat0, lon1, lat1 = transform_bounds(UTM, "EPSG:4326", 500200, 4000200, 500600, 4000600)
    area = build_area_mask(AreaOfInterest(bounds=(lon0, lat0, lon1, lat1), crs="EPSG:4326"), grid)
    assert not area.is_rectangle
    mask = area.mask(grid, Window(0, 0, 100, 100))
    assert mask[60, 40] and not mask[5, 5] and not mask[95, 95]
    assert abs(int(mask.sum()) - 40 * 40) < 3 * 40  # about the 400 m square, edges bend


def test_polygon_files_geojson_and_geopackage(tmp_path):
    from osgeo import ogr, osr

    grid = Grid(100, 100, from_origin(500000, 4001000, 10, 10), CRS.from_string(UTM))
    # A triangle in UTM, written as GeoJSON (with a CRS member) and as a GeoPackage layer.
    ring = [[500100, 4000900], [500900, 4000900], [500100, 4000100], [500100, 4000900]]
    geojson = tmp_path / "aoi.geojson"
    geojson.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32631"}},
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": {"type": "Polygon", "coordinates": [ring]},
                    }
                ],
            }
        )
    )
    gpkg = tmp_path / "aoi.gpkg"
    driver = ogr.GetDriverByName("GPKG")
    dataset = driver.CreateDataSource(str(gpkg))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32631)
    layer = dataset.CreateLayer("fields", srs, ogr.wkbPolygon)
    feature = ogr.Feature(layer.GetLayerDefn())
    feature.SetGeometry(
        ogr.CreateGeometryFromJson(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    )
    layer.CreateFeature(feature)
    feature = layer = dataset = None
    masks = []
    for aoi in (
        AreaOfInterest(polygon_file=str(geojson)),
        AreaOfInterest(polygon_file=str(gpkg), layer="fields"),
    ):
        area = build_area_mask(aoi, grid)
        assert area.window == Window(10, 10, 80, 80)
        masks.append(area.mask(grid, area.window))
    np.testing.assert_array_equal(masks[0], masks[1])
    mask = masks[0]
    assert mask[5, 5] and not mask[75, 75]  # upper-left half of the triangle
    assert abs(int(mask.sum()) - 80 * 80 // 2) < 100
    with pytest.raises(AreaOfInterestError, match="no layer 'roads'"):
        build_area_mask(AreaOfInterest(polygon_file=str(gpkg), layer="roads"), grid)


def test_area_of_interest_errors(tmp_path):
    grid = Grid(100, 100, from_origin(500000, 4001000, 10, 10), CRS.from_string(UTM))
    with pytest.raises(AreaOfInterestError, match="outside the inputs"):
        build_area_mask(AreaOfInterest(bounds=(0, 0, 10, 10)), grid)
    with pytest.raises(AreaOfInterestError, match="Unknown CRS"):
        build_area_mask(AreaOfInterest(bounds=(0, 0, 10, 10), crs="EPSG:999999"), grid)
    with pytest.raises(AreaOfInterestError, match="does not exist"):
        build_area_mask(AreaOfInterest(polygon_file=str(tmp_path / "x.gpkg")), grid)
    junk = tmp_path / "junk.geojson"
    junk.write_text("{ not json")
    with pytest.raises(AreaOfInterestError, match="cannot read"):
        build_area_mask(AreaOfInterest(polygon_file=str(junk)), grid)
    points = tmp_path / "points.geojson"
    points.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": {"type": "Point", "coordinates": [1, 48]},
                    }
                ],
            }
        )
    )
    with pytest.raises(AreaOfInterestError, match="no polygon"):
        build_area_mask(AreaOfInterest(polygon_file=str(points)), grid)
    with pytest.raises(AreaOfInterestError, match="georeferenced"):
        build_area_mask(AreaOfInterest(bounds=(0, 0, 1, 1)), Grid(4, 4, Affine.identity(), None))


@pytest.mark.realdata
def test_oscd_bands_at_10_20_60_m_align_on_the_b02_grid():
    folder = (
        REALDATA
        / "oscd"
        / "Onera Satellite Change Detection dataset - Images"
        / "rennes"
        / "imgs_1"
    )
    if not folder.is_dir():
        pytest.skip(f"OSCD sample not found in {folder}")
    files = sorted(str(p) for p in folder.glob("*_B*.tif"))
    assert len(files) == 13
    infos = [inspect_raster(p) for p in files]
    reference = choose_reference(infos)
    assert reference.path.endswith("_B02.tif")
    grid = reference.grid
    assert (grid.width, grid.height) == (563, 339) and grid.crs.to_epsg() == 4326
    stack = open_aligned([RasterSource(p) for p in files], [(1,)] * 13, grid)
    try:
        warped = [s.warped for s in stack.sources]
        assert sum(not w for w in warped) == 4  # B02, B03, B04, B08 are on the grid
        data, valid = stack.read(Window(200, 100, 64, 64))
        assert data.shape == (13, 64, 64) and valid.all()
        assert (data > 0).all()
    finally:
        stack.close()


# --- same-CRS resampling computed in numpy (the fast path for S2 20/60 m bands) -------------


def warped_reference(path, grid, resampling, nodata):
    """What GDAL's warper gives on the grid: values and validity of every band."""
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    options = {
        "crs": grid.crs,
        "transform": grid.transform,
        "width": grid.width,
        "height": grid.height,
        "resampling": Resampling[resampling],
        "dtype": "float32",
    }
    if nodata is None:
        options["add_alpha"] = True
    else:
        options.update(src_nodata=nodata, nodata=nodata)
    with rasterio.open(path) as src, WarpedVRT(src, **options) as vrt:
        data = vrt.read()
    if nodata is None:
        return data[:-1], data[-1] > 0
    return data, np.all(data != nodata, axis=0)


@pytest.mark.parametrize("resampling", ["bilinear", "nearest"])
@pytest.mark.parametrize(
    ("pixel", "shift"), [(20, (0, 0)), (60, (3.7, -2.1)), (15.5, (-25, 13)), (10, (4.2, 1.3))]
)
@pytest.mark.parametrize("nodata", [-9999.0, None])
def test_coarser_same_crs_source_matches_gdal_warper(tmp_path, resampling, pixel, shift, nodata):
    """Values and nodata masks as GDAL's warper gives them, inside and at the edges."""
    rng = np.random.default_rng(int(pixel * 10))
    size = int(1200 // pixel)
    data = rng.uniform(100, 5000, (size, size)).astype(np.float32)
    if nodata is not None:
        data[rng.random((size, size)) < 0.05] = nodata
        data[5:9, 5:9] = nodata
    path = write(
        tmp_path / "coarse.tif", data, from_origin(500000, 4001200, pixel, pixel), nodata=nodata
    )
    # A 10 m grid shifted off the source's pixel edges and overhanging it on two sides.
    grid = Grid(
        130, 125, from_origin(500000 + shift[0], 4001200 + shift[1], 10, 10), CRS.from_string(UTM)
    )
    expected, expected_valid = warped_reference(path, grid, resampling, nodata)
    source = AlignedSource(RasterSource(path), (1,), grid, resampling)
    try:
        assert source.warped
        for window in (Window(0, 0, 130, 125), Window(7, 11, 64, 50), Window(100, 90, 30, 35)):
            rows, cols = window.toslices()
            out, valid = source.read(window)
            reference_valid = expected_valid[rows, cols]
            # GDAL and numpy may disagree on a centre lying exactly on the source's edge.
            centre_x = (np.arange(window.col_off, window.col_off + window.width) + 0.5) * 10
            centre_y = (np.arange(window.row_off, window.row_off + window.height) + 0.5) * 10
            edge_x = np.isclose(centre_x + shift[0], 0) | np.isclose(
                centre_x + shift[0], size * pixel
            )
            edge_y = np.isclose(centre_y - shift[1], 0) | np.isclose(
                centre_y - shift[1], size * pixel
            )
            clear = ~edge_y[:, None] & ~edge_x[None, :]
            assert (valid != reference_valid)[clear].sum() == 0
            both = valid & reference_valid
            np.testing.assert_allclose(out[0][both], expected[0][rows, cols][both], atol=0.01)
    finally:
        source.close()


def test_band_specific_nodata_does_not_leak_into_other_values(tmp_path):
    """Each band's own nodata drops out of its own bilinear weights (no -9999 in averages)."""
    data = np.tile(np.arange(30, dtype=np.float32) * 10 + 1000, (2, 30, 1))
    data[0, 5:9, 5:9] = -9999.0
    path = write(tmp_path / "two.tif", data, from_origin(0, 600, 20, 20), nodata=-9999.0)
    fine = write(tmp_path / "f.tif", np.ones((60, 60), np.uint8), from_origin(0, 600, 10, 10))
    source = AlignedSource(RasterSource(path), (1, 2), grid_of(fine))
    try:
        out, valid = source.read(Window(0, 0, 60, 60))
        assert not valid[10:18, 10:18].any() and valid[:8].all() and valid[20:].all()
        assert out[:, valid].min() >= 1000.0  # never mixed with the nodata value
        # The untouched band is the plain ramp at 10 m pixel centres (x - 10 on the 20 m grid).
        expected = (np.arange(60) * 10 + 5 - 10) / 20 * 10 + 1000
        np.testing.assert_allclose(out[1, 30, 2:58], expected[2:58], atol=1e-3)
    finally:
        source.close()


def test_has_valid_pixels_answers_from_a_probe_without_decoding_the_file(tmp_path, monkeypatch):
    data = np.full((1000, 1000), 7, np.uint16)
    path = write(tmp_path / "big.tif", data, from_origin(0, 10000, 10, 10), nodata=0)
    source = AlignedSource(RasterSource(path), (1,), grid_of(path))
    shapes = []
    native_valid = source._native_valid

    def spy(window, shape):
        shapes.append(shape)
        return native_valid(window, shape)

    monkeypatch.setattr(source, "_native_valid", spy)
    try:
        assert source.has_valid_pixels(Window(0, 0, 1000, 1000))
        assert shapes == [(32, 32)]  # one full-resolution probe, no decimated read of it all
    finally:
        source.close()


def test_block_cache_estimate_grows_with_the_width_not_the_height(tmp_path):
    def estimate(width, height):
        path = tmp_path / f"s_{width}_{height}.tif"
        profile = {"driver": "GTiff", "width": width, "height": height, "count": 1}
        profile.update(dtype="uint16", crs=UTM, transform=from_origin(0, 100000, 20, 20))
        profile.update(tiled=True, blockxsize=256, blockysize=256)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(np.ones((1, height, width), np.uint16))
        fine = Grid(width * 2, height * 2, from_origin(0, 100000, 10, 10), CRS.from_string(UTM))
        source = AlignedSource(RasterSource(str(path)), (1,), fine)
        try:
            return source.block_cache_bytes(512)
        finally:
            source.close()

    # 512 rows of the 10 m grid are 256 source rows: one block row, plus one for misalignment.
    assert estimate(1000, 1000) == 512 * 1000 * 2
    assert estimate(1000, 4000) == estimate(1000, 1000)
    assert estimate(2000, 1000) == 2 * estimate(1000, 1000)


def test_bounded_block_cache_lowers_then_restores_gdal_cache():
    from osgeo import gdal

    from landfuse.core.raster import bounded_block_cache

    before = gdal.GetCacheMax()
    with bounded_block_cache(before // 4) as first:
        assert first == gdal.GetCacheMax() == before // 4
        with bounded_block_cache(before) as second:  # never raised above the setting in force
            assert second == gdal.GetCacheMax() == before // 4
        assert gdal.GetCacheMax() == before // 4
    assert gdal.GetCacheMax() == before
