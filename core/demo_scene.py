"""Seeded generator of plausible demo scenes with known truth (no real data is bundled).

A land-cover scene: a 13-band Sentinel-2 L1C-like stack (10 m, UTM), a Sentinel-1 VV/VH pair in
dB (20 m, same UTM zone, a slightly larger footprint), a DEM in metres (1 arc-second, EPSG:4326)
and the ground-truth map in the Hunan class order of AMM-FuseNet (0 cropland, 1 forest,
2 grassland, 3 wetland, 4 water, 5 unused/bare land, 6 built-up; 255 nodata). The three inputs
are on three different grids on purpose: the engine has to align them.

A change pair: two Sentinel-2 stacks of one area at two dates, the second with new built-up
areas, clearings and a new reservoir, plus seasonal and illumination differences that are not
change, and the change truth (0/1).

The landscape is built from a fractal DEM: water in valleys and basins, wetland along water,
forest on slopes and heights, bare rock on the highest ridges, towns on flat lowland, and the
rest cut into rectangular parcels of cropland or grassland. Spectra are class means typical of
Sentinel-2 L1C reflectance (x 10000) with per-parcel and per-pixel variation; S1 backscatter is
class means in dB with multiplicative speckle. The numbers are plausible, not a physical model.

It ships with the plugin, so the dock's "Try LandFuse on a demo scene" can write a scene
beside the demo weights of ``demo/weights``.

Usage: python -m landfuse.core.demo_scene OUT_DIR [--size 768] [--seed 1]
(``scripts/demo_data.py`` runs the same).
"""

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.transform import Affine, from_origin
from rasterio.warp import calculate_default_transform, reproject
from scipy import ndimage

from ..models.sensors import SENTINEL2_L1C

S2_BANDS = list(SENTINEL2_L1C.band_names)  # B01 … B12 with B8A, in the product order
S1_BANDS = ["VV", "VH"]
CLASS_NAMES = ["cropland", "forest", "grassland", "wetland", "water", "unused land", "built-up"]
CROPLAND, FOREST, GRASSLAND, WETLAND, WATER, BARE, BUILT = range(7)
NODATA_CLASS = 255

# Mean top-of-atmosphere reflectance x 10000 per class, bands in S2_BANDS order.
S2_SIGNATURES = np.array(
    [
        [1150, 820, 1020, 720, 1300, 2400, 2900, 3100, 3200, 950, 30, 2000, 1100],  # cropland
        [1100, 700, 760, 450, 900, 2200, 2700, 2900, 3000, 900, 30, 1400, 650],  # forest
        [1200, 860, 1060, 960, 1450, 2000, 2300, 2450, 2550, 850, 30, 2500, 1500],  # grassland
        [1150, 760, 860, 660, 900, 1400, 1600, 1700, 1750, 600, 25, 1100, 600],  # wetland
        [1200, 900, 700, 450, 400, 350, 330, 300, 280, 150, 20, 100, 80],  # water
        [1500, 1400, 1650, 1950, 2150, 2350, 2450, 2550, 2650, 900, 40, 3300, 2700],  # bare
        [1600, 1450, 1500, 1600, 1750, 1850, 1950, 2050, 2100, 800, 40, 2400, 2100],  # built-up
    ],
    dtype=np.float32,
)
# Mean backscatter in dB per class: (VV, VH).
S1_SIGNATURES = np.array(
    [
        [-10.0, -16.5],
        [-7.5, -13.0],
        [-11.0, -18.0],
        [-9.0, -15.0],
        [-21.0, -28.0],
        [-13.0, -22.0],
        [-1.0, -9.0],
    ],
    dtype=np.float32,
)
UTM_CRS = "EPSG:32633"


@dataclass(frozen=True)
class LandcoverScene:
    """Paths of one generated land-cover scene."""

    s2: Path
    s1: Path
    dem: Path
    truth: Path


@dataclass(frozen=True)
class ChangePair:
    """Paths of one generated change-detection pair."""

    before: Path
    after: Path
    truth: Path


