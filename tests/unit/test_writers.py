"""Streaming GeoTIFF, COG with overviews, class names, QML styles, temporaries and disk checks."""

import errno
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import namedtuple

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.transform import from_origin

from landfuse.core import writers
from landfuse.core.errors import DiskSpaceError, OutputError
from landfuse.core.protection import ProtectedFiles
from landfuse.core.raster import Grid
from landfuse.core.writers import (
    TEMP_PREFIX,
    AreaTally,
    OutputSet,
    ProductSpec,
    StreamingGeoTiff,
    change_style_qml,
    check_free_space,
    class_style_qml,
    gradient_style_qml,
    remove_stale_temporaries,
)

pytestmark = pytest.mark.unit

Cls = namedtuple("Cls", "value name color")
CLASSES = (
    Cls(0, "cropland", (197, 90, 17)),
    Cls(1, "forest", (51, 130, 88)),
    Cls(2, "water", (91, 155, 215)),
)
GRID = Grid(300, 200, from_origin(500000, 4000000, 10, 10), CRS.from_epsg(32631))


def class_product():
    return ProductSpec(
        "classes", "classes", "uint8", 255, "land cover", "classes", "NEAREST", classes=CLASSES
    )


def confidence_product():
    return ProductSpec(
        "confidence",
        "confidence",
        "uint8",
        255,
        "confidence",
        "gradient",
        "AVERAGE",
        value_range=(0, 100),
    )


def probability_product():
    return ProductSpec(
        "probability",
        "probability",
        "float32",
        -1.0,
        "change probability",
        "gradient",
        "AVERAGE",
        value_range=(0, 1),
    )


def write_in_chunks(writer, data, chunks):
    row = 0
    for size in chunks:
        writer.write_rows(row, data[row : row + size])
        row += size
        # Never more than the block row being assembled.
        assert writer.pending_pixels <= writer._block * GRID.width


def test_streaming_writer_in_irregular_bands_of_rows(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 3, (200, 300)).astype(np.uint8)
    writer = StreamingGeoTiff(tmp_path / "a.tif", GRID, class_product(), block=64)
    write_in_chunks(writer, data, [37, 64, 1, 50, 48])
    writer.close()
    with rasterio.open(tmp_path / "a.tif") as src:
        np.testing.assert_array_equal(src.read(1), data)
        assert src.profile["tiled"] and src.profile["compress"] == "deflate"
        assert src.nodata == 255 and src.crs == GRID.crs
        assert src.colormap(1)[2] == (91, 155, 215, 255)
        assert json.loads(src.tags(1)["LANDFUSE_CLASSES"])["1"] == "forest"


def test_streaming_writer_refuses_out_of_order_and_incomplete(tmp_path):
    writer = StreamingGeoTiff(tmp_path / "b.tif", GRID, class_product())
    writer.write_rows(0, np.zeros((10, 300), np.uint8))
    with pytest.raises(ValueError, match="expected row 10"):
        writer.write_rows(20, np.zeros((10, 300), np.uint8))
    with pytest.raises(ValueError, match="rows"):
        writer.write_rows(10, np.zeros((10, 299), np.uint8))
    with pytest.raises(ValueError, match="Only 10 of 200"):
        writer.close()


def test_streaming_writer_in_stripes_of_windows(tmp_path, monkeypatch):
    """Vertical stripes, each top to bottom in bands of rows (the engine's order for wide
    scenes): the file is exact, every block is written once, memory stays at the blocks along
    the windows' edges."""
    rng = np.random.default_rng(1)
    data = rng.random((200, 300)).astype(np.float32)
    writer = StreamingGeoTiff(tmp_path / "s.tif", GRID, probability_product(), block=64)
    blocks_written = []
    real_write = writer._dst.write

    def counting(array, band, window):
        blocks_written.append((window.row_off, window.col_off, window.height, window.width))
        return real_write(array, band, window=window)

    monkeypatch.setattr(writer._dst, "write", counting, raising=False)
    edges = [0, 70, 150, 230, 300]  # not on block boundaries
    peak = 0
    for left, right in zip(edges, edges[1:]):
        for top, bottom in [(0, 37), (37, 101), (101, 150), (150, 200)]:
            writer.write_window(top, left, data[top:bottom, left:right])
            peak = max(peak, writer.pending_pixels)
    writer.close()
    with rasterio.open(tmp_path / "s.tif") as src:
        np.testing.assert_array_equal(src.read(1), data)
    # Each pixel once: the windows written to GDAL partition the raster along block edges.
    covered = np.zeros((200, 300), np.int32)
    for row, col, h, w in blocks_written:
        assert row % 64 == 0 and col % 64 == 0
        covered[row : row + h, col : col + w] += 1
    assert (covered == 1).all()
    # Held: at most a band of blocks across a stripe plus the column of blocks it shares.
    assert peak <= 64 * (80 + 64) + 64 * 200


