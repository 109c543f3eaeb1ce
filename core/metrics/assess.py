"""Assessing a class map file against a reference, and the change visualisation.

:func:`assess_class_map` reads a class map and a reference raster or labelled polygons on the
same grid block by block into a confusion matrix; :func:`change_visualisation` draws the AMFNet
paper's TP/FP/FN/TN figure; :func:`change_label_map` reads 0/255 change masks as 0/1.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from .base import (
    CHANGE_FALSE_NEGATIVE,
    CHANGE_FALSE_POSITIVE,
    CHANGE_IGNORED,
    CHANGE_TRUE_NEGATIVE,
    CHANGE_TRUE_POSITIVE,
    ArrayLike,
    ConfusionMatrix,
    MetricsInputError,
    _to_numpy,
)
from .report import AccuracyReport, accuracy_report


def change_visualisation(
    prediction: ArrayLike,
    reference: ArrayLike,
    change_class: int = 1,
    ignore_index: Optional[int] = 255,
) -> np.ndarray:
    """The AMFNet paper's change figure: TP white, FP red, FN green, TN black.

    Args:
        prediction: Predicted class map ``[H, W]``.
        reference: Reference class map ``[H, W]``.
        change_class: Value of the change class in both maps (others count as no change).
        ignore_index: Reference or prediction value drawn grey (no label / nodata), or None.

    Returns:
        ``uint8`` array ``[H, W, 3]`` (RGB).

    Raises:
        MetricsInputError: The maps are not 2-D arrays of the same shape.
    """
    pred = _to_numpy(prediction)
    ref = _to_numpy(reference)
    if pred.shape != ref.shape or pred.ndim != 2:
        raise MetricsInputError(
            f"The change visualisation needs two 2-D maps of the same shape, got {pred.shape} "
            f"and {ref.shape}."
        )
    p = pred == change_class
    r = ref == change_class
    out = np.zeros((*pred.shape, 3), dtype=np.uint8)
    out[p & r] = CHANGE_TRUE_POSITIVE
    out[p & ~r] = CHANGE_FALSE_POSITIVE
    out[~p & r] = CHANGE_FALSE_NEGATIVE
    out[~p & ~r] = CHANGE_TRUE_NEGATIVE
    if ignore_index is not None:
        out[(pred == ignore_index) | (ref == ignore_index)] = CHANGE_IGNORED
    return out


def _category_names(path: str) -> Optional[list[str]]:
    """Class names stored in a class map (GDAL category names, as the engine writes them)."""
    try:
        from osgeo import gdal
    except ImportError:  # pragma: no cover - GDAL's Python bindings come with rasterio on Debian
        return None
    dataset = gdal.Open(str(path))
    if dataset is None:
        return None
    names = dataset.GetRasterBand(1).GetCategoryNames()
    return [str(n) for n in names] if names else None


def change_label_map(path: Union[str, Path]) -> Optional[dict[int, int]]:
    """How to read a reference change mask: 0/255 (LEVIR-CD, OSCD) means 0 no change, 255
    change; 0/1 masks are used as they are.

    Args:
        path: The reference raster.

    Returns:
        ``{0: 0, 255: 1}`` for a 0/255 mask, else None.

    Raises:
        InputFileError: The file cannot be read (missing, damaged).
    """
    import rasterio

    from ..integrity import read_failure
    from ..raster import READ_ERRORS, inspect_raster

    info = inspect_raster(str(path))
    step = max(1, max(info.width, info.height) // 512)
    shape = (max(1, info.height // step), max(1, info.width // step))
    try:
        with rasterio.open(str(path)) as src:
            sample = src.read(1, out_shape=shape)
    except READ_ERRORS as error:
        from rasterio.windows import Window

        raise read_failure(str(path), Window(0, 0, info.width, info.height), error) from None
    nodata = info.nodata
    values = set(np.unique(sample).tolist()) - ({nodata} if nodata is not None else set())
    if values and values <= {0, 255}:
        return {0: 0, 255: 1}
    return None


def assess_class_map(
    prediction: Union[str, Path],
    reference: Union[str, Path],
    label_field: Optional[str] = None,
    label_map: Optional[Mapping[Any, int]] = None,
    class_names: Optional[Sequence[str]] = None,
    ignore_index: int = 255,
    change_class: Optional[int] = None,
    visualisation: Optional[Union[str, Path]] = None,
    block_rows: int = 1024,
) -> AccuracyReport:
    """Assess a class map against a reference raster or labelled polygons.

    The reference is read on the class map's grid (nearest for a raster, whatever its CRS or
    pixel size; polygons are burnt onto it), block of rows by block of rows, so the memory use
    does not grow with the map. Pixels without reference label, and the map's nodata (255, or
    the file's nodata), are left out.

    Args:
        prediction: The class map (band 1), e.g. ``<name>_classes.tif`` from the engine.
        reference: A reference raster, or a vector file of labelled polygons (``label_field``).
        label_field: The polygons' class attribute.
        label_map: Reference value → class index (``ignore_index`` drops a value).
        class_names: Names in class order; default the map's category names, else ``class_N``
            for every value found.
        ignore_index: Value meaning "no label / no data".
        change_class: Index of the change class for a change map (adds the change scores).
        visualisation: Also write the AMFNet paper's red/green visualisation of a change map
            here (RGB GeoTIFF on the map's grid; needs ``change_class``).
        block_rows: Rows read at a time.

    Returns:
        The accuracy report; ``extra`` records the files.

    Raises:
        MetricsInputError: A value is outside the class table, or a visualisation was asked
            for without a change class.
        InputError: A file cannot be read or aligned (the engine's errors).
    """
    import rasterio
    from rasterio.windows import Window

    from ..datasets import VECTOR_EXTENSIONS, read_label_on_grid
    from ..integrity import read_failure
    from ..protection import ProtectedFiles, check_destinations
    from ..raster import READ_ERRORS, inspect_raster

    if visualisation is not None and change_class is None:
        raise MetricsInputError("The change visualisation needs the change class (e.g. 1).")
    if visualisation is not None:
        protected = ProtectedFiles().add_raster(str(prediction), f"the map {prediction}")
        if Path(reference).suffix.lower() in VECTOR_EXTENSIONS:
            protected.add_vector(str(reference), f"the reference {reference}")
        else:
            protected.add_raster(str(reference), f"the reference {reference}")
        check_destinations({"the change visualisation": str(visualisation)}, protected)
    info = inspect_raster(str(prediction))
    grid = info.grid
    pixel_grid = not info.georeferenced
    names = list(class_names) if class_names is not None else _category_names(str(prediction))
    size = len(names) if names else 256
    cm = ConfusionMatrix(size, ignore_index=ignore_index)
    nodata = info.nodata
    writer = None
    staged = (
        Path(visualisation).with_name(f".{Path(visualisation).name}.landfuse-partial")
        if visualisation is not None
        else None
    )
    done = False
    try:
        if staged is not None:
            profile = {
                "driver": "GTiff",
                "width": grid.width,
                "height": grid.height,
                "count": 3,
                "dtype": "uint8",
                "tiled": True,
                "compress": "deflate",
                "photometric": "RGB",
            }
            if not pixel_grid:
                profile.update(crs=grid.crs, transform=grid.transform)
            writer = rasterio.open(str(staged), "w", **profile)
        # Plain images (no georeferencing) are compared pixel for pixel, whole.
        whole = (
            read_label_on_grid(str(reference), grid, label_field, label_map, ignore_index, True)
            if pixel_grid
            else None
        )
        with rasterio.open(str(prediction)) as src:
            for row in range(0, grid.height, block_rows):
                rows = min(block_rows, grid.height - row)
                window = Window(0, row, grid.width, rows)
                try:
                    pred = src.read(1, window=window).astype(np.int64)
                except READ_ERRORS as error:
                    raise read_failure(str(prediction), window, error) from None
                if nodata is not None and nodata != ignore_index:
                    pred[pred == int(nodata)] = ignore_index
                if whole is not None:
                    ref = whole[row : row + rows]
                else:
                    ref = read_label_on_grid(
                        str(reference), grid.window_grid(window), label_field, label_map,
                        ignore_index,
                    )  # fmt: skip
                cm.update(pred, ref)
                if writer is not None and change_class is not None:
                    rgb = change_visualisation(pred, ref, change_class, ignore_index)
                    writer.write(np.moveaxis(rgb, -1, 0), window=window)
        done = True
    finally:
        if writer is not None:
            writer.close()
        if staged is not None and visualisation is not None:
            if done:
                os.replace(staged, visualisation)
            else:
                staged.unlink(missing_ok=True)  # nothing half-written under the user's name
    matrix = cm.matrix
    if not names:
        used = np.flatnonzero(matrix.sum(axis=0) + matrix.sum(axis=1))
        n = int(used.max()) + 1 if used.size else 1
        if change_class is not None:
            n = max(n, change_class + 1)
        matrix = matrix[:n, :n]
        names = [f"class_{i}" for i in range(n)]
    report = accuracy_report(matrix, names, change_class)
    return dataclasses.replace(
        report,
        ignored_pixels=cm.ignored,
        extra={
            "prediction": str(prediction),
            "reference": str(reference),
            "label_field": label_field,
            "visualisation": str(visualisation) if visualisation is not None else None,
        },
    )
