"""Dataset readers: pairing by name, label remapping, chips from rasters, joint augmentation."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.warp import transform as warp_transform

from landfuse.core import datasets as D
from landfuse.core.raster import Grid

pytestmark = [
    pytest.mark.unit,
    # The LEVIR-style PNGs written here are deliberately not georeferenced.
    pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning"),
]

UTM = "EPSG:32633"


def _write(path: Path, data: np.ndarray, transform=None, crs=None, driver="GTiff", nodata=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = data if data.ndim == 3 else data[None]
    profile = {
        "driver": driver,
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype.name,
    }
    if transform is not None:
        profile.update(transform=transform, crs=crs)
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


@pytest.fixture
def shuffled_listing(monkeypatch):
    """Make every directory listing come back in a random order."""
    original = Path.iterdir
    rng = random.Random(3)

    def iterdir(self):
        items = list(original(self))
        rng.shuffle(items)
        return iter(items)

    monkeypatch.setattr(Path, "iterdir", iterdir)


def _amm_layout(root: Path, stems: list[str], split: str = "train") -> None:
    """S2 (3 bands), S1 (2 bands), label: each file's pixels encode its stem's number."""
    order = list(stems)
    random.Random(1).shuffle(order)  # create files in a scrambled order too
    for stem in order:
        k = stems.index(stem)
        _write(root / "s2_dir" / split / f"{stem}.tif", np.full((3, 8, 8), k, np.float32))
        _write(root / "s1_dir" / split / f"{stem}.tif", np.full((2, 8, 8), 10 + k, np.float32))
        _write(root / "ann_dir" / split / f"{stem}.png", np.full((8, 8), k, np.uint8), driver="PNG")


def test_amm_layout_pairs_by_stem_whatever_the_listing_order(tmp_path, shuffled_listing):
    stems = ["zeta", "alpha", "m_07", "b_10", "b_2"]
    _amm_layout(tmp_path, stems)
    ds = D.AmmFuseNetDataset(tmp_path, "train", modalities=("s2", "s1"))
    assert ds.names == sorted(stems)
    for i, name in enumerate(ds.names):
        sample = ds.read(i)
        k = stems.index(name)
        assert sample.name == name
        assert sample.inputs[0].shape == (3, 8, 8) and np.all(sample.inputs[0] == k)
        assert sample.inputs[1].shape == (2, 8, 8) and np.all(sample.inputs[1] == 10 + k)
        assert np.all(sample.label == k) and sample.label.dtype == np.int64


def test_amm_missing_partner_is_reported_by_name(tmp_path):
    _amm_layout(tmp_path, ["a1", "a2", "a3"])
    (tmp_path / "s1_dir" / "train" / "a2.tif").unlink()
    _write(tmp_path / "ann_dir" / "train" / "orphan.png", np.zeros((8, 8), np.uint8), driver="PNG")
    with pytest.raises(D.DatasetPairingError) as info:
        D.AmmFuseNetDataset(tmp_path, "train", modalities=("s2", "s1"))
    message = str(info.value)
    assert "a2" in message and "s1_dir" in message
    assert "orphan" in message
    assert "a1" not in message.replace(str(tmp_path), "")


def test_amm_duplicate_stem_and_missing_folder(tmp_path):
    _amm_layout(tmp_path, ["a1"])
    with pytest.raises(D.DatasetError, match="dem_dir"):
        D.AmmFuseNetDataset(tmp_path, "train", modalities=("s2", "dem"))
    _write(tmp_path / "s2_dir" / "train" / "a1.png", np.zeros((3, 8, 8), np.uint8), driver="PNG")
    with pytest.raises(D.DatasetPairingError, match="a1"):
        D.AmmFuseNetDataset(tmp_path, "train")


def test_hunan_remapping(tmp_path):
    codes = np.array([[0, 1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 255, 1, 1]], np.uint8)
    _write(tmp_path / "s2_dir" / "val" / "t.tif", np.zeros((13, 2, 8), np.float32))
    _write(tmp_path / "dem_dir" / "val" / "t.tif", np.zeros((1, 2, 8), np.float32))
    _write(tmp_path / "ann_dir" / "val" / "t.tif", codes)
    ds = D.AmmFuseNetDataset(tmp_path, "val", modalities=("s2", "dem"), hunan_remap=True)
    label = ds.read(0).label
    # NETWORKS.md §2: 255 -> 12, then [255,0,1,2,1,3,4,6,6,5,6,7,255]; 7 and 255 ignored.
    expected = [[255, 0, 1, 2, 1, 3, 4, 6], [6, 5, 6, 255, 255, 255, 0, 0]]
    np.testing.assert_array_equal(label, expected)
    raw = D.AmmFuseNetDataset(tmp_path, "val", modalities=("s2", "dem")).read(0).label
    np.testing.assert_array_equal(raw, codes)


def _levir(root: Path, names: list[str]) -> None:
    for k, name in enumerate(names):
        _write(root / "A" / name, np.full((3, 8, 8), k, np.uint8), driver="PNG")
        _write(root / "B" / name, np.full((3, 8, 8), 100 + k, np.uint8), driver="PNG")
        mask = np.zeros((8, 8), np.uint8)
        mask[:k] = 255
        _write(root / "label" / name, mask, driver="PNG")


def test_levir_pairs_by_name_and_maps_labels(tmp_path, shuffled_listing):
    names = ["train_3.png", "train_1.png", "val_2.png", "test_0.png"]
    _levir(tmp_path, names)
    ds = D.LevirCDDataset(tmp_path)
    assert ds.names == sorted(names)
    for i, name in enumerate(ds.names):
        sample = ds.read(i)
        k = names.index(name)
        assert np.all(sample.inputs[0] == k) and np.all(sample.inputs[1] == 100 + k)
        assert sample.label.sum() == 8 * k and set(np.unique(sample.label)) <= {0, 1}
    held_out = D.LevirCDDataset(tmp_path, names=["val_2.png", "test_0.png"])
    assert held_out.names == ["test_0.png", "val_2.png"]


def test_levir_missing_partner_list_split_and_bad_label(tmp_path):
    _levir(tmp_path, ["p.png", "q.png"])
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "train.txt").write_text("q.png\n")
    assert D.LevirCDDataset(tmp_path, split="train").names == ["q.png"]
    bad = np.full((8, 8), 128, np.uint8)
    _write(tmp_path / "label" / "q.png", bad, driver="PNG")
    with pytest.raises(D.DatasetError, match="128"):
        D.LevirCDDataset(tmp_path, names=["q.png"]).read(0)
    (tmp_path / "B" / "p.png").unlink()
    with pytest.raises(D.DatasetPairingError, match=r"p\.png"):
        D.LevirCDDataset(tmp_path)
    with pytest.raises(D.DatasetError, match="split 'test'"):
        D.LevirCDDataset(tmp_path, split="test")


def _scene_rasters(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A 10 m 3-band raster (40x40), a 20 m 1-band raster over the same area, a label raster."""
    rng = np.random.default_rng(0)
    t10 = from_origin(500000, 4000400, 10, 10)
    t20 = from_origin(500000, 4000400, 20, 20)
    s2 = tmp_path / "s2.tif"
    _write(s2, rng.random((3, 40, 40)).astype(np.float32), t10, UTM)
    s1 = tmp_path / "s1.tif"
    coarse = np.repeat(np.arange(20, dtype=np.float32)[None, :], 20, axis=0)[None]
    _write(s1, coarse, t20, UTM)
    label = np.full((40, 40), 255, np.uint8)
    label[:16, :] = 1
    label[16:24, :16] = 2
    lab = tmp_path / "label.tif"
    _write(lab, label, t10, UTM)
    return s2, s1, lab


