"""A small labelled scene for training tests: S2 (13 bands), S1 (VV/VH) and a DEM whose values
follow three land-cover stripes (water, trees, built-up), and polygons with a text class field."""

import json
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

ORIGIN = (500000.0, 4500000.0)
SIZE = 96


def write_tif(path: Path, data: np.ndarray, descriptions=()) -> str:
    with rasterio.open(
        path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
        count=data.shape[0], dtype=data.dtype, crs="EPSG:32631",
        transform=from_origin(ORIGIN[0], ORIGIN[1], 10, 10),
    ) as dst:  # fmt: skip
        dst.write(data)
        for i, text in enumerate(descriptions, start=1):
            dst.set_band_description(i, text)
    return str(path)


def stripes(width: int = SIZE) -> np.ndarray:
    """Class of each column: three vertical stripes (water, trees, built)."""
    return np.repeat(np.arange(3), width // 3)[None, :].repeat(SIZE, axis=0)


def labelled_scene(folder: Path) -> dict:
    """S2 (13 bands), S1 (VV/VH) and a DEM whose values follow three land-cover stripes."""
    rng = np.random.default_rng(0)
    cls = stripes()
    s2_means = np.array(
        [[300] * 7 + [200, 200, 100, 50, 100, 80],  # water: dark, darker in NIR and SWIR
         [400] * 7 + [3000, 2800, 400, 60, 1500, 700],  # trees: bright NIR
         [1800] * 7 + [2200, 2200, 900, 80, 2600, 2400]],  # built: bright everywhere
        np.float32,
    )  # fmt: skip
    s2 = s2_means[cls].transpose(2, 0, 1) + rng.normal(0, 120, (13, SIZE, SIZE))
    s1 = np.array([[-20, -26], [-9, -15], [-4, -10]], np.float32)[cls].transpose(2, 0, 1)
    s1 = s1 + rng.normal(0, 1.0, s1.shape)
    dem = (np.array([100, 180, 140], np.float32)[cls] + rng.normal(0, 5, cls.shape))[None]
    names = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]
    return {
        "s2": write_tif(folder / "s2.tif", np.clip(s2, 1, 10000).astype(np.uint16), names),
        "s1": write_tif(folder / "s1.tif", s1.astype(np.float32), ("VV", "VH")),
        "dem": write_tif(folder / "dem.tif", dem.astype(np.float32), ("elevation",)),
    }


def polygons_file(path: Path, names=("Water", "trees", "built-up")) -> str:
    """One polygon per stripe, with a text class field as a user types it."""
    features = []
    stripe = SIZE // 3 * 10
    for i, name in enumerate(names):
        x0 = ORIGIN[0] + i * stripe + 10
        x1, y0, y1 = x0 + stripe - 20, ORIGIN[1] - SIZE * 10 + 10, ORIGIN[1] - 10
        ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
        features.append(
            {"type": "Feature", "properties": {"landuse": name},
             "geometry": {"type": "Polygon", "coordinates": [ring]}}
        )  # fmt: skip
    collection = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32631"}},
        "features": features,
    }
    path.write_text(json.dumps(collection))
    return str(path)