def fractal_noise(
    rng: np.random.Generator, shape: Tuple[int, int], beta: float = 3.0
) -> np.ndarray:
    """Zero-mean, unit-variance noise with a 1/f^beta power spectrum (larger beta: smoother)."""
    h, w = shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    amplitude = f ** (-beta / 2.0)
    amplitude[0, 0] = 0.0
    phase = rng.uniform(0, 2 * np.pi, amplitude.shape)
    field = np.fft.irfft2(amplitude * np.exp(1j * phase), s=shape)
    return ((field - field.mean()) / (field.std() + 1e-12)).astype(np.float32)


def _parcels(rng: np.random.Generator, shape: Tuple[int, int]) -> np.ndarray:
    """Label image of rectangular field parcels (rows of fields of random widths)."""
    h, w = shape
    labels = np.zeros(shape, dtype=np.int32)
    next_id = 1
    y = 0
    while y < h:
        strip = int(rng.integers(18, 60))
        x = 0
        while x < w:
            width = int(rng.integers(15, 70))
            labels[y : y + strip, x : x + width] = next_id
            next_id += 1
            x += width
        y += strip
    return labels


def landcover_map(rng: np.random.Generator, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Generate (classes uint8, dem float32 metres) for a size x size 10 m grid."""
    shape = (size, size)
    dem = 320 + 180 * fractal_noise(rng, shape, beta=3.8) + 8 * fractal_noise(rng, shape, 2.4)
    dem = dem.astype(np.float32)
    gy, gx = np.gradient(ndimage.uniform_filter(dem, 5), 10.0)
    slope = np.degrees(np.arctan(np.hypot(gx, gy)))
    steep = slope > np.percentile(slope, 90)
    flat = slope < np.percentile(slope, 40)
    classes = np.full(shape, GRASSLAND, dtype=np.uint8)

    # Fields: parcels of cropland (mostly) and grassland on the gentler ground.
    parcels = _parcels(rng, shape)
    crop_share = rng.uniform(0, 1, parcels.max() + 1) < 0.68
    classes[crop_share[parcels]] = CROPLAND

    # Forest on slopes and high ground, with ragged edges.
    wild = fractal_noise(rng, shape, beta=2.4)
    high = dem > np.percentile(dem, 58)
    classes[(high & (wild > -0.6)) | steep | (wild > 1.6)] = FOREST

    # Bare rock on the highest ridges.
    classes[(dem > np.percentile(dem, 96)) & (wild < 0.8)] = BARE

    # Towns: blobs on flat lowland, with a street grid.
    town = np.zeros(shape, dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    low_flat = (dem < np.percentile(dem, 45)) & flat
    candidates = np.argwhere(low_flat[::16, ::16]) * 16
    for _ in range(max(1, size // 250)):
        if len(candidates) == 0:
            break
        cy, cx = candidates[rng.integers(len(candidates))]
        radius = rng.uniform(size * 0.04, size * 0.08)
        town = np.maximum(town, np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2)))
    streets = ((yy.astype(int) % 23) < 2) | ((xx.astype(int) % 29) < 2)
    built = (town + 0.25 * wild) > 0.55
    classes[built] = BUILT
    classes[(town > 0.35) & streets & (classes != BUILT)] = BUILT

    # Water: basins (lowest ground) and a river along the valley lines.
    river_noise = fractal_noise(rng, shape, beta=3.2)
    river = (np.abs(river_noise) < 0.035) & (dem < np.percentile(dem, 70))
    river = ndimage.binary_dilation(river, iterations=2)
    lakes = dem < np.percentile(dem, 3.5)
    water = river | lakes
    classes[water] = WATER

    # Wetland on flat ground next to water.
    near_water = ndimage.binary_dilation(water, iterations=6) & ~water
    classes[near_water & flat & (wild < 0.7) & (classes != BUILT)] = WETLAND
    return classes, dem


def sentinel2(
    rng: np.random.Generator,
    classes: np.ndarray,
    gain: Optional[np.ndarray] = None,
    haze: float = 1.0,
) -> np.ndarray:
    """13-band reflectance x 10000 (uint16) for a class map."""
    h, w = classes.shape
    parcels = _parcels(rng, (h, w))
    parcel_gain = rng.normal(1.0, 0.07, (parcels.max() + 1, 13)).astype(np.float32)
    texture = 1.0 + 0.05 * fractal_noise(rng, (h, w), beta=2.0)
    image = S2_SIGNATURES[classes].transpose(2, 0, 1)  # (13, h, w)
    vegetation = np.isin(classes, [CROPLAND, GRASSLAND]).astype(np.float32)
    image = image * (1 + vegetation * (parcel_gain[parcels].transpose(2, 0, 1) - 1))
    image = image * texture[None]
    if gain is not None:
        image = image * gain[:, None, None]
    # Haze: an additive, smooth veil strongest in the blue/coastal bands.
    veil = np.clip(fractal_noise(rng, (h, w), beta=3.5) * 0.5 + 0.5, 0, None)
    veil_weight = np.array([1.0, 0.8, 0.55, 0.4, 0.3, 0.2, 0.15, 0.12, 0.1, 0.3, 0.0, 0.05, 0.03])
    image = image + haze * 180 * veil[None] * veil_weight[:, None, None]
    image = image * rng.normal(1.0, 0.03, image.shape)
    return np.clip(image, 1, 10000).astype(np.uint16)


def sentinel1(rng: np.random.Generator, classes: np.ndarray, dem: np.ndarray) -> np.ndarray:
    """VV, VH backscatter in dB (float32) with speckle and a slope term."""
    db = S1_SIGNATURES[classes].transpose(2, 0, 1).copy()
    _, gx = np.gradient(dem, 10.0)
    db += (3.0 * np.tanh(gx / 0.3))[None]  # slopes facing the sensor look brighter
    looks = 4.0
    speckle = rng.gamma(looks, 1.0 / looks, db.shape).astype(np.float32)
    linear = 10 ** (db / 10.0) * speckle
    return (10 * np.log10(np.maximum(linear, 1e-5))).astype(np.float32)


def _write(path: Path, data: np.ndarray, transform: Affine, crs: str, nodata, descriptions) -> None:
    profile = {
        "driver": "GTiff",
        "width": data.shape[-1],
        "height": data.shape[-2],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for index, text in enumerate(descriptions, start=1):
            dst.set_band_description(index, text)


def _resample(
    data: np.ndarray,
    src_transform: Affine,
    dst_transform: Affine,
    dst_shape,
    src_crs: str,
    dst_crs: str,
    resampling: Resampling,
    nodata,
) -> np.ndarray:
    out = np.full((data.shape[0], *dst_shape), nodata, dtype=data.dtype)
    for band in range(data.shape[0]):
        reproject(
            data[band],
            out[band],
            src_transform=src_transform,
            src_crs=src_crs,
            dst_transform=dst_transform,
            dst_crs=dst_crs,
            resampling=resampling,
            src_nodata=None,
            dst_nodata=nodata,
        )
    return out


def write_landcover_scene(
    out_dir: Path,
    size: int = 768,
    seed: int = 1,
    origin: Tuple[float, float] = (400000.0, 3100000.0),
) -> LandcoverScene:
    """Generate and write one land-cover scene; returns the file paths.

    Args:
        out_dir: folder to write into (created).
        size: edge of the 10 m grid in pixels.
        seed: random seed; the same seed gives the same files.
        origin: top-left corner in UTM 33N metres.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    classes, dem = landcover_map(rng, size)
    transform = from_origin(origin[0], origin[1], 10.0, 10.0)
    s2 = sentinel2(rng, classes)
    paths = LandcoverScene(
        out_dir / "s2.tif", out_dir / "s1.tif", out_dir / "dem.tif", out_dir / "landcover_truth.tif"
    )
    _write(paths.s2, s2, transform, UTM_CRS, 0, S2_BANDS)
    _write(paths.truth, classes[None], transform, UTM_CRS, NODATA_CLASS, ["land cover"])

    # Sentinel-1 at 20 m, footprint 200 m larger on every side than the optical grid.
    s1 = sentinel1(rng, classes, dem)
    s1_size = size // 2 + 20
    s1_transform = from_origin(origin[0] - 200, origin[1] + 200, 20.0, 20.0)
    s1_20 = _resample(
        s1,
        transform,
        s1_transform,
        (s1_size, s1_size),
        UTM_CRS,
        UTM_CRS,
        Resampling.average,
        np.float32(-9999),
    )
    _write(paths.s1, s1_20, s1_transform, UTM_CRS, -9999.0, S1_BANDS)

    # DEM at 1 arc-second in geographic coordinates, like Copernicus/SRTM tiles.
    bounds = rasterio.transform.array_bounds(size, size, transform)
    geo = CRS.from_epsg(4326)
    dem_transform, width, height = calculate_default_transform(
        UTM_CRS, geo, size, size, *bounds, resolution=1.0 / 3600.0
    )
    dem_geo = _resample(
        dem[None],
        transform,
        dem_transform,
        (height, width),
        UTM_CRS,
        "EPSG:4326",
        Resampling.bilinear,
        np.float32(-32768),
    )
    _write(paths.dem, dem_geo, dem_transform, "EPSG:4326", -32768.0, ["DEM"])
    return paths


CHANGE_KINDS = ("new built-up", "clearing", "new water")


def write_change_pair(
    out_dir: Path,
    size: int = 512,
    seed: int = 11,
    origin: Tuple[float, float] = (420000.0, 3080000.0),
) -> ChangePair:
    """Generate and write a before/after Sentinel-2 pair with known change.

    Args:
        out_dir: folder to write into (created).
        size: edge of the 10 m grid in pixels.
        seed: random seed.
        origin: top-left corner in UTM 33N metres.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    before_classes, _ = landcover_map(rng, size)
    after_classes = before_classes.copy()
    yy, xx = np.mgrid[0:size, 0:size]
    n_events = max(8, size // 20)
    for event in range(n_events):
        kind = CHANGE_KINDS[event % len(CHANGE_KINDS)]
        cy, cx = rng.integers(0, size, 2)
        ry, rx = rng.integers(8, max(10, size // 14), 2)
        blob = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        blob &= fractal_noise(rng, (size, size), beta=2.0) > -1.2
        if kind == "new built-up":
            target = blob & np.isin(before_classes, [CROPLAND, GRASSLAND])
            after_classes[target] = BUILT
        elif kind == "clearing":
            target = blob & (before_classes == FOREST)
            after_classes[target] = BARE
        else:
            target = blob & ~np.isin(before_classes, [BUILT])
            after_classes[target] = WATER
    change = (after_classes != before_classes).astype(np.uint8)
    transform = from_origin(origin[0], origin[1], 10.0, 10.0)
    before = sentinel2(rng, before_classes, haze=0.6)
    seasonal = rng.normal(1.0, 0.06, 13).astype(np.float32)  # phenology and sun angle: not change
    after = sentinel2(rng, after_classes, gain=seasonal, haze=1.3)
    paths = ChangePair(
        out_dir / "before_s2.tif", out_dir / "after_s2.tif", out_dir / "change_truth.tif"
    )
    _write(paths.before, before, transform, UTM_CRS, 0, S2_BANDS)
    _write(paths.after, after, transform, UTM_CRS, 0, S2_BANDS)
    _write(paths.truth, change[None], transform, UTM_CRS, NODATA_CLASS, ["change"])
    return paths


def class_fractions(classes: np.ndarray) -> Dict[str, float]:
    """Share of each class in a map, by name."""
    valid = classes[classes != NODATA_CLASS]
    return {name: float(np.mean(valid == i)) for i, name in enumerate(CLASS_NAMES)}


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--size", type=int, default=768, help="land-cover scene edge in pixels")
    parser.add_argument("--change-size", type=int, default=512, help="change pair edge in pixels")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    scene = write_landcover_scene(args.out_dir / "landcover", args.size, args.seed)
    pair = write_change_pair(args.out_dir / "change", args.change_size, args.seed + 10)
    with rasterio.open(scene.truth) as src:
        fractions = class_fractions(src.read(1))
    with rasterio.open(pair.truth) as src:
        changed = float(src.read(1).mean())
    sys.stdout.write(
        json.dumps(
            {
                "landcover": {k: str(v) for k, v in vars(scene).items()},
                "class_fractions": {k: round(v, 4) for k, v in fractions.items()},
                "change": {k: str(v) for k, v in vars(pair).items()},
                "changed_fraction": round(changed, 4),
            },
            indent=1,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