def test_chip_dataset_aligns_inputs_and_keeps_labelled_chips(tmp_path):
    s2, s1, lab = _scene_rasters(tmp_path)
    scene = D.RasterScene(inputs=(str(s2), str(s1)), label=str(lab), label_map={1: 0, 2: 1})
    ds = D.RasterChipDataset([scene], chip_size=16, stride=16)
    # Windows start at 0, 16 and 24 (last moved inward) on each axis; rows 24..39 hold no label.
    rows = sorted({n.split("@")[1].split(",")[0] for n in ds.names})
    assert rows == ["0", "16"]
    sample = ds.read(0)
    assert [a.shape for a in sample.inputs] == [(3, 16, 16), (1, 16, 16)]
    with rasterio.open(s2) as src:
        np.testing.assert_array_equal(sample.inputs[0], src.read(window=((0, 16), (0, 16))))
    # The 20 m raster, bilinearly read on the 10 m grid, keeps increasing along columns.
    assert np.all(np.diff(sample.inputs[1][0, 4]) >= 0)
    assert sample.inputs[1][0, 4, 15] == pytest.approx(7.25, abs=0.5)
    assert set(np.unique(sample.label)) == {0}
    chip = ds.read(ds.names.index("s2@16,0"))
    assert set(np.unique(chip.label)) == {1, 255}

    strict = D.RasterChipDataset([scene], chip_size=16, min_labelled_fraction=0.9)
    assert len(strict) == 3  # only the fully labelled top row of chips
    preloaded = D.RasterChipDataset([scene], chip_size=16, preload=True)
    for i in range(len(ds)):
        np.testing.assert_array_equal(preloaded.read(i).inputs[1], ds.read(i).inputs[1])