def test_streaming_writer_refuses_a_pixel_written_twice_or_outside(tmp_path):
    writer = StreamingGeoTiff(tmp_path / "t.tif", GRID, class_product(), block=64)
    writer.write_window(0, 0, np.zeros((64, 64), np.uint8))  # one whole block
    with pytest.raises(ValueError, match="already written"):
        writer.write_window(10, 10, np.zeros((5, 5), np.uint8))
    writer.write_window(64, 0, np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="already written"):
        writer.write_window(64, 0, np.zeros((60, 64), np.uint8))  # overlaps the 10 x 10
    with pytest.raises(ValueError, match="leaves"):
        writer.write_window(190, 290, np.zeros((20, 20), np.uint8))
    with pytest.raises(ValueError, match="Only"):
        writer.close()


def test_a_full_disk_while_writing_is_a_disk_space_error(tmp_path, monkeypatch):
    writer = StreamingGeoTiff(tmp_path / "c.tif", GRID, class_product(), block=16)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer._dst, "write", full, raising=False)
    with pytest.raises(DiskSpaceError, match="disk is full"):
        writer.write_rows(0, np.zeros((16, 300), np.uint8))
    writer.abort()


def run_output_set(folder, products, cog=True, data=None):
    with OutputSet(folder, "landcover", products, cog=cog) as outputs:
        outputs.prepare()
        opened = outputs.open_writers(GRID)
        for writer in opened.values():
            block = data if data is not None else np.zeros((200, 300), np.uint8)
            write_in_chunks(writer, block, [100, 100])
        result = outputs.commit({"model": "test"})
        assert outputs.temp is not None
    return result


def test_commit_writes_cog_with_overviews_class_names_styles_and_report(tmp_path):
    from osgeo import gdal

    rng = np.random.default_rng(1)
    data = rng.integers(0, 3, (200, 300)).astype(np.uint8)
    data[:10] = 255
    result = run_output_set(tmp_path, [class_product(), confidence_product()], data=data)
    names = sorted(os.listdir(tmp_path))
    assert names == [
        "landcover_classes.qml",
        "landcover_classes.tif",
        "landcover_classes.tif.aux.xml",
        "landcover_confidence.qml",
        "landcover_confidence.tif",
        "landcover_report.json",
    ]
    assert result["classes"] == str(tmp_path / "landcover_classes.tif")
    with rasterio.open(result["classes"]) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.overviews(1)  # overviews present
        assert src.nodata == 255
        np.testing.assert_array_equal(src.read(1), data)
        assert src.colormap(1)[0][:3] == (197, 90, 17)
    info = gdal.Info(result["classes"])  # GDAL reads category names from the .aux.xml
    assert "Categories:" in info and "0: cropland" in info and "2: water" in info
    report = json.loads((tmp_path / "landcover_report.json").read_text())
    assert report["model"] == "test" and report["outputs"]["classes"] == result["classes"]
    style = ET.fromstring((tmp_path / "landcover_classes.qml").read_text().split("\n", 1)[1])
    labels = [e.get("label") for e in style.iter("paletteEntry")]
    assert labels == ["cropland", "forest", "water"]


def test_plain_geotiff_when_cog_is_off(tmp_path):
    result = run_output_set(tmp_path, [class_product()], cog=False)
    with rasterio.open(result["classes"]) as src:
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") != "COG"


