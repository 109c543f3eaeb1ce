"""A Sentinel-2 product folder (.SAFE) or a folder of band files is one input (issue 13, part 1).

Each band file is found by its name (the finest resolution where a band comes several times;
true colour, aerosol, water vapour and scene classes left out), read at its own resolution and
warped onto the 10 m grid; nothing is written beside the inputs.
"""

from dataclasses import replace

import numpy as np
import pytest
from faultcases import write_raster
from stubmodels import PixelNet, registered, stub_spec

from landfuse.core import engine
from landfuse.core.band_files import expand_folders
from landfuse.core.band_mapping import MATCHED_BY_FILE_NAME
from landfuse.core.errors import InputFileError, RequestError
from landfuse.core.requests import LandCoverRequest, ModalityInput, RasterSource
from landfuse.models.sensors import SENTINEL2_L2A, get_sensor
from landfuse.models.specs import NormalisationSpec

pytestmark = pytest.mark.unit

L2A = get_sensor("sentinel2_l2a")
NATIVE = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20, "B08": 10,
          "B8A": 20, "B09": 60, "B11": 20, "B12": 20}  # fmt: skip


def _l2a_product(root):
    """An L2A product as ESA lays it out: every band at its native resolution, several again at
    coarser ones, and the non-band rasters beside them."""
    granule = root / "S2A_MSIL2A_20230601T103031_N0509_R108_T32TQM_20230601T170000.SAFE"
    data = granule / "GRANULE" / "L2A_T32TQM_A041000_20230601T103031" / "IMG_DATA"
    rng = np.random.default_rng(1)
    size = 960  # metres
    for res in (10, 20, 60):
        folder = data / f"R{res}m"
        folder.mkdir(parents=True)
        bands = [b for b, native in NATIVE.items() if native <= res]
        for band in [*bands, "TCI", "AOT", "WVP", "SCL"]:
            n = size // res
            value = rng.integers(200, 3000, (1, n, n)).astype("uint16") + NATIVE.get(band, 0)
            write_raster(folder / f"T32TQM_20230601T103031_{band}_{res}m.tif", value, res)
    (granule / "MTD_MSIL2A.xml").write_text("<n1:Level-2A_User_Product/>")
    return granule


def test_the_band_files_of_a_product_are_found_at_their_native_resolution(tmp_path):
    product = _l2a_product(tmp_path)
    files = expand_folders([str(product)], L2A)
    found = {f.rsplit("_", 2)[-2]: int(f.rsplit("_", 1)[-1][:-5]) for f in files}
    assert found == NATIVE  # 12 bands, each at its finest resolution; no TCI, AOT, WVP, SCL
    with pytest.raises(InputFileError, match="no band files whose names say their band"):
        (tmp_path / "empty").mkdir()
        expand_folders([str(tmp_path / "empty")], L2A)


def test_a_product_folder_maps_as_one_input(tmp_path, monkeypatch):
    product = _l2a_product(tmp_path)
    modality = SENTINEL2_L2A.modality("s2", NormalisationSpec("scale", factor=1 / 10000))
    spec = stub_spec([("s2", 12, modality.normalisation)], name="stub_l2a")
    spec = replace(spec, modalities=(modality,))
    net = PixelNet([12], 3)
    monkeypatch.setattr(
        engine.plan, "load_network", lambda s, w, d, warn=None: (net, s, "0" * 64, {})
    )
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"stub")
    before = sorted(p.name for p in product.rglob("*"))
    with registered(spec):
        request = LandCoverRequest(
            inputs=(ModalityInput("s2", str(product)),),
            model="stub_l2a",
            weights=str(weights),
            output_dir=str(tmp_path / "out"),
            tile=32,
            precision="fp32",
        )
        result = engine.run(request)
        with pytest.raises(RequestError, match="is a folder"):
            engine.validate(
                replace(request, inputs=(ModalityInput("s2", RasterSource(str(product), (1,))),))
            )
    inputs = result.report["inputs"]
    assert len(inputs) == 12 and {e["band_matching"] for e in inputs} == {MATCHED_BY_FILE_NAME}
    assert result.report["grid"]["width"] == 96  # the 10 m grid of the finest files
    assert {tuple(e["pixel_size"]) for e in inputs} == {(10.0, 10.0), (20.0, 20.0), (60.0, 60.0)}
    assert sorted(p.name for p in product.rglob("*")) == before  # nothing written beside them


@pytest.mark.realdata
def test_the_rennes_folders_as_inputs(realdata, repo_root, tmp_path):
    """``--before imgs_1 --after imgs_2``: the same map as the 13 files listed."""
    from landfuse.core.requests import ChangeRequest

    root = realdata / "oscd/Onera Satellite Change Detection dataset - Images/rennes"
    common = {
        "weights": str(repo_root / "demo" / "weights" / "change_demo.pt"),
        "model": "",
        "tile": 256,
        "precision": "fp32",
        "batch": 2,
    }
    folders = engine.run(
        ChangeRequest(
            before=str(root / "imgs_1"),
            after=str(root / "imgs_2"),
            output_dir=str(tmp_path / "a"),
            **common,
        )
    )
    listed = engine.run(
        ChangeRequest(
            before=tuple(map(str, sorted((root / "imgs_1").glob("*.tif")))),
            after=tuple(map(str, sorted((root / "imgs_2").glob("*.tif")))),
            output_dir=str(tmp_path / "b"),
            **common,
        )
    )
    import rasterio

    with (
        rasterio.open(folders.outputs["change"]) as a,
        rasterio.open(listed.outputs["change"]) as b,
    ):
        assert np.array_equal(a.read(1), b.read(1))