def test_chip_dataset_from_polygons_in_another_crs(tmp_path):
    s2, _, _ = _scene_rasters(tmp_path)
    # Two squares drawn in UTM then written in WGS84: class "water" and class "forest".
    squares = {
        "water": (500000, 4000400, 500160, 4000240),
        "forest": (500200, 4000200, 500400, 4000000),
    }
    features = []
    for cls, (x0, y0, x1, y1) in squares.items():
        xs, ys = [x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0]
        lon, lat = warp_transform(UTM, "EPSG:4326", xs, ys)
        features.append(
            {
                "type": "Feature",
                "properties": {"cls": cls},
                "geometry": {"type": "Polygon", "coordinates": [list(zip(lon, lat))]},
            }
        )
    vector = tmp_path / "labels.geojson"
    vector.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    scene = D.RasterScene(
        inputs=(str(s2),), label=str(vector), label_field="cls", label_map={"water": 0, "forest": 1}
    )
    ds = D.RasterChipDataset([scene], chip_size=16)
    full = D.rasterize_polygons(
        str(vector),
        Grid(40, 40, from_origin(500000, 4000400, 10, 10), CRS.from_string(UTM)),
        "cls",
        {"water": 0, "forest": 1},
    )
    assert (full[2:14, 2:14] == 0).all() and (full[22:38, 22:38] == 1).all()
    assert (full[:, 17:19] == 255).all()
    assert np.count_nonzero(full == 0) == pytest.approx(256, abs=40)
    assert len(ds) >= 2
    with pytest.raises(D.DatasetError, match="not in the label mapping"):
        D.rasterize_polygons(
            str(vector),
            Grid(40, 40, from_origin(500000, 4000400, 10, 10), CRS.from_string(UTM)),
            "cls",
            {"water": 0},
        )
    with pytest.raises(D.DatasetError, match="no field"):
        D.RasterChipDataset([D.RasterScene((str(s2),), str(vector), label_field="klass")], 16)


def test_chip_dataset_nodata_is_ignored(tmp_path):
    t10 = from_origin(500000, 4000400, 10, 10)
    data = np.ones((1, 16, 16), np.float32)
    data[0, :4, :4] = -9999
    _write(tmp_path / "img.tif", data, t10, UTM, nodata=-9999)
    _write(tmp_path / "lab.tif", np.zeros((16, 16), np.uint8), t10, UTM)
    ds = D.RasterChipDataset(
        [D.RasterScene((str(tmp_path / "img.tif"),), str(tmp_path / "lab.tif"))], 16
    )
    sample = ds.read(0)
    assert (sample.label[:4, :4] == 255).all() and (sample.label[4:, 4:] == 0).all()
    assert (sample.inputs[0][0, :4, :4] == 0).all() and sample.valid is not None