def test_failure_inside_the_output_set_leaves_nothing(tmp_path):
    outputs = OutputSet(tmp_path, "landcover", [class_product()])
    with pytest.raises(RuntimeError, match="boom"), outputs:
        outputs.prepare()
        writer = outputs.open_writers(GRID)["classes"]
        writer.write_rows(0, np.zeros((100, 300), np.uint8))
        raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_prepare_refuses_bad_folders_existing_outputs_and_inputs(tmp_path):
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        OutputSet(afile, "x", [class_product()]).prepare()
    with pytest.raises(OutputError, match="cannot be created"):
        OutputSet(afile / "sub", "x", [class_product()]).prepare()
    (tmp_path / "landcover_classes.tif").write_text("old")
    with pytest.raises(OutputError, match=r"already exists.*--overwrite"):
        OutputSet(tmp_path, "landcover", [class_product()]).prepare()
    OutputSet(tmp_path, "landcover", [class_product()], overwrite=True).prepare()
    protected = ProtectedFiles().add_raster(str(tmp_path / "landcover_classes.tif"), "the input")
    with pytest.raises(OutputError, match="would replace the input"):
        OutputSet(
            tmp_path, "landcover", [class_product()], overwrite=True, protected=protected
        ).prepare()


def test_free_space_check(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 5000, 5000))
    with pytest.raises(DiskSpaceError, match=r"only 0\.0 MB are free"):
        check_free_space(tmp_path, 10**6)
    check_free_space(tmp_path, 4000)
    outputs = OutputSet(tmp_path, "x", [class_product(), confidence_product()])
    assert outputs.estimated_bytes(GRID) >= 300 * 200 * 2


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    stale = tmp_path / f"{TEMP_PREFIX}{dead_pid}-abcd1234"
    alive = tmp_path / f"{TEMP_PREFIX}{os.getppid()}-abcd1234"
    mine = tmp_path / f"{TEMP_PREFIX}{os.getpid()}-abcd1234"
    for folder in (stale, alive, mine):
        folder.mkdir()
        (folder / "stream.tif").write_text("x")
    assert remove_stale_temporaries(tmp_path) == 1
    assert not stale.exists() and alive.exists() and mine.exists()


def test_area_tally_projected_and_pixel_grid():
    tally = AreaTally([0, 1, 2], GRID)
    rows = np.array([[0, 0, 1, 255], [2, 2, 2, 1]], dtype=np.uint8)
    tally.add(0, rows)
    assert tally.pixels.tolist() == [2, 2, 3]
    assert tally.hectares() == pytest.approx([0.02, 0.02, 0.03])  # 100 m² pixels
    summary = tally.summary(["a", "b", "c"])
    assert summary[2] == {
        "value": 2,
        "name": "c",
        "pixels": 3,
        "hectares": 0.03,
        "percent": pytest.approx(42.8571, abs=1e-3),
    }
    plain = AreaTally([0, 1], Grid(4, 2, Affine.identity(), None))
    plain.add(0, np.array([[0, 1, 1, 1]], np.uint8))
    assert plain.hectares() is None and plain.pixels.tolist() == [1, 3]


def test_qml_styles_are_valid_xml_with_the_expected_renderers():
    def parse(text):
        assert text.startswith("<!DOCTYPE qgis")
        return ET.fromstring(text.split("\n", 1)[1])

    classes = parse(class_style_qml(CLASSES))
    assert classes.find(".//rasterrenderer").get("type") == "paletted"
    change = parse(
        change_style_qml((Cls(0, "no change", (0, 0, 0)), Cls(1, "change", (255, 255, 255))))
    )
    entries = {e.get("value"): e for e in change.iter("paletteEntry")}
    assert entries["0"].get("alpha") == "0" and entries["1"].get("alpha") == "255"
    assert entries["1"].get("label") == "change"
    ramp = parse(gradient_style_qml(0, 1, writers.PROBABILITY_STOPS))
    assert ramp.find(".//rasterrenderer").get("type") == "singlebandpseudocolor"
    items = list(ramp.iter("item"))
    assert [i.get("value") for i in items] == ["0", "0.5", "1"]
