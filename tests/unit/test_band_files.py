"""Sentinel-2 delivered as single-band files: identified by their file names, in any order.

The OSCD Rennes pair as delivered (13 files per date at 10, 20 and 60 m, no band
descriptions), listed as a shell lists them (B8A last), maps exactly as a stack built in the
model's band order does, and the report says how the bands were matched (issue 13, part 1).
"""

import pytest
import rasterio
from osgeo import gdal

from landfuse.core import engine
from landfuse.core.band_mapping import MATCHED_BY_FILE_NAME
from landfuse.core.requests import ChangeRequest

pytestmark = [pytest.mark.unit, pytest.mark.realdata]

RENNES = "oscd/Onera Satellite Change Detection dataset - Images/rennes"
ORDER = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
         "B12")  # fmt: skip


def _stack(files, path):
    """What a careful user builds by hand: one band per file, in the model's order, on the 10 m
    grid with bilinear resampling."""
    by_band = {f.stem.rsplit("_", 1)[-1]: str(f) for f in files}
    options = gdal.BuildVRTOptions(separate=True, resolution="highest", resampleAlg="bilinear")
    gdal.BuildVRT(str(path), [by_band[b] for b in ORDER], options=options).FlushCache()
    return str(path)


def test_rennes_band_files_map_as_a_correct_stack(realdata, repo_root, tmp_path):
    weights = repo_root / "demo" / "weights" / "change_demo.pt"
    dates = [sorted((realdata / RENNES / f"imgs_{i}").glob("*.tif")) for i in (1, 2)]
    assert [f.stem[-3:] for f in dates[0]][-1] == "B8A"  # the shell's order puts B8A last
    common = {"weights": str(weights), "tile": 256, "precision": "fp32", "batch": 2}
    as_delivered = engine.run(
        ChangeRequest(
            before=tuple(map(str, dates[0])),
            after=tuple(map(str, dates[1])),
            output_dir=str(tmp_path / "files"),
            model="",
            **common,
        )
    )
    stacked = engine.run(
        ChangeRequest(
            before=_stack(dates[0], tmp_path / "before.vrt"),
            after=_stack(dates[1], tmp_path / "after.vrt"),
            output_dir=str(tmp_path / "stack"),
            model="",
            **common,
        )
    )
    inputs = as_delivered.report["inputs"]
    assert {entry["band_matching"] for entry in inputs} == {MATCHED_BY_FILE_NAME}
    assert as_delivered.report["grid"]["width"] == 563
    assert as_delivered.report["grid"]["height"] == 339
    assert not [w for w in as_delivered.report["warnings"] if w["code"] == "bands_by_position"]
    with (
        rasterio.open(as_delivered.outputs["change"]) as a,
        rasterio.open(stacked.outputs["change"]) as b,
    ):
        files, stack = a.read(1), b.read(1)
    # The engine warps the 20 and 60 m files itself; GDAL's VRT bilinear differs in the last
    # bits, which moved 5 of 190,857 pixels across the threshold when this was written.
    assert files.shape == stack.shape
    assert (files != stack).mean() <= 1e-4
    assert abs((files == 1).mean() - (stack == 1).mean()) <= 1e-4
