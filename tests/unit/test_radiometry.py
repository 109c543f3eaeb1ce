"""Sentinel-2 processing baseline 04.00's +1000 offset: read from the product metadata, else
detected from the dark B10 band, subtracted before normalisation and said (issue 13, part 2)."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from stubmodels import PixelNet, registered

from landfuse.core import engine
from landfuse.core.radiometry import detect_offset, find_offset, metadata_offset
from landfuse.core.requests import LandCoverRequest, ModalityInput
from landfuse.models.sensors import get_sensor
from landfuse.models.specs import NormalisationSpec

pytestmark = pytest.mark.unit

S2 = get_sensor("sentinel2_l1c")
MTD = """<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-1C_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-1C.xsd">
  <n1:General_Info><Product_Info><PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>
  </Product_Info></n1:General_Info>
  <n1:Product_Image_Characteristics>{offsets}</n1:Product_Image_Characteristics>
</n1:Level-1C_User_Product>
"""


def _safe(root: Path, baseline: str, offsets: bool) -> Path:
    """A product laid out as ESA delivers it, with one band file deep in its granule."""
    product = root / "S2B_MSIL1C_20230101T103329_N0509_R108_T32TQM_20230101T123456.SAFE"
    band = product / "GRANULE" / "L1C_T32TQM_A030000_20230101T103329" / "IMG_DATA"
    band.mkdir(parents=True)
    text = "".join(
        f'<Radiometric_Offset_List><RADIO_ADD_OFFSET band_id="{i}">-1000</RADIO_ADD_OFFSET>'
        "</Radiometric_Offset_List>"
        for i in range(13)
    )
    (product / "MTD_MSIL1C.xml").write_text(
        MTD.format(baseline=baseline, offsets=text if offsets else "")
    )
    path = band / "T32TQM_20230101T103329_B10.jp2"
    path.write_bytes(b"")
    return path


def test_the_offset_comes_from_the_product_metadata(tmp_path):
    new = _safe(tmp_path / "new", "05.09", offsets=True)
    found = metadata_offset(str(new), S2.offset_metadata)
    assert (found.value, found.source) == (1000.0, "metadata")
    assert "processing baseline 05.09" in found.evidence
    old = _safe(tmp_path / "old", "03.01", offsets=False)
    assert metadata_offset(str(old), S2.offset_metadata).value == 0.0
    # Metadata stating no offset wins over a bright B10 (no detection then).
    bright = [np.full(100, 1500.0)] * 13
    assert (
        find_offset([str(old)], S2.offset_metadata, S2.offset_probe, S2.band_names, bright) is None
    )
    assert metadata_offset(str(tmp_path / "elsewhere.tif"), S2.offset_metadata) is None


def test_without_metadata_the_dark_b10_tells_offset_data_apart():
    samples = [np.full(500, 2000.0)] * 13
    dark = list(samples)
    dark[S2.band_names.index("B10")] = np.linspace(5, 60, 500)
    assert detect_offset(S2.band_names, dark, S2.offset_probe) is None
    bright = list(samples)
    bright[S2.band_names.index("B10")] = np.linspace(1005, 1060, 500)
    found = detect_offset(S2.band_names, bright, S2.offset_probe)
    assert (found.value, found.source) == (1000.0, "detected")
    assert "B10 1st percentile 1006" in found.evidence
    assert detect_offset(("B02", "B03"), [np.ones(3)] * 2, S2.offset_probe) is None


@pytest.mark.realdata
def test_the_terramind_tiles_with_the_offset_are_found_and_harmonised(
    realdata, tmp_path, monkeypatch
):
    """Two of the four TerraMind L1C tiles carry the offset (PROVENANCE.md): they, and only
    they, are harmonised, the run says so, and the report records it."""
    from landfuse.models.registry import get_model_spec

    spec = get_model_spec("amm_fusenet_s2_s1_hunan")
    raw = replace(spec.modalities[0], normalisation=NormalisationSpec("scale", factor=1.0))
    one = replace(spec, name="stub_s2", architecture="stub_landcover", modalities=(raw,))
    seen = []

    class Spy(PixelNet):
        """Records the darkest value of B10 the network is given (the values unscaled)."""

        def predict(self, *inputs):
            seen.append(float(inputs[0][:, S2.band_names.index("B10")].min()))
            return super().predict(*inputs)

    net = Spy([13], len(spec.classes))
    monkeypatch.setattr(
        engine.plan, "load_network", lambda s, w, d, warn=None: (net, s, "0" * 64, {})
    )
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"stub")
    found = {}
    with registered(one):
        for tile in sorted((realdata / "terramind_examples" / "S2L1C").glob("*.tif")):
            result = engine.run(
                LandCoverRequest(
                    inputs=(ModalityInput("s2", str(tile)),),
                    model="stub_s2",
                    weights=str(weights),
                    output_dir=str(tmp_path / tile.stem),
                    tile=256,
                    precision="fp32",
                )
            )
            entry = result.report["inputs"][0]
            codes = [w["code"] for w in result.report["warnings"]]
            found[tile.stem] = (entry["harmonised"] or {}).get("value")
            assert ("radiometric_offset" in codes) is (found[tile.stem] is not None)
            assert min(seen) < 200  # harmonised: B10 is dark again where it had the offset
            seen.clear()
    assert found == {
        "282D_485L_3_3": 1000.0,
        "38D_378R_2_3": None,
        "609U_541L_3_0": 1000.0,
        "637U_59R_1_3": None,
    }


@pytest.mark.realdata
def test_training_chips_are_harmonised_as_the_engine_maps(realdata):
    """A model learns from the values it will be given when mapping: the chips of an offset
    tile are harmonised too, and the dataset says so."""
    from landfuse.core.datasets import RasterChipDataset, RasterScene
    from landfuse.core.tasks import get_task
    from landfuse.models.registry import get_model_spec

    spec = get_model_spec("amm_fusenet_s2_s1_hunan")
    root = realdata / "terramind_examples"
    b10 = S2.band_names.index("B10")
    lows = {}
    for stem in ("282D_485L_3_3", "637U_59R_1_3"):
        scene = RasterScene(
            (str(root / "S2L1C" / f"{stem}.tif"), str(root / "S1RTC" / f"{stem}.tif")),
            str(root / "LULC" / f"{stem}.tif"),
        )
        chips = RasterChipDataset(
            [scene], chip_size=128, modalities=get_task("landcover").input_modalities(spec)
        )
        lows[stem] = float(np.percentile(chips.read(0).inputs[0][b10], 1))
        offsets = [w for w in chips.warnings if w.code == "radiometric_offset"]
        assert bool(offsets) is (stem == "282D_485L_3_3")
    assert lows["282D_485L_3_3"] < 200 and lows["637U_59R_1_3"] < 200


def test_linear_power_is_converted_to_the_db_the_model_takes(tmp_path, monkeypatch):
    """Sentinel-1 in linear power (all positive, medians below 1) is turned into dB before
    normalisation, said once, and recorded; dB input is left as it is."""
    from faultcases import write_raster

    from landfuse.models.registry import get_model_spec

    spec = get_model_spec("amm_fusenet_s2_s1_hunan")
    bounds = NormalisationSpec("fixed_bounds", lower=(-50.0, -50.0), upper=(10.0, 10.0))
    raw = replace(spec.modalities[1], normalisation=bounds)
    one = replace(spec, name="stub_s1", architecture="stub_landcover", modalities=(raw,))
    seen = []

    class Spy(PixelNet):
        def predict(self, *inputs):
            seen.append(float(inputs[0].median()))
            return super().predict(*inputs)

    net = Spy([2], len(spec.classes))
    monkeypatch.setattr(
        engine.plan, "load_network", lambda s, w, d, warn=None: (net, s, "0" * 64, {})
    )
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"stub")
    db = np.random.default_rng(4).normal(-13, 2.5, (2, 64, 64)).astype("float32")
    runs = {}
    with registered(one):
        for name, data in (("linear", 10 ** (db / 10)), ("db", db)):
            path = write_raster(tmp_path / f"{name}.tif", data.astype("float32"), 10,
                                descriptions=("VV", "VH"))  # fmt: skip
            result = engine.run(
                LandCoverRequest(
                    inputs=(ModalityInput("s1", str(path)),),
                    model="stub_s1",
                    weights=str(weights),
                    output_dir=str(tmp_path / name),
                    tile=64,
                    precision="fp32",
                )
            )
            runs[name] = (result.report, seen[-1])
    linear, db_run = runs["linear"], runs["db"]
    assert [w["code"] for w in linear[0]["warnings"]] == ["linear_to_db"]
    assert linear[0]["inputs"][0]["harmonised"]["kind"] == "to_db"
    assert db_run[0]["warnings"] == [] and db_run[0]["inputs"][0]["harmonised"] is None
    assert linear[1] == pytest.approx(db_run[1], abs=1e-3)  # the network saw the same dB