def test_chip_windows_follow_engine_tiling():
    windows = D.chip_windows(40, 20, 16, 12)
    assert [(int(w.row_off), int(w.col_off)) for w in windows] == [
        (0, 0),
        (0, 12),
        (0, 24),
        (4, 0),
        (4, 12),
        (4, 24),
    ]
    with pytest.raises(D.DatasetError):
        D.chip_windows(10, 40, 16, 16)


def test_joint_augmentation_moves_everything_together():
    aug = D.JointAugmentation()
    base = np.arange(36, dtype=np.float32).reshape(6, 6)
    seen = set()
    for seed in range(12):
        before, after, label = base[None].copy(), (base[None] * 2).copy(), base.astype(np.int64)
        (b, a), lab = aug([before, after], label, np.random.default_rng(seed))
        np.testing.assert_array_equal(b[0], lab)
        np.testing.assert_array_equal(a[0], 2 * lab)
        seen.add(lab.tobytes())
    assert len(seen) > 3  # several different transforms were drawn
    rect = np.arange(24).reshape(4, 6)
    for seed in range(8):
        (x,), lab = aug([rect[None].astype(np.float32)], rect, np.random.default_rng(seed))
        assert lab.shape == (4, 6) and x.shape == (1, 4, 6)
        np.testing.assert_array_equal(x[0], lab)


def test_prepared_dataset_is_deterministic_per_epoch(tmp_path):
    _levir(tmp_path, ["a.png", "b.png"])
    base = D.LevirCDDataset(tmp_path)
    prepared = D.PreparedDataset(
        base, normalise=lambda i, a, valid: a / 255.0, augmentation=D.JointAugmentation(), seed=5
    )
    first = prepared[1]
    assert first["inputs"][0].dtype.is_floating_point and first["label"].dtype.is_signed
    assert float(first["inputs"][1].max()) == pytest.approx(101 / 255)
    again = prepared[1]
    assert all((x == y).all() for x, y in zip(first["inputs"], again["inputs"]))
    labels = set()
    for epoch in range(6):
        prepared.set_epoch(epoch)
        labels.add(prepared[1]["label"].numpy().tobytes())
    assert len(labels) > 1


REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"
needs_realdata = pytest.mark.skipif(
    not REALDATA.is_dir(), reason=f"real sample data not found at {REALDATA}"
)


@pytest.mark.realdata
@needs_realdata
def test_levir_cd_samples_pair_by_name_from_the_list():
    ds = D.LevirCDDataset(REALDATA / "levir_cd_samples", split="demo")
    assert len(ds) == 8 and ds.names == sorted(ds.names)
    for i, name in enumerate(ds.names):
        sample = ds.read(i)
        assert [a.shape for a in sample.inputs] == [(3, 256, 256), (3, 256, 256)]
        assert set(np.unique(sample.label)) <= {0, 1}
        if name == "train_386_0512_0768.png":  # the pair without change (PROVENANCE.md)
            assert sample.label.sum() == 0


@pytest.mark.realdata
@needs_realdata
def test_terramind_tiles_as_chips():
    root = REALDATA / "terramind_examples"
    stems = sorted(p.stem for p in (root / "LULC").glob("*.tif"))
    scenes = [
        D.RasterScene(
            inputs=tuple(str(root / m / f"{s}.tif") for m in ("S2L1C", "S1RTC", "DEM")),
            label=str(root / "LULC" / f"{s}.tif"),
            label_map={0: 255, **{v: v - 1 for v in range(1, 10)}},
            name=s,
        )
        for s in stems
    ]
    ds = D.RasterChipDataset(scenes, chip_size=112)
    assert len(ds) == 16 and ds.names[0] == f"{stems[0]}@0,0"
    sample = ds.read(0)
    assert [a.shape[0] for a in sample.inputs] == [13, 2, 1]
    assert sample.label.max() <= 8
