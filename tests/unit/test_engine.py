"""The engine end to end on small generated scenes, with stub networks (and real ones, slow)."""

import contextlib
import errno
import hashlib
import json
import math
import os
import tracemalloc
from collections import namedtuple
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds
from stubmodels import Norm, PixelNet, random_weights, registered, stub_spec

from landfuse.core import engine, writers
from landfuse.core.errors import (
    AlignmentError,
    AreaOfInterestError,
    BandMismatchError,
    CancelledError,
    DiskSpaceError,
    EmptyInputError,
    GeoreferenceError,
    InputFileError,
    NoOverlapError,
    OutputError,
    RequestError,
)
from landfuse.core.normalisation import normalise
from landfuse.core.requests import (
    AreaOfInterest,
    ChangeRequest,
    LandCoverRequest,
    ModalityInput,
    RasterSource,
    request_from_dict,
    request_to_dict,
)
from landfuse.models.errors import UnknownModelError, WeightsMismatchError, WeightsNotFoundError

pytestmark = [
    pytest.mark.unit,
    pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning"),
]

UTM = "EPSG:32631"
ORIGIN = (500000.0, 4000000.0)
REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"


class PixelStub(torch.nn.Module):
    """Logits from a fixed 1x1 convolution of all inputs: tile-independent, so seams show."""

    def __init__(self, bands, classes, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(bands, classes, 1)

    def predict(self, *inputs):
        return self.conv(torch.cat(inputs, 1))


def write(path, data, transform=None, crs=UTM, nodata=None, driver="GTiff"):
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    profile = {
        "driver": driver,
        "count": data.shape[0],
        "height": data.shape[1],
        "width": data.shape[2],
    }
    profile["dtype"] = str(data.dtype)
    if transform is not None:
        profile["transform"] = transform
    if crs is not None:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return str(path)


def stats_norm(bands, mean=1000.0, std=500.0):
    return Norm("fixed_stats", mean=(mean,) * bands, std=(std,) * bands)


def make_info(modalities, classes=3, tile=32, task="landcover", name="stub"):
    return stub_spec(modalities, classes=classes, tile=tile, task=task, name=name)


@pytest.fixture
def weights(tmp_path):
    path = tmp_path / "weights.pt"
    path.write_bytes(b"stub weights")
    return str(path)


@pytest.fixture
def use_stub(monkeypatch):
    """Register a stub registry entry and install a stub network; returns the installer."""
    entries = contextlib.ExitStack()

    def install(info, network=None, real_registry=False):
        if not real_registry:
            entries.enter_context(registered(info))
        bands = sum(len(m.band_names) for m in info.modalities)
        bands *= 2 if info.task == "change" else 1
        net = network or PixelStub(bands, len(info.classes))
        monkeypatch.setattr(
            engine.plan,
            "load_network",
            lambda i, w, d, warn=None: (net, i, "ab" * 32, {"training": {}}),
        )
        return net

    with entries:
        yield install


def s2_s1_scene(folder, height=96, width=128, s1_fraction=1.0):
    """S2 as three files at 10/20/60 m (3 + 2 + 1 bands, UTM); S1 (2 bands) in EPSG:4326."""
    rng = np.random.default_rng(42)
    x0, y0 = ORIGIN
    b10 = rng.integers(200, 3000, (3, height, width)).astype(np.uint16)
    b10[:, :8, :8] = 0  # a nodata corner
    paths = {
        "b10": write(folder / "S2_B02_B03_B04.tif", b10, from_origin(x0, y0, 10, 10), nodata=0),
        "b20": write(
            folder / "S2_B05_B06.tif",
            rng.integers(200, 3000, (2, height // 2, width // 2)).astype(np.uint16),
            from_origin(x0, y0, 20, 20),
        ),
        "b60": write(
            folder / "S2_B09.tif",
            rng.integers(200, 3000, (1, -(-height // 6), -(-width // 6))).astype(np.uint16),
            from_origin(x0, y0, 60, 60),
        ),
    }
    left, bottom, right, top = transform_bounds(
        UTM, "EPSG:4326", x0, y0 - height * 10, x0 + width * 10, y0
    )
    right = left + (right - left) * s1_fraction
    res_x, res_y = (right - left) / 60, (top - bottom) / 50
    pad = 2
    paths["s1"] = write(
        folder / "S1_VV_VH.tif",
        rng.normal(-15, 3, (2, 50 + 2 * pad, 60 + 2 * pad)).astype(np.float32),
        from_origin(left - pad * res_x, top + pad * res_y, res_x, res_y),
        crs="EPSG:4326",
    )
    return paths


def landcover_request(paths, out, weights, **kwargs):
    s2 = (RasterSource(paths["b10"]), RasterSource(paths["b20"]), RasterSource(paths["b60"]))
    inputs = (ModalityInput("s2", s2), ModalityInput("s1", paths["s1"]))
    kwargs.setdefault("tile", 32)
    kwargs.setdefault("overlap", 8)
    return LandCoverRequest(
        inputs=inputs, model="stub", weights=weights, output_dir=str(out), **kwargs
    )


S2S1 = [("s2", 6, stats_norm(6)), ("s1", 2, stats_norm(2, -15.0, 3.0))]


def listing(folder):
    folder = Path(folder)
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def fingerprint(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in Path(folder).iterdir()}


def test_landcover_aligns_mixed_resolutions_and_crs(tmp_path, weights, use_stub):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    paths = s2_s1_scene(inputs)
    use_stub(make_info(S2S1))
    before = fingerprint(inputs)
    result = engine.run_landcover(landcover_request(paths, tmp_path / "out", weights))
    assert fingerprint(inputs) == before  # inputs untouched, no sidecar files added
    out = tmp_path / "out"
    assert listing(out) == [
        "landcover_classes.qml",
        "landcover_classes.tif",
        "landcover_classes.tif.aux.xml",
        "landcover_confidence.qml",
        "landcover_confidence.tif",
        "landcover_report.json",
    ]
    with rasterio.open(result.outputs["classes"]) as src:
        classes = src.read(1)
        assert src.crs.to_string() == UTM and src.res == (10.0, 10.0)
        assert src.transform.c == ORIGIN[0] and src.transform.f == ORIGIN[1]
        assert src.shape == (96, 128) and src.nodata == 255
    with rasterio.open(result.outputs["confidence"]) as src:
        confidence = src.read(1)
    assert (classes[:8, :8] == 255).all() and (confidence[:8, :8] == 255).all()  # nodata kept
    valid = classes != 255
    assert set(np.unique(classes[valid])) <= {0, 1, 2}
    assert confidence[valid].min() >= 33 and confidence[valid].max() <= 100  # 3 classes: >= 1/3
    report = json.loads(Path(result.report_path).read_text())
    assert report == json.loads(json.dumps(result.report))
    assert report["model"]["weights_sha256"] == "ab" * 32
    assert report["device"] == "cpu" and report["precision"] in ("fp32", "bf16")
    assert report["tiles"]["total"] == report["tiles"]["computed"] + report["tiles"]["skipped"]
    assert [i["resampled"] for i in report["inputs"]] == [False, True, True, True]
    pixels = sum(c["pixels"] for c in report["classes"])
    assert pixels == int(valid.sum())
    assert sum(c["hectares"] for c in report["classes"]) == pytest.approx(pixels * 0.01, rel=1e-6)


def test_work_area_is_where_all_inputs_overlap(tmp_path, weights, use_stub):
    paths = s2_s1_scene(tmp_path, s1_fraction=0.5)
    use_stub(make_info(S2S1))
    result = engine.run_landcover(landcover_request(paths, tmp_path / "out", weights))
    with rasterio.open(result.outputs["classes"]) as src:
        assert src.height == 96 and 60 <= src.width <= 70  # the western half, where S1 exists


def pair_scene(folder, height=70, width=90, bands=3, seed=0):
    rng = np.random.default_rng(seed)
    transform = from_origin(*ORIGIN, 10, 10)
    before = rng.normal(1000, 300, (bands, height, width)).astype(np.float32)
    after = rng.normal(1000, 300, (bands, height, width)).astype(np.float32)
    return (
        write(folder / "before.tif", before, transform),
        write(folder / "after.tif", after, transform),
        before,
        after,
    )


@pytest.mark.parametrize("stripe_width", [None, 48, 80])
def test_change_probability_has_no_seams(tmp_path, weights, use_stub, monkeypatch, stripe_width):
    """Fixed statistics + a tile-independent network: the blended mosaic equals one pass,
    whether the scene is one stripe or several (no seams between stripes either)."""
    monkeypatch.setattr(engine.plan, "STRIPE_WIDTH", stripe_width)
    before_path, after_path, before, after = pair_scene(tmp_path)
    info = make_info([("rgb", 3, stats_norm(3))], classes=2, task="change")
    network = use_stub(info)
    request = ChangeRequest(
        before=before_path,
        after=after_path,
        model="stub",
        weights=weights,
        output_dir=str(tmp_path / "out"),
        tile=32,
        overlap=8,
        precision="fp32",
    )
    result = engine.run_change(request)
    assert result.report["tiles"]["total"] == 12  # 3 rows x 4 columns of 32 px tiles
    norm = info.modalities[0].normalisation
    with torch.no_grad():
        logits = network.predict(
            torch.from_numpy(normalise(before, norm))[None],
            torch.from_numpy(normalise(after, norm))[None],
        )
        expected = torch.softmax(logits, 1)[0, 1].numpy()
    with rasterio.open(result.outputs["probability"]) as src:
        probability = src.read(1)
        assert src.nodata == -1
    np.testing.assert_allclose(probability, expected, atol=2e-6)
    with rasterio.open(result.outputs["change"]) as src:
        np.testing.assert_array_equal(src.read(1), (expected >= 0.5).astype(np.uint8))
    change = result.report["change"]
    assert change["changed_pixels"] == int((expected >= 0.5).sum())
    assert change["changed_hectares"] == pytest.approx(change["changed_pixels"] * 0.01)


def test_minmax_per_tile_on_a_one_tile_scene_is_the_reference_preprocessing(
    tmp_path, weights, use_stub
):
    rng = np.random.default_rng(3)
    data = rng.integers(0, 10000, (4, 32, 32)).astype(np.uint16)
    path = write(tmp_path / "s2.tif", data, from_origin(*ORIGIN, 10, 10))
    info = make_info([("s2", 4, Norm("minmax_per_tile"))], classes=4)
    network = use_stub(info)
    request = LandCoverRequest(
        inputs=(ModalityInput("s2", path),),
        model="stub",
        weights=weights,
        output_dir=str(tmp_path / "out"),
        tile=32,
        precision="fp32",
    )
    result = engine.run_landcover(request)
    scaled = np.stack([(b - b.min()) / (b.max() - b.min()) for b in data.astype(np.float32)])
    with torch.no_grad():
        expected = network.predict(torch.from_numpy(scaled)[None]).argmax(1)[0].numpy()
    with rasterio.open(result.outputs["classes"]) as src:
        np.testing.assert_array_equal(src.read(1), expected)


def test_polygon_area_of_interest_in_another_crs(tmp_path, weights, use_stub):
    paths = s2_s1_scene(tmp_path)
    use_stub(make_info(S2S1))
    x0, y0 = ORIGIN
    # A triangle over the middle of the scene, given in longitude/latitude.
    corners = [(x0 + 300, y0 - 200), (x0 + 1000, y0 - 200), (x0 + 300, y0 - 800)]
    from rasterio.warp import transform as warp_transform

    lons, lats = warp_transform(UTM, "EPSG:4326", [c[0] for c in corners], [c[1] for c in corners])
    ring = [[lon, lat] for lon, lat in zip(lons, lats)] + [[lons[0], lats[0]]]
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
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
    request = landcover_request(
        paths, tmp_path / "out", weights, aoi=AreaOfInterest(polygon_file=str(aoi))
    )
    result = engine.run_landcover(request)
    with rasterio.open(result.outputs["classes"]) as src:
        classes = src.read(1)
        assert abs(src.transform.c - (x0 + 300)) <= 10 and abs(src.transform.f - (y0 - 200)) <= 10
        assert 69 <= src.width <= 72 and 59 <= src.height <= 62
    inside = classes != 255
    assert inside[2, 2] and not inside[-3, -3]  # upper-left half of the triangle
    assert abs(int(inside.sum()) - 70 * 60 // 2) < 150
    assert result.report["tiles"]["skipped"] >= 1  # the tile in the empty corner is not computed


def test_progress_reports_every_stage_in_order(tmp_path, weights, use_stub):
    paths = s2_s1_scene(tmp_path)
    use_stub(make_info(S2S1))
    reports = []
    engine.run_landcover(
        landcover_request(paths, tmp_path / "out", weights), progress=reports.append
    )
    stages = [r.stage for r in reports]
    assert stages[0] == "prepare" and stages[-1] == "done"
    assert "infer" in stages and "finish" in stages
    fractions = [r.fraction for r in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    infer = [r for r in reports if r.stage == "infer"]
    assert infer[-1].tiles_done == infer[-1].tiles_total


def test_validate_checks_without_writing(tmp_path, weights, use_stub):
    paths = s2_s1_scene(tmp_path)
    use_stub(make_info(S2S1))
    summary = engine.validate(landcover_request(paths, tmp_path / "out", weights))
    assert summary["tiles"] == 20 and summary["grid"]["width"] == 128
    assert not (tmp_path / "out").exists()


def test_existing_outputs_need_overwrite(tmp_path, weights, use_stub):
    paths = s2_s1_scene(tmp_path)
    use_stub(make_info(S2S1))
    engine.run_landcover(landcover_request(paths, tmp_path / "out", weights))
    with pytest.raises(OutputError, match="already exists"):
        engine.run_landcover(landcover_request(paths, tmp_path / "out", weights))
    engine.run_landcover(landcover_request(paths, tmp_path / "out", weights, overwrite=True))
    assert len(listing(tmp_path / "out")) == 6


def test_gdal_block_cache_is_bounded_during_a_run_and_restored(tmp_path, weights, use_stub):
    """GDAL's default cache would keep every decoded input block: memory growing with the scene."""
    from osgeo import gdal

    paths = s2_s1_scene(tmp_path)
    info = make_info(S2S1)
    net = use_stub(info)
    seen = []

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = net

        def predict(self, *inputs):
            seen.append(gdal.GetCacheMax())
            return self.inner.predict(*inputs)

    use_stub(info, network=Spy())
    saved = gdal.GetCacheMax()
    gdal.SetCacheMax(512 << 20)  # what a user (or GDAL's 5 % of the RAM) may have set
    try:
        result = engine.run_landcover(landcover_request(paths, tmp_path / "out", weights))
        assert gdal.GetCacheMax() == 512 << 20
    finally:
        gdal.SetCacheMax(saved)
    assert seen and len(set(seen)) == 1
    # Two rows of 32 px tiles over 128 px: a few MB at most, plus the floor.
    assert engine._BLOCK_CACHE_FLOOR <= seen[0] <= engine._BLOCK_CACHE_FLOOR + (8 << 20)
    assert result.report["tiles"]["computed"] > 0


def test_a_scene_in_stripes_maps_as_in_one_stripe(tmp_path, weights, use_stub, monkeypatch):
    """Mixed resolutions and CRSs, a nodata corner: stripes change the order, not the map."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    paths = s2_s1_scene(inputs, height=96, width=200)
    use_stub(make_info(S2S1, classes=4))
    products = {}
    for stripe_width in (None, 56):
        monkeypatch.setattr(engine.plan, "STRIPE_WIDTH", stripe_width)
        out = tmp_path / f"out{stripe_width}"
        result = engine.run_landcover(
            landcover_request(
                paths, out, weights, precision="fp32", outputs=("classes", "confidence"), cog=False
            )
        )
        products[stripe_width] = result
    single, striped = products[None], products[56]
    assert striped.report["tiles"]["total"] == single.report["tiles"]["total"]
    for key in ("classes", "confidence"):
        with rasterio.open(single.outputs[key]) as a, rasterio.open(striped.outputs[key]) as b:
            one, many = a.read(1), b.read(1)
            # Sums in another order: the last bit of a probability may differ, so allow a
            # handful of pixels on an exact tie or a rounding edge of the confidence.
            assert (one != many).mean() < 1e-3
            assert (one == 255).sum() == (many == 255).sum() > 0  # the nodata corner
    assert striped.report["classes"] == single.report["classes"] or all(
        abs(a["pixels"] - b["pixels"]) <= 2
        for a, b in zip(striped.report["classes"], single.report["classes"])
    )


def test_memory_does_not_grow_with_the_scene_width(tmp_path, weights, use_stub, monkeypatch):
    """Stripes: a scene four times wider needs about the same peak memory (Python heap)."""
    monkeypatch.setattr(engine.plan, "STRIPE_WIDTH", 256)
    info = make_info([("s2", 2, stats_norm(2))], classes=4, tile=64)
    use_stub(info)
    peaks = []
    height = 320
    # The first run is a warm-up (lazy imports); 1024 px is already four stripes.
    for width in (64, 1024, 4096):
        data = np.random.default_rng(0).integers(0, 3000, (2, height, width)).astype(np.uint16)
        path = write(tmp_path / f"s2_{width}.tif", data, from_origin(*ORIGIN, 10, 10))
        request = LandCoverRequest(
            inputs=(ModalityInput("s2", path),),
            model="stub",
            weights=weights,
            output_dir=str(tmp_path / f"out{width}"),
            overlap=8,
            batch=2,
            cog=False,
            precision="fp32",
        )
        tracemalloc.start()
        engine.run_landcover(request)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    one_band_across_the_width = 4 * 64 * 4096 * 4
    assert peaks[2] < 1.1 * peaks[1], peaks
    assert peaks[2] - peaks[1] < one_band_across_the_width / 4


def test_memory_does_not_grow_with_the_scene_height(tmp_path, weights, use_stub):
    """Streaming: a scene four times taller needs about the same peak memory (Python heap)."""
    info = make_info([("s2", 2, stats_norm(2))], classes=4, tile=64)
    use_stub(info)
    peaks = []
    width = 384
    # The first run imports modules lazily (allocations that are not the run's): warm up. The
    # read-ahead queue fills up within the first few hundred rows: compare 640 and 2560 rows.
    for height in (64, 640, 2560):
        data = np.random.default_rng(0).integers(0, 3000, (2, height, width)).astype(np.uint16)
        path = write(tmp_path / f"s2_{height}.tif", data, from_origin(*ORIGIN, 10, 10))
        request = LandCoverRequest(
            inputs=(ModalityInput("s2", path),),
            model="stub",
            weights=weights,
            output_dir=str(tmp_path / f"out{height}"),
            overlap=8,
            batch=2,
            cog=False,
            precision="fp32",
        )
        tracemalloc.start()
        engine.run_landcover(request)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    whole_scene_probabilities = 4 * 2560 * width * 4
    assert peaks[2] < 1.1 * peaks[1], peaks
    assert peaks[2] < whole_scene_probabilities


# --- bad input: a specific error each, nothing left in the output folder --------------------


def bad_input_cases(tmp_path, paths, weights):
    """(label, request factory, expected error, message fragment)."""
    out = tmp_path / "out"
    no_crs = write(
        tmp_path / "nocrs.tif",
        np.ones((2, 96, 128), np.float32),
        from_origin(*ORIGIN, 10, 10),
        crs=None,
    )
    far = write(
        tmp_path / "far.tif", np.ones((2, 20, 20), np.float32), from_origin(100000, 1000000, 10, 10)
    )
    s2 = (RasterSource(paths["b10"]), RasterSource(paths["b20"]), RasterSource(paths["b60"]))

    def lc(s1=paths["s1"], s2=s2, **kw):
        return LandCoverRequest(
            inputs=(ModalityInput("s2", s2), ModalityInput("s1", s1)),
            model="stub",
            weights=kw.pop("weights", weights),
            output_dir=str(kw.pop("out", out)),
            tile=32,
            **kw,
        )

    return [
        (
            "missing file",
            lambda: lc(s1=str(tmp_path / "missing.tif")),
            InputFileError,
            "does not exist",
        ),
        ("no crs", lambda: lc(s1=no_crs), GeoreferenceError, "no georeferencing"),
        ("band count", lambda: lc(s2=s2[:2]), BandMismatchError, "needs 6 bands"),
        (
            "band name",
            lambda: lc(s1=RasterSource(paths["s1"], bands=("VV", "VH"))),
            BandMismatchError,
            "no band described",
        ),
        ("no overlap", lambda: lc(s1=far), NoOverlapError, "does not overlap"),
        (
            "aoi outside",
            lambda: lc(aoi=AreaOfInterest(bounds=(0, 0, 1, 1), crs="EPSG:4326")),
            AreaOfInterestError,
            "outside",
        ),
        (
            "no weights",
            lambda: lc(weights=str(tmp_path / "none.pt")),
            WeightsNotFoundError,
            "does not exist",
        ),
        ("not writable", lambda: lc(out=Path(weights) / "sub"), OutputError, "cannot be created"),
        ("fp16 on cpu", lambda: lc(device="cpu", precision="fp16"), RequestError, "GPU precision"),
        (
            "missing modality",
            lambda: LandCoverRequest(
                inputs=(ModalityInput("s2", s2),),
                model="stub",
                weights=weights,
                output_dir=str(out),
            ),
            RequestError,
            "missing s1",
        ),
    ]


def test_every_bad_input_has_its_error_and_leaves_nothing(tmp_path, weights, use_stub):
    paths = s2_s1_scene(tmp_path)
    use_stub(make_info(S2S1))
    before = fingerprint(tmp_path)
    for label, factory, error, fragment in bad_input_cases(tmp_path, paths, weights):
        with pytest.raises(error, match=fragment):
            engine.run_landcover(factory())
        assert not (tmp_path / "out").exists(), label  # not even an empty folder
    after = fingerprint(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before  # inputs untouched


def test_all_nodata_input_is_an_empty_input_error(tmp_path, weights, use_stub):
    paths = s2_s1_scene(tmp_path)
    use_stub(make_info(S2S1))
    empty = write(
        tmp_path / "S1_empty.tif",
        np.full((2, 40, 40), -9999, np.float32),
        rasterio.open(paths["s1"]).transform * rasterio.Affine.scale(1.6),
        crs="EPSG:4326",
        nodata=-9999,
    )
    paths["s1"] = empty
    with pytest.raises(EmptyInputError, match="only nodata"):
        engine.run_landcover(landcover_request(paths, tmp_path / "out", weights))
    assert not (tmp_path / "out").exists()


def test_change_pairs_that_cannot_be_aligned(tmp_path, weights, use_stub):
    use_stub(make_info([("rgb", 3, Norm("scale", factor=1 / 255))], classes=2, task="change"))
    geo_path, _, _, _ = pair_scene(tmp_path)
    plain = write(tmp_path / "after.png", np.zeros((3, 70, 90), np.uint8), crs=None, driver="PNG")
    small = write(tmp_path / "small.png", np.zeros((3, 60, 90), np.uint8), crs=None, driver="PNG")
    far = write(
        tmp_path / "far.tif", np.ones((3, 20, 20), np.float32), from_origin(100000, 1000000, 10, 10)
    )
    out = tmp_path / "out"

    def pair(before, after, **kw):
        return ChangeRequest(
            before=before, after=after, model="stub", weights=weights, output_dir=str(out), **kw
        )

    with pytest.raises(AlignmentError, match="'before' image is georeferenced but"):
        engine.run_change(pair(geo_path, plain))
    with pytest.raises(AlignmentError, match="pixel-grid mode every input"):
        engine.run_change(pair(plain, small, pixel_grid=True))
    with pytest.raises(NoOverlapError):
        engine.run_change(pair(geo_path, far))
    with pytest.raises(GeoreferenceError, match="--pixel-grid"):
        engine.run_change(pair(plain, plain))
    assert not out.exists()


def test_pixel_grid_change_on_plain_images(tmp_path, weights, use_stub):
    use_stub(
        make_info([("rgb", 3, Norm("scale", factor=1 / 255))], classes=2, task="change", tile=32)
    )
    rng = np.random.default_rng(5)
    a = write(
        tmp_path / "a.png",
        rng.integers(0, 255, (3, 40, 50)).astype(np.uint8),
        crs=None,
        driver="PNG",
    )
    b = write(
        tmp_path / "b.png",
        rng.integers(0, 255, (3, 40, 50)).astype(np.uint8),
        crs=None,
        driver="PNG",
    )
    result = engine.run_change(
        ChangeRequest(
            before=a,
            after=b,
            model="stub",
            weights=weights,
            output_dir=str(tmp_path / "out"),
            pixel_grid=True,
        )
    )
    with rasterio.open(result.outputs["change"]) as src:
        assert src.crs is None and src.shape == (40, 50)
        assert set(np.unique(src.read(1))) <= {0, 1}
    assert result.report["change"]["changed_hectares"] is None


def test_wrong_task_and_unknown_model(tmp_path, weights, use_stub):
    paths = s2_s1_scene(tmp_path)
    use_stub(make_info(S2S1, task="change"))
    with pytest.raises(RequestError, match="predict-change"):
        engine.run_landcover(landcover_request(paths, tmp_path / "out", weights))
    with pytest.raises(RequestError, match="takes a ChangeRequest"):
        engine.run_change(landcover_request(paths, tmp_path / "out", weights))


def test_unknown_model_lists_the_registry(tmp_path, weights):
    paths = s2_s1_scene(tmp_path)
    request = LandCoverRequest(
        inputs=(ModalityInput("s2", paths["b10"]),),
        model="no_such_model",
        weights=weights,
        output_dir=str(tmp_path / "out"),
    )
    with pytest.raises(UnknownModelError, match="amm_fusenet_s2_s1_hunan"):
        engine.run_landcover(request)
    assert not (tmp_path / "out").exists()


def test_weights_for_another_model_are_refused(tmp_path):
    """The real weights loader: a file saved for amfnet_s2 given to amfnet_rgb_levir."""
    from landfuse.models.registry import get_model_spec
    from landfuse.models.weights import WeightsMetadata, save_weights

    other = tmp_path / "s2.pt"
    save_weights(
        other,
        torch.nn.Linear(2, 2),
        WeightsMetadata.for_spec(get_model_spec("amfnet_s2"), config={"num_classes": 2}),
    )
    rng = np.random.default_rng(0)
    a = write(
        tmp_path / "a.tif",
        rng.integers(0, 255, (3, 32, 32)).astype(np.uint8),
        from_origin(*ORIGIN, 10, 10),
    )
    request = ChangeRequest(
        before=a,
        after=a,
        model="amfnet_rgb_levir",
        weights=str(other),
        output_dir=str(tmp_path / "out"),
    )
    with pytest.raises(WeightsMismatchError, match="amfnet_s2"):
        engine.run_change(request)
    assert not (tmp_path / "out").exists()


def test_weights_of_another_model_are_refused_before_the_inputs_are_read(tmp_path):
    """The sidecar names the model: a request for another one fails before any input is opened
    (the 'after' file does not even exist)."""
    from landfuse.models.weights import WeightsMetadata, save_weights

    spec = stub_spec([("rgb", 3, Norm("scale", factor=1 / 255))], 2, task="change", name="p1")
    path = tmp_path / "p1.pt"
    with registered(spec):
        save_weights(path, PixelNet([3, 3], 2), WeightsMetadata.for_spec(spec))
    request = ChangeRequest(
        before=str(tmp_path / "missing.tif"),
        after=str(tmp_path / "missing.tif"),
        model="amfnet_rgb_levir",
        weights=str(path),
        output_dir=str(tmp_path / "out"),
    )
    with pytest.raises(
        WeightsMismatchError, match=r"holds weights for 'p1'.*matching model \(p1\)"
    ):
        engine.validate(request)


def test_the_weights_file_decides_the_model(tmp_path):
    """No model named: the sidecar's entry maps, with the file's classes; a checkpoint without
    a sidecar needs the model named."""
    from landfuse.models.specs import ClassSpec
    from landfuse.models.weights import WeightsMetadata, save_weights

    spec = stub_spec([("rgb", 3, Norm("scale", factor=1 / 255))], 2, task="change", name="p2")
    own = (ClassSpec(0, "same", (0, 0, 0)), ClassSpec(1, "new roofs", (255, 0, 0)))
    rng = np.random.default_rng(0)
    a = write(tmp_path / "a.tif", rng.integers(0, 255, (3, 32, 32)).astype(np.uint8),
              from_origin(*ORIGIN, 10, 10))  # fmt: skip
    path = tmp_path / "p2.pt"
    net = PixelNet([3, 3], 2)
    with registered(spec):
        save_weights(path, net, WeightsMetadata.for_spec(spec, classes=own))
        request = ChangeRequest(
            before=a, after=a, model="", weights=str(path), output_dir=str(tmp_path / "out")
        )
        summary = engine.validate(request)
        assert summary["model"] == "p2"
        result = engine.run(request)
        assert result.report["model"]["name"] == "p2"
        assert [c["name"] for c in result.report["model"]["classes"]] == ["same", "new roofs"]
        plain = tmp_path / "plain.pt"
        torch.save(net.state_dict(), plain)
        with pytest.raises(RequestError, match="name the model it is for"):
            engine.validate(replace(request, weights=str(plain)))


def test_disk_full_up_front_and_during_the_run(tmp_path, weights, use_stub, monkeypatch):
    paths = s2_s1_scene(tmp_path)
    use_stub(make_info(S2S1))
    usage = namedtuple("usage", "total used free")
    real_usage = writers.outputs.shutil.disk_usage
    monkeypatch.setattr(
        writers.outputs.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000)
    )
    with pytest.raises(DiskSpaceError, match="MB are free"):
        engine.run_landcover(landcover_request(paths, tmp_path / "out", weights))
    monkeypatch.setattr(writers.outputs.shutil, "disk_usage", real_usage)
    original_init = writers.StreamingGeoTiff.__init__

    def failing_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)

        def full(*a, **k):
            raise OSError(errno.ENOSPC, "No space left on device")

        self._dst.write = full

    monkeypatch.setattr(writers.StreamingGeoTiff, "__init__", failing_init)
    with pytest.raises(DiskSpaceError, match="disk is full"):
        engine.run_landcover(landcover_request(paths, tmp_path / "out", weights))
    assert not (tmp_path / "out").exists()


def test_cancel_in_the_middle_leaves_nothing(tmp_path, weights, use_stub):
    paths = s2_s1_scene(tmp_path)
    use_stub(make_info(S2S1))
    seen = []
    with pytest.raises(CancelledError):
        engine.run_landcover(
            landcover_request(paths, tmp_path / "out", weights, batch=2),
            progress=lambda p: seen.append(p.stage),
            cancel=lambda: seen.count("infer") >= 2,
        )
    assert seen.count("infer") == 2
    assert not (tmp_path / "out").exists()


# --- real networks from the registry (random weights, tiny scenes) ---------------------------


@pytest.mark.slow
def test_real_amfnet_on_a_96px_pair(tmp_path):
    weights = random_weights("amfnet_rgb_levir", tmp_path / "levir.pt")
    rng = np.random.default_rng(0)
    a = write(
        tmp_path / "a.tif",
        rng.integers(0, 255, (3, 96, 96)).astype(np.uint8),
        from_origin(*ORIGIN, 0.5, 0.5),
    )
    b = write(
        tmp_path / "b.tif",
        rng.integers(0, 255, (3, 96, 96)).astype(np.uint8),
        from_origin(*ORIGIN, 0.5, 0.5),
    )
    result = engine.run_change(
        ChangeRequest(
            before=a,
            after=b,
            model="amfnet_rgb_levir",
            weights=weights,
            output_dir=str(tmp_path / "out"),
            precision="fp32",
        )
    )
    with rasterio.open(result.outputs["probability"]) as src:
        probability = src.read(1)
    assert probability.shape == (96, 96) and np.isfinite(probability).all()
    assert probability.min() >= 0.0 and probability.max() <= 1.0
    assert len(result.report["model"]["weights_sha256"]) == 64


@pytest.mark.slow
def test_real_amm_fusenet_on_a_64px_scene(tmp_path):
    weights = random_weights("amm_fusenet_s2_s1_hunan", tmp_path / "hunan.pt")
    rng = np.random.default_rng(1)
    s2 = write(
        tmp_path / "s2.tif",
        rng.integers(0, 5000, (13, 64, 64)).astype(np.uint16),
        from_origin(*ORIGIN, 10, 10),
    )
    s1 = write(
        tmp_path / "s1.tif",
        rng.normal(-15, 3, (2, 32, 32)).astype(np.float32),
        from_origin(*ORIGIN, 20, 20),
    )
    result = engine.run_landcover(
        LandCoverRequest(
            inputs=(ModalityInput("s2", s2), ModalityInput("s1", s1)),
            model="amm_fusenet_s2_s1_hunan",
            weights=weights,
            output_dir=str(tmp_path / "out"),
            batch=2,
        )
    )
    with rasterio.open(result.outputs["classes"]) as src:
        classes = src.read(1)
    assert classes.shape == (64, 64) and classes.max() < 7
    assert result.report["classes"][0]["name"] == "cropland"


# --- real data (registry entries, stub networks: alignment and I/O on real files) -------------


def realdata(*parts):
    path = REALDATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real sample data not found at {path}")
    return path


@pytest.mark.realdata
def test_oscd_rennes_pair_on_the_b02_grid(tmp_path, weights, use_stub):
    city = realdata("oscd", "Onera Satellite Change Detection dataset - Images", "rennes")
    order = [
        "B01",
        "B02",
        "B03",
        "B04",
        "B05",
        "B06",
        "B07",
        "B08",
        "B8A",
        "B09",
        "B10",
        "B11",
        "B12",
    ]

    def bands(folder):
        files = {p.stem.rsplit("_", 1)[1]: str(p) for p in (city / folder).glob("*_B*.tif")}
        return tuple(RasterSource(files[b]) for b in order)

    info = engine.model_info("amfnet_s2")
    use_stub(info, real_registry=True)
    request = ChangeRequest(
        before=bands("imgs_1"),
        after=bands("imgs_2"),
        model="amfnet_s2",
        weights=weights,
        output_dir=str(tmp_path / "out"),
        reference=bands("imgs_1")[1].path,
    )
    result = engine.run_change(request)
    with (
        rasterio.open(result.outputs["change"]) as src,
        rasterio.open(request.before[1].path) as b02,
    ):
        assert (
            src.crs == b02.crs
            and src.transform.almost_equals(b02.transform)
            and src.shape == b02.shape
        )
        assert (src.read(1) != 255).all()
    # ~8.5 m x 12.7 m pixels at 48.1° N (0.000114° in longitude and latitude).
    change = result.report["change"]
    pixel_m2 = (0.000114034 * 111_195 * math.cos(math.radians(48.113))) * (0.000114274 * 111_195)
    expected_ha = 563 * 339 * pixel_m2 / 10_000
    total = change["changed_hectares"] + change["unchanged_hectares"]
    assert total == pytest.approx(expected_ha, rel=5e-3)


@pytest.mark.realdata
def test_terramind_s2_s1_dem_tile(tmp_path, weights, use_stub):
    folder = realdata("terramind_examples")
    stem = "282D_485L_3_3.tif"
    info = engine.model_info("amm_fusenet_s2_s1_dem")
    use_stub(info, real_registry=True)
    request = LandCoverRequest(
        inputs=(
            ModalityInput("s2", str(folder / "S2L1C" / stem)),
            ModalityInput("s1", str(folder / "S1RTC" / stem)),
            ModalityInput("dem", str(folder / "DEM" / stem)),
        ),
        model="amm_fusenet_s2_s1_dem",
        weights=weights,
        output_dir=str(tmp_path / "out"),
    )
    result = engine.run_landcover(request)
    assert [i["resampled"] for i in result.report["inputs"]] == [False, False, False]
    with rasterio.open(result.outputs["classes"]) as src:
        assert src.shape == (224, 224) and src.crs.to_epsg() == 32722
        assert (src.read(1) < 7).all()
    assert result.report["tiles"]["network_input"] == [224, 224]


@pytest.mark.realdata
def test_levir_pngs_need_the_pixel_grid_mode(tmp_path, weights, use_stub):
    folder = realdata("levir_cd_samples")
    info = engine.model_info("amfnet_rgb_levir")
    use_stub(info, real_registry=True)
    name = "test_2_0000_0000.png"

    def request(pixel_grid):
        return ChangeRequest(
            before=str(folder / "A" / name),
            after=str(folder / "B" / name),
            model="amfnet_rgb_levir",
            weights=weights,
            output_dir=str(tmp_path / "out"),
            pixel_grid=pixel_grid,
        )

    with pytest.raises(GeoreferenceError, match="pixel-grid"):
        engine.run_change(request(False))
    assert not (tmp_path / "out").exists()
    result = engine.run_change(request(True))
    with rasterio.open(result.outputs["change"]) as src:
        assert src.shape == (256, 256) and src.crs is None


@pytest.mark.realdata
def test_landsat_taizhou_envi_pair(tmp_path, weights, use_stub):
    folder = realdata("landsat_taizhou_cd")
    info = make_info([("tm", 6, stats_norm(6, 80.0, 40.0))], classes=2, task="change")
    use_stub(info)
    request = ChangeRequest(
        before=str(folder / "2000TM"),
        after=str(folder / "2003TM"),
        model="stub",
        weights=weights,
        output_dir=str(tmp_path / "out"),
        tile=128,
    )
    result = engine.run_change(request)
    with rasterio.open(result.outputs["change"]) as src:
        assert src.shape == (400, 400) and src.res == (30.0, 30.0)
        assert src.transform.c == pytest.approx(203325.0) and src.transform.f == pytest.approx(
            3604935.0
        )
        assert (src.read(1) != 255).all()
    change = result.report["change"]
    assert change["changed_hectares"] + change["unchanged_hectares"] == pytest.approx(
        400 * 400 * 0.09
    )


# --- requests: validated, coerced, JSON round trip ------------------------------------------


def test_requests_coerce_paths_and_lists_and_round_trip_through_json(tmp_path):
    request = LandCoverRequest(
        inputs=[
            {"key": "S2", "sources": [tmp_path / "a.tif", {"path": "b.tif", "bands": [1, "B8A"]}]}
        ],
        model="m",
        weights=tmp_path / "w.pt",
        output_dir=tmp_path,
        aoi={"bounds": [0, 0, 1, 1], "crs": "EPSG:4326"},
        outputs=["classes"],
    )
    assert request.inputs[0].key == "s2"
    assert request.inputs[0].sources[1] == RasterSource("b.tif", (1, "B8A"))
    assert request.aoi.bounds == (0.0, 0.0, 1.0, 1.0) and request.name == "landcover"
    again = request_from_dict(json.loads(json.dumps(request_to_dict(request))))
    assert again == request
    pair = ChangeRequest(before="a.tif", after=["b.tif"], model="m", weights="w", output_dir="o")
    assert request_from_dict(request_to_dict(pair)) == pair
    assert pair.outputs == ("change", "probability") and pair.name == "change"


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"tile": 64, "overlap": 64}, "smaller than the tile"),
        ({"tile": 32.5}, "whole number"),
        ({"batch": 0}, "batch size"),
        ({"device": "tpu"}, "Unknown device"),
        ({"precision": "int8"}, "Unknown precision"),
        ({"normalisation": "zscore"}, "Unknown normalisation"),
        ({"outputs": ("classes", "edges")}, "Unknown output"),
        ({"name": "../x"}, "plain file name"),
        ({"aoi": AreaOfInterest(bounds=(0, 0, 1, 1)), "pixel_grid": True}, "pixel-grid"),
        ({"model": 3}, "registry name"),
    ],
)
def test_request_field_errors(changes, match):
    fields = {
        "inputs": (ModalityInput("s2", "a.tif"),),
        "model": "m",
        "weights": "w",
        "output_dir": "o",
    }
    fields.update(changes)
    with pytest.raises(RequestError, match=match):
        LandCoverRequest(**fields)


def test_request_structure_errors():
    with pytest.raises(RequestError, match="not both"):
        AreaOfInterest(bounds=(0, 0, 1, 1), polygon_file="a.gpkg")
    with pytest.raises(RequestError, match="empty"):
        AreaOfInterest(bounds=(1, 0, 0, 1))
    with pytest.raises(RequestError, match="more than once"):
        LandCoverRequest(
            inputs=(ModalityInput("s2", "a"), ModalityInput("s2", "b")),
            model="m",
            weights="w",
            output_dir="o",
        )
    with pytest.raises(RequestError, match="between 0 and 1"):
        ChangeRequest(before="a", after="b", model="m", weights="w", output_dir="o", threshold=1.0)
    with pytest.raises(RequestError, match="band numbers start at 1"):
        RasterSource("a.tif", bands=(0,))
    with pytest.raises(RequestError, match="'task'"):
        request_from_dict({"model": "m"})
    with pytest.raises(RequestError, match="Unknown change request field"):
        request_from_dict(
            {
                "task": "change",
                "before": "a",
                "after": "b",
                "model": "m",
                "weights": "w",
                "output_dir": "o",
                "colour": "red",
            }
        )
