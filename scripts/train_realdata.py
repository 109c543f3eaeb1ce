"""Train and assess LandFuse models on the real sample data, next to classical baselines.

Issue 6, "Proven on real data". One command, deterministic for a seed, reading
``../shared/realdata`` in place (nothing is copied into the repository; the only derived files
are small GDAL VRTs and the run outputs, written under ``--out``):

1. **Land cover** (TerraMind / TerraMesh tiles: Sentinel-2 L1C 13 bands + Sentinel-1 RTC VV/VH
   + DEM, with the remapped Esri 10 m land-cover map): one tile is held out for testing, the
   other tiles are split by rows into training chips (top) and validation chips (bottom strip).
   AMM-FuseNet with three branches (LandFuse's lite CPU variant ``amm_fusenet_lite_s2_s1_dem``
   when the registry has it, else ``amm_fusenet_s2_s1_dem`` with ResNet-18 encoders) is trained
   with :func:`landfuse.core.training.train`, scored on the held-out tile with
   :func:`~landfuse.core.training.evaluate_weights`, and the same weights are run through the
   engine (:mod:`landfuse.core.engine`) over the held-out tile, whose class map is scored with
   :func:`~landfuse.core.metrics.assess_class_map`.
2. **Land-cover baseline**: a per-pixel random forest (scikit-learn) on exactly the training
   pixels of the deep model (same bands), scored on the same held-out tile.
3. **Change detection** (LEVIR-CD and DSIFN samples, RGB PNG pairs): AMFNet (``amfnet_rgb_levir``
   with a small encoder) is trained per data set on named training pairs, validated on a named
   pair and scored on named held-out pairs; the baseline is change-vector analysis (magnitude of
   the RGB difference) thresholded with Otsu's method on each held-out pair. The AMFNet paper's
   red/green visualisations of the held-out pairs are written as PNGs.
4. Learning curves (CSV + PNG from the training API), figures, ``summary.json`` and
   ``summary.md`` (the tables of docs/training.md) are written to ``--out``; with ``--docs`` the
   small PNGs are also copied to ``docs/img/training/``.

Usage::

    .venv/bin/python scripts/train_realdata.py                      # everything, ~15 min on CPU
    .venv/bin/python scripts/train_realdata.py --only change --cd-epochs 5
    .venv/bin/python scripts/train_realdata.py --docs               # also refresh docs/img/training

Sentinel-2 harmonisation: two TerraMind tiles (282D, 609U) carry the +1000 digital-number offset
that ESA's processing baseline 04.00 introduced (``RADIO_ADD_OFFSET = -1000``; the reprocessed
archive has it for older dates too), the other two do not (their B10 cirrus band reads 8-67).
A tile whose B10 median is above 500 gets a VRT that subtracts 1000 from every band, so all
tiles share one radiometric scale before the fixed training statistics are computed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import rasterio
import torch

from landfuse.core import datasets, engine, metrics, training
from landfuse.core.requests import LandCoverRequest, ModalityInput
from landfuse.core.training.baselines import (
    SKLEARN_MISSING,
    ChipSubset,
    balanced_weights,
    change_vector_analysis,
    labelled_pixels,
    otsu_threshold,  # noqa: F401 (the tests use it from here)
    predict_forest,
    sklearn_available,
)
from landfuse.core.training.baselines import fit_random_forest as _fit_forest
from landfuse.models.errors import LandFuseError
from landfuse.models.registry import ClassSpec, model_names

logger = logging.getLogger("train_realdata")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "realdata"
DEFAULT_OUT = REPO / "build" / "realdata"
DOCS_IMG = REPO / "docs" / "img" / "training"
#: Marks a folder as written by this script, so a re-run may replace it.
MARKER = ".train_realdata"

#: Land-cover models in order of preference: LandFuse's lite CPU variant of the three-branch
#: AMM-FuseNet when the registry has it, else the full-width network with a ResNet-18 encoder.
LANDCOVER_MODELS = ("amm_fusenet_lite_s2_s1_dem", "amm_fusenet_s2_s1_dem")
#: The RGB AMFNet (the registry has no lite RGB variant; ResNet-18 is the small encoder).
CHANGE_MODEL = "amfnet_rgb_levir"
TERRAMIND = "terramind_examples"
TERRAMIND_TILES = ("282D_485L_3_3", "38D_378R_2_3", "609U_541L_3_0", "637U_59R_1_3")
#: Modality folders in the model's branch order (S2, S1, DEM).
TERRAMIND_INPUTS = ("S2L1C", "S1RTC", "DEM")
S2_B10_INDEX = 10  # band 11 of the 13-band L1C stack: B10 (cirrus)
S2_OFFSET = 1000
#: A B10 median above this means the tile carries the +1000 offset (B10 is ~0-100 without it).
S2_OFFSET_DETECT = 500

#: The TerraMind LULC map (remapped Esri 10 m land cover, PROVENANCE.md B1): value 0 is no data,
#: values 1-9 are the classes. Colours are Esri's own class colours (the colour table of the
#: Esri / Impact Observatory 10 m land-cover rasters).
LULC_CLASSES: tuple[ClassSpec, ...] = (
    ClassSpec(0, "water", (65, 155, 223)),  # Esri 1, #419BDF
    ClassSpec(1, "trees", (57, 125, 73)),  # Esri 2, #397D49
    ClassSpec(2, "flooded vegetation", (122, 135, 198)),  # Esri 4, #7A87C6
    ClassSpec(3, "crops", (228, 150, 53)),  # Esri 5, #E49635
    ClassSpec(4, "built area", (196, 40, 27)),  # Esri 7, #C4281B
    ClassSpec(5, "bare ground", (165, 155, 143)),  # Esri 8, #A59B8F
    ClassSpec(6, "snow/ice", (168, 235, 255)),  # Esri 9, #A8EBFF
    ClassSpec(7, "clouds", (97, 97, 97)),  # Esri 10, #616161
    ClassSpec(8, "rangeland", (227, 226, 195)),  # Esri 11, #E3E2C3
)
IGNORE = 255
#: LULC file value -> class index (0 = no data is ignored).
LULC_LABEL_MAP: dict[int, int] = {0: IGNORE, **{v + 1: v for v in range(len(LULC_CLASSES))}}


class RealDataError(LandFuseError):
    """The real-data run cannot start as asked; the message says what to change."""


def default_landcover_model() -> str:
    """The first of :data:`LANDCOVER_MODELS` that the model registry holds."""
    available = model_names()
    return next((m for m in LANDCOVER_MODELS if m in available), LANDCOVER_MODELS[-1])


# ---------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class LandCoverSettings:
    """The land-cover experiment.

    Attributes:
        model: Registry name of the three-branch (S2, S1, DEM) land-cover network.
        test_tile: TerraMind tile held out for testing (never trained nor validated on).
        val_tile: A second tile held out for validation, or None to validate on the bottom
            ``val_rows`` rows of every training tile instead.
        val_rows: Height of the strip at the bottom of each tile: validation strip of the
            training tiles, local test area of the held-out tile.
        chip: Training chip edge (pixels, a multiple of 16).
        stride: Step between chips (overlap = chip - stride).
        encoder: ResNet of the three AMM-FuseNet branches.
        epochs: Training epochs.
        batch: Training batch size.
        learning_rate: SGD learning rate (published: 0.01, poly decay).
        bn_momentum: BatchNorm momentum (published 0.01 suits 50k iterations; a run of a few
            hundred steps needs torch's 0.1 for the running statistics to settle).
        max_train_chips: Use at most this many training chips (evenly spread), None for all.
        finetune_epochs: Epochs of the local fine-tuning experiment (0 skips it).
        finetune_lr: Learning rate of the fine-tuning.
        engine_tile: Tile edge of the engine run over the test tile.
        engine_overlap: Tile overlap of the engine run.
        rf_trees: Trees of the random forest baseline.
        rf_max_samples: Bootstrap sample size per tree, as a fraction of the training pixels.
    """

    model: str = dataclasses.field(default_factory=default_landcover_model)
    test_tile: str = "637U_59R_1_3"
    val_tile: Optional[str] = None
    val_rows: int = 64
    chip: int = 64
    stride: int = 32
    encoder: str = "resnet18"
    epochs: int = 40
    batch: int = 8
    learning_rate: float = 0.01
    bn_momentum: float = 0.1
    max_train_chips: Optional[int] = None
    finetune_epochs: int = 20
    finetune_lr: float = 0.005
    engine_tile: int = 64
    engine_overlap: int = 16
    rf_trees: int = 100
    rf_max_samples: Optional[float] = 0.5


@dataclass(frozen=True)
class ChangeSettings:
    """One change-detection experiment (one data set, named pairs per split).

    Attributes:
        name: Short name used for folders and figures (``levir``, ``dsifn``).
        folder: Sub-folder of the real-data root (``A/ B/ label/`` layout).
        train: Training pair file names.
        val: Validation pair file names.
        test: Held-out pair file names.
        model: Registry name of the RGB change network.
        chip: Training chip edge (a multiple of 32).
        stride: Step between training chips.
        encoder: ResNet of the shared AMFNet encoder.
        epochs: Training epochs.
        batch: Training batch size.
        learning_rate: Adam learning rate (published: 1e-4 over 200 epochs).
        monitor: Validation score that picks the best epoch. Kappa, not the published change
            F1: on one small validation pair, F1 rewards marking everything as change (kappa
            is 0 for any all-one-class map).
        max_train_chips: Use at most this many training chips, None for all.
        balance: Weight the loss by class (the square root of the inverse class frequency of
            the training chips, as the Train tab does by default).
    """

    name: str
    folder: str
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    model: str = CHANGE_MODEL
    chip: int = 128
    stride: int = 64
    encoder: str = "resnet18"
    epochs: int = 40
    batch: int = 4
    learning_rate: float = 1e-3
    monitor: str = "kappa"
    max_train_chips: Optional[int] = None
    balance: bool = True


#: LEVIR-CD samples: the file names keep LEVIR-CD's own split, which is used as it is.
LEVIR = ChangeSettings(
    name="levir",
    folder="levir_cd_samples",
    train=("train_36_0512_0512.png", "train_386_0512_0768.png", "train_412_0512_0768.png"),
    val=("val_27_0000_0256.png",),
    test=(
        "test_121_0768_0256.png",
        "test_2_0000_0000.png",
        "test_2_0000_0512.png",
        "test_7_0256_0512.png",
    ),
)
#: DSIFN samples carry no split: the last two by name are held out, 3_4 (16 % changed)
#: validates. 4_4 (65 % changed) trains rather than validates: on a pair that is mostly
#: change, a network that marks everything as change scores well.
DSIFN = ChangeSettings(
    name="dsifn",
    folder="dsifn_cd_samples",
    train=("0_2.png", "1_1.png", "2_4.png", "4_4.png"),
    val=("3_4.png",),
    test=("5_3.png", "6_3.png"),
)


# ---------------------------------------------------------------------------------------------
# Helpers


def prepare_folder(path: Path) -> Path:
    """Create an empty output folder, replacing one this script wrote before.

    Raises:
        RealDataError: The folder exists and was not written by this script.
    """
    if path.exists():
        if not (path / MARKER).exists():
            raise RealDataError(
                f"{path} exists and was not written by train_realdata.py; choose another --out."
            )
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / MARKER).write_text("written by scripts/train_realdata.py\n", encoding="utf-8")
    return path


def spread(indices: Sequence[int], limit: Optional[int]) -> list[int]:
    """At most ``limit`` of ``indices``, evenly spread (all of them when ``limit`` is None)."""
    items = list(indices)
    if limit is None or limit >= len(items):
        return items
    picks = np.linspace(0, len(items) - 1, max(1, limit)).round().astype(int)
    return [items[i] for i in sorted(set(picks.tolist()))]


def report_row(report: metrics.AccuracyReport) -> dict[str, Any]:
    """The scores of a report that the summary tables show (JSON-ready)."""
    row: dict[str, Any] = {
        "oa": report.overall_accuracy,
        "kappa": report.kappa,
        "miou": report.mean_iou,
        "fw_iou": report.frequency_weighted_iou,
        "per_class_iou": dict(zip(report.class_names, report.iou)),
        "per_class_f1": dict(zip(report.class_names, report.f1)),
        "reference_pixels": dict(
            zip(report.class_names, report.confusion_matrix.sum(axis=1).tolist())
        ),
        "predicted_pixels": dict(
            zip(report.class_names, report.confusion_matrix.sum(axis=0).tolist())
        ),
    }
    if report.change is not None:
        row.update(
            change_precision=report.change.precision,
            change_recall=report.change.recall,
            change_f1=report.change.f1,
            change_iou=report.change.iou,
        )
    return metrics.to_jsonable(row)


def model_size(model: torch.nn.Module) -> int:
    """Number of parameters of a network."""
    return int(sum(p.numel() for p in model.parameters()))


def training_summary(result: training.TrainingResult, seconds: float) -> dict[str, Any]:
    """What docs/training.md reports about one training run."""
    return {
        "weights": str(result.weights_path),
        "sha256": result.sha256,
        "encoder": result.spec.encoder,
        "parameters": model_size(result.model),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "monitor": result.monitor,
        "best_validation_score": result.best_score,
        "train_seconds": round(seconds, 1),
        "log": str(result.log_path),
        "curves": str(result.plot_path) if result.plot_path else None,
        "history": metrics.to_jsonable(list(result.history)),
    }


# ---------------------------------------------------------------------------------------------
# Land cover


def s2_has_offset(path: Path) -> bool:
    """Whether a 13-band Sentinel-2 L1C tile carries the +1000 DN offset (B10 median > 500)."""
    with rasterio.open(path) as src:
        b10 = src.read(S2_B10_INDEX + 1)
    return bool(np.median(b10) > S2_OFFSET_DETECT)


def harmonised_s2(path: Path, workdir: Path) -> Path:
    """The Sentinel-2 tile on the common scale: the file itself, or a VRT subtracting 1000.

    Args:
        path: 13-band L1C GeoTIFF.
        workdir: Folder for the VRT.

    Returns:
        The path to read.
    """
    if not s2_has_offset(path):
        return path
    from osgeo import gdal

    gdal.UseExceptions()
    target = workdir / f"{path.stem}_S2L1C_minus{S2_OFFSET}.vrt"
    lo, hi = S2_OFFSET, S2_OFFSET + 10000
    # A linear rescale of [1000, 11000] to [0, 10000] is a pure offset of -1000 (ScaleRatio 1);
    # the VRT refers to the original file, nothing is copied.
    dataset = gdal.Translate(
        str(target),
        str(path.resolve()),
        format="VRT",
        scaleParams=[[lo, hi, lo - S2_OFFSET, hi - S2_OFFSET]],
    )
    del dataset  # closing the dataset writes the VRT
    logger.info("%s carries the +%d offset: reading it through %s.", path.name, S2_OFFSET, target)
    return target


def terramind_scene(root: Path, stem: str, workdir: Path) -> datasets.RasterScene:
    """One TerraMind location as a training scene (S2 harmonised, S1, DEM; LULC labels)."""
    base = root / TERRAMIND
    s2, s1, dem = (base / folder / f"{stem}.tif" for folder in TERRAMIND_INPUTS)
    for path in (s2, s1, dem, base / "LULC" / f"{stem}.tif"):
        if not path.is_file():
            raise RealDataError(f"Missing {path}; check --data (the shared real-data folder).")
    return datasets.RasterScene(
        inputs=(str(harmonised_s2(s2, workdir)), str(s1), str(dem)),
        label=str(base / "LULC" / f"{stem}.tif"),
        label_map=LULC_LABEL_MAP,
        name=stem,
    )


@dataclass
class LandCoverData:
    """The land-cover splits.

    Attributes:
        train: Training chips (other tiles, above their validation strips).
        val: Validation chips (the strips, or the validation tile).
        test: The held-out tile as one sample of its full size.
        local_train: Chips of the held-out tile above its bottom strip (the local fine-tuning
            experiment only; the main model never sees them).
        local_first_row: First row of the held-out tile's bottom strip (the local test area).
        train_tiles: Names of the training tiles.
        description: One line for the weights' provenance.
    """

    train: ChipSubset
    val: ChipSubset
    test: datasets.RasterChipDataset
    local_train: ChipSubset
    local_first_row: int
    train_tiles: tuple[str, ...]
    description: str


def split_by_rows(
    chips: datasets.RasterChipDataset, strip_rows: int
) -> tuple[list[int], list[int]]:
    """Chips wholly above, and wholly inside, the bottom ``strip_rows`` rows of their scene.

    Chips that cross the boundary are in neither list, so no pixel is on both sides.

    Returns:
        ``(indices above, indices in the strip)``.
    """
    above, strip = [], []
    for i in range(len(chips)):
        scene, window = chips.chip(i)
        boundary = chips.grid(chips.scenes.index(scene)).height - strip_rows
        top = int(window.row_off)
        if top + int(window.height) <= boundary:
            above.append(i)
        elif top >= boundary:
            strip.append(i)
    return above, strip


def landcover_data(root: Path, settings: LandCoverSettings, workdir: Path) -> LandCoverData:
    """Cut the training, validation and test data from the TerraMind tiles.

    Without ``val_tile``, every training tile gives the chips wholly in its top
    ``224 - val_rows`` rows to training and those wholly in the bottom ``val_rows`` rows to
    validation (:func:`split_by_rows`). The test tile is one sample of its full size; its chips
    above the same strip are kept apart for the local fine-tuning experiment.

    Raises:
        RealDataError: Unknown tile names, or a strip smaller than a chip.
    """
    tiles = list(TERRAMIND_TILES)
    for name in (settings.test_tile, settings.val_tile):
        if name is not None and name not in tiles:
            raise RealDataError(f"Unknown TerraMind tile {name}; use one of {', '.join(tiles)}.")
    if settings.val_tile == settings.test_tile:
        raise RealDataError("The validation tile must differ from the test tile.")
    if settings.val_rows < settings.chip:
        raise RealDataError(
            f"The bottom strip ({settings.val_rows} rows) is smaller than a chip "
            f"({settings.chip}); raise --lc-val-rows or lower --lc-chip."
        )
    train_tiles = tuple(t for t in tiles if t not in (settings.test_tile, settings.val_tile))
    scenes = [terramind_scene(root, t, workdir) for t in train_tiles]
    chips = datasets.RasterChipDataset(
        scenes, settings.chip, settings.stride, min_labelled_fraction=1.0, preload=True
    )
    if settings.val_tile is not None:
        train_idx = list(range(len(chips)))
        val_base = datasets.RasterChipDataset(
            [terramind_scene(root, settings.val_tile, workdir)], settings.chip, settings.chip,
            preload=True,
        )  # fmt: skip
        val = ChipSubset(val_base, range(len(val_base)))
        how = f"validation tile {settings.val_tile}"
    else:
        train_idx, val_idx = split_by_rows(chips, settings.val_rows)
        val = ChipSubset(chips, val_idx)
        how = f"validation: the bottom {settings.val_rows} rows of each training tile"
    train = ChipSubset(chips, spread(train_idx, settings.max_train_chips))
    test_scene = terramind_scene(root, settings.test_tile, workdir)
    with rasterio.open(test_scene.label) as src:
        height, size = src.height, min(src.width, src.height)
    test = datasets.RasterChipDataset([test_scene], size - size % 16, preload=True)
    local = datasets.RasterChipDataset(
        [test_scene], settings.chip, settings.stride, min_labelled_fraction=1.0, preload=True
    )
    local_idx, _ = split_by_rows(local, settings.val_rows)
    description = (
        f"TerraMind tiles {', '.join(train_tiles)} (chips {settings.chip} px, stride "
        f"{settings.stride}); {how}; test tile {settings.test_tile} held out."
    )
    return LandCoverData(
        train=train,
        val=val,
        test=test,
        local_train=ChipSubset(local, spread(local_idx, settings.max_train_chips)),
        local_first_row=height - settings.val_rows,
        train_tiles=train_tiles,
        description=description,
    )


def pixels_of(dataset: datasets.LabelledDataset) -> tuple[np.ndarray, np.ndarray]:
    """Every labelled pixel of a dataset once (the random forest's training pixels)."""
    return labelled_pixels(dataset, IGNORE)


def fit_random_forest(
    x: np.ndarray, y: np.ndarray, trees: int, max_samples: Optional[float], seed: int,
    threads: int,
) -> Any:  # fmt: skip
    """The per-pixel random forest of :mod:`landfuse.core.training.baselines`.

    Raises:
        RealDataError: scikit-learn is missing.
    """
    if not sklearn_available():
        raise RealDataError(SKLEARN_MISSING)
    return _fit_forest(x, y, trees, max_samples, seed, threads)


def score_maps(
    predictions: Sequence[np.ndarray], references: Sequence[np.ndarray], first_row: int = 0
) -> metrics.AccuracyReport:
    """The accuracy report of class maps against their references, from row ``first_row`` on."""
    cm = metrics.ConfusionMatrix(len(LULC_CLASSES), IGNORE)
    for predicted, reference in zip(predictions, references):
        cm.update(predicted[first_row:], reference[first_row:])
    return metrics.accuracy_report(cm, [c.name for c in LULC_CLASSES])


def labels_of(dataset: datasets.LabelledDataset) -> list[np.ndarray]:
    """The label map of every sample."""
    return [dataset.read(i).label for i in range(len(dataset))]


def deep_predictions(weights: Path, dataset: datasets.LabelledDataset) -> list[np.ndarray]:
    """A weights file's class maps of every sample (through ``evaluate_weights``)."""
    maps: dict[str, np.ndarray] = {}

    def keep(name: str, predicted: np.ndarray, reference: np.ndarray) -> None:
        maps[name] = predicted.astype(np.int64)

    training.evaluate_weights(weights, dataset, device="cpu", batch_size=1, on_prediction=keep)
    return [maps[name] for name in dataset.names]


def class_signatures(scenes: Sequence[datasets.RasterScene]) -> dict[str, Any]:
    """Mean NDVI, red, NIR, SWIR-1 and backscatter of every class of every tile.

    They show what a model learns from and where the held-out tile differs (the inputs as the
    models read them: harmonised Sentinel-2 digital numbers, S1 in dB).
    """
    out: dict[str, Any] = {}
    for scene in scenes:
        with rasterio.open(scene.inputs[0]) as src:
            s2 = src.read().astype(np.float64)
        with rasterio.open(scene.inputs[1]) as src:
            s1 = src.read().astype(np.float64)
        with rasterio.open(scene.label) as src:
            label = datasets.remap_labels(src.read(1), LULC_LABEL_MAP, scene.label)
        red, nir, swir = s2[3], s2[7], s2[11]  # B04, B08, B11 of the 13-band stack
        ndvi = (nir - red) / np.maximum(nir + red, 1.0)
        rows = {}
        for c in LULC_CLASSES:
            mask = label == c.value
            if mask.any():
                rows[c.name] = {
                    "pixels": int(mask.sum()),
                    "ndvi": round(float(ndvi[mask].mean()), 2),
                    "b04": round(float(red[mask].mean())),
                    "b08": round(float(nir[mask].mean())),
                    "b11": round(float(swir[mask].mean())),
                    "vv_db": round(float(s1[0][mask].mean()), 1),
                    "vh_db": round(float(s1[1][mask].mean()), 1),
                }
        out[scene.title] = rows
    return out


def run_engine_on_tile(
    model: str, weights: Path, scene: datasets.RasterScene, out: Path, tile: int, overlap: int
) -> tuple[Path, dict[str, Any]]:
    """Map a TerraMind tile with the engine, as a user would (tiles, blending, GeoTIFF).

    Returns:
        ``(class map path, the run report)``.
    """
    keys = ("s2", "s1", "dem")
    request = LandCoverRequest(
        inputs=tuple(ModalityInput(k, str(p)) for k, p in zip(keys, scene.inputs)),
        model=model, weights=str(weights), output_dir=str(out), tile=tile,
        overlap=overlap, batch=4, device="cpu", precision="fp32",
        outputs=("classes", "confidence"), name=f"landcover_{scene.title}", cog=False,
        overwrite=True,
    )  # fmt: skip
    result = engine.run(request)
    return Path(result.outputs["classes"]), result.report


def _landcover_recipe(
    settings: LandCoverSettings, epochs: int, lr: float
) -> training.TrainingRecipe:
    return training.recipe_for(
        settings.model,
        epochs=epochs,
        max_iterations=None,
        batch_size=settings.batch,
        learning_rate=lr,
        bn_momentum=settings.bn_momentum,
        validation_batch_size=settings.batch,
    )


def train_landcover(
    root: Path,
    out: Path,
    settings: LandCoverSettings,
    seed: int = 0,
    threads: int = 1,
    command: str = "",
    keep_checkpoint: bool = False,
) -> dict[str, Any]:
    """The land-cover experiment: deep model (three ways of scoring) and random forest.

    Then, with ``settings.finetune_epochs``, the local experiment: the deep model fine-tuned on
    the held-out tile's top rows and the forest refitted with those pixels added, both scored
    on the tile's bottom strip (which neither has seen).

    Args:
        root: The real-data folder.
        out: Output folder of this experiment (replaced if this script wrote it).
        settings: Sizes, epochs, held-out tile.
        seed: Seed of the training and of the forest.
        threads: CPU threads of the random forest.
        command: The command line (provenance in the weights).
        keep_checkpoint: Keep the resumable checkpoints (model + optimiser, about twice the
            weights file); by default they are removed once the weights are written.

    Returns:
        The summary (JSON-ready) with paths, times and every score.
    """
    out = prepare_folder(out)
    work = out / "vrt"
    work.mkdir()
    data = landcover_data(root, settings, work)
    logger.info(
        "Land cover: %d training chips, %d validation chips, test tile %s.",
        len(data.train), len(data.val), settings.test_tile,
    )  # fmt: skip
    config = training.TrainingConfig(
        model=settings.model,
        output_dir=str(out / "run"),
        recipe=_landcover_recipe(settings, settings.epochs, settings.learning_rate),
        encoder=settings.encoder,
        classes=LULC_CLASSES,
        seed=seed,
        device="cpu",
        data_description=data.description,
        command=command,
    )
    started = time.monotonic()
    result = training.train(config, data.train, data.val)
    train_s = time.monotonic() - started
    if not keep_checkpoint:
        result.checkpoint_path.unlink(missing_ok=True)

    # 1. The weights file on the held-out tile and on the validation strips, without the engine.
    started = time.monotonic()
    deep_test = training.evaluate_weights(result.weights_path, data.test, device="cpu")
    deep_val = training.evaluate_weights(
        result.weights_path, data.val, device="cpu", batch_size=settings.batch
    )
    eval_s = time.monotonic() - started
    # 2. The engine over the held-out tile, and its class map against the LULC raster.
    started = time.monotonic()
    test_scene = data.test.scenes[0]
    class_map, run_report = run_engine_on_tile(
        settings.model, result.weights_path, test_scene, out / "engine", settings.engine_tile,
        settings.engine_overlap,
    )  # fmt: skip
    engine_s = time.monotonic() - started
    engine_test = metrics.assess_class_map(
        class_map,
        test_scene.label,
        label_map=LULC_LABEL_MAP,
        class_names=[c.name for c in LULC_CLASSES],
        ignore_index=IGNORE,
    )
    metrics.write_report_json(engine_test, out / "engine_assessment.json")
    metrics.write_confusion_csv(engine_test, out / "engine_confusion_matrix.csv")
    metrics.write_confusion_csv(deep_test, out / "deep_test_confusion_matrix.csv")
    # 3. The baseline on the same pixels and bands.
    x, y = pixels_of(data.train)
    started = time.monotonic()
    forest = fit_random_forest(x, y, settings.rf_trees, settings.rf_max_samples, seed, threads)
    rf_fit_s = time.monotonic() - started
    test_labels = labels_of(data.test)
    rf_test_maps = predict_forest(forest, data.test)
    rf_test = score_maps(rf_test_maps, test_labels)
    rf_val = score_maps(predict_forest(forest, data.val), labels_of(data.val))
    metrics.write_confusion_csv(rf_test, out / "rf_test_confusion_matrix.csv")
    summary: dict[str, Any] = {
        "model": settings.model,
        "settings": dataclasses.asdict(settings),
        "data": {
            "train_tiles": list(data.train_tiles),
            "test_tile": settings.test_tile,
            "train_chips": len(data.train),
            "val_chips": len(data.val),
            "description": data.description,
            "harmonised_s2": sorted(p.name for p in work.glob("*.vrt")),
        },
        "deep": {
            **training_summary(result, train_s),
            "eval_seconds": round(eval_s, 1),
            "engine_seconds": round(engine_s, 1),
            "engine_timings_s": run_report.get("timings_s"),
            "val": report_row(deep_val),
            "test_evaluate_weights": report_row(deep_test),
            "test_engine": report_row(engine_test),
            "engine_class_map": str(class_map),
        },
        "random_forest": {
            "training_pixels": len(y),
            "features": int(x.shape[1]),
            "trees": settings.rf_trees,
            "max_samples": settings.rf_max_samples,
            "fit_seconds": round(rf_fit_s, 1),
            "val": report_row(rf_val),
            "test": report_row(rf_test),
        },
        "signatures": class_signatures([*data.train.base.scenes, test_scene]),
    }
    # 4. Local experiment: a few labels of the new place (the AMM-FuseNet paper's point that
    # fine-tuning needs little data). Scored on the bottom strip only, which neither saw.
    finetuned_map: Optional[np.ndarray] = None
    if settings.finetune_epochs > 0:
        first = data.local_first_row
        ft_config = dataclasses.replace(
            config,
            output_dir=str(out / "finetune"),
            recipe=_landcover_recipe(settings, settings.finetune_epochs, settings.finetune_lr),
            finetune_from=str(result.weights_path),
            data_description=(
                f"Fine-tuned on {settings.test_tile} rows 0-{first - 1} from "
                f"{result.weights_path.name}."
            ),
        )
        started = time.monotonic()
        tuned = training.train(ft_config, data.local_train)
        ft_s = time.monotonic() - started
        if not keep_checkpoint:
            tuned.checkpoint_path.unlink(missing_ok=True)
        finetuned_map = deep_predictions(tuned.weights_path, data.test)[0]
        before_map = deep_predictions(result.weights_path, data.test)[0]
        lx, ly = pixels_of(data.local_train)
        local_forest = fit_random_forest(
            np.concatenate([x, lx]), np.concatenate([y, ly]), settings.rf_trees,
            settings.rf_max_samples, seed, threads,
        )  # fmt: skip
        summary["local"] = {
            "strip_first_row": first,
            "local_chips": len(data.local_train),
            "local_pixels": len(ly),
            "finetune": training_summary(tuned, ft_s),
            "deep_before": report_row(score_maps([before_map], test_labels, first)),
            "deep_finetuned": report_row(score_maps([finetuned_map], test_labels, first)),
            "rf_before": report_row(score_maps(rf_test_maps, test_labels, first)),
            "rf_with_local": report_row(
                score_maps(predict_forest(local_forest, data.test), test_labels, first)
            ),
        }
    with rasterio.open(class_map) as src:
        engine_map = src.read(1)
    figure = landcover_figure(
        test_scene, engine_map, rf_test_maps[0], finetuned_map, data.local_first_row,
        out / "landcover_test_tile.png",
    )  # fmt: skip
    summary["figure"] = str(figure) if figure else None
    _write_json(summary, out / "summary.json")
    return summary


# ---------------------------------------------------------------------------------------------
# Change detection


def _change_chips(
    root: Path, names: Sequence[str], chip: int, stride: int
) -> datasets.RasterChipDataset:
    """Training chips of named pairs (paired by name by the LEVIR-CD reader, cut like rasters)."""
    pairs = datasets.LevirCDDataset(root, names=list(names))
    scenes = []
    for i, name in enumerate(pairs.names):
        files = pairs.files(i)
        scenes.append(
            datasets.RasterScene(
                inputs=(str(files["A"]), str(files["B"])),
                label=str(files["label"]),
                label_map={0: 0, 255: 1},
                name=Path(name).stem,
            )
        )
    return datasets.RasterChipDataset(scenes, chip, stride, preload=True)


def train_change(
    root: Path,
    out: Path,
    settings: ChangeSettings,
    seed: int = 0,
    command: str = "",
    keep_checkpoint: bool = False,
) -> dict[str, Any]:
    """One change experiment: AMFNet on named pairs, CVA + Otsu on the same held-out pairs.

    Args:
        root: The real-data folder.
        out: Output folder of this experiment (replaced if this script wrote it).
        settings: Data set, named splits, sizes, epochs.
        seed: Seed of the training.
        command: The command line (provenance in the weights).
        keep_checkpoint: Keep the resumable checkpoint (removed by default).

    Returns:
        The summary (JSON-ready) with paths, times and the scores of both methods.
    """
    out = prepare_folder(out)
    data_root = root / settings.folder
    if not data_root.is_dir():
        raise RealDataError(f"Missing {data_root}; check --data.")
    chips = _change_chips(data_root, settings.train, settings.chip, settings.stride)
    train_set = ChipSubset(chips, spread(range(len(chips)), settings.max_train_chips))
    val_set = datasets.LevirCDDataset(data_root, names=list(settings.val))
    test_set = datasets.LevirCDDataset(data_root, names=list(settings.test))
    recipe = training.recipe_for(
        settings.model,
        epochs=settings.epochs,
        max_iterations=None,
        batch_size=settings.batch,
        learning_rate=settings.learning_rate,
        validation_batch_size=1,
        monitor=settings.monitor,
        class_weights=balanced_weights(chips, train_set.indices, 2) if settings.balance else (),
    )
    config = training.TrainingConfig(
        model=settings.model,
        output_dir=str(out / "run"),
        recipe=recipe,
        encoder=settings.encoder,
        seed=seed,
        device="cpu",
        data_description=(
            f"{settings.folder}: train {', '.join(settings.train)} (chips {settings.chip} px, "
            f"stride {settings.stride}); val {', '.join(settings.val)}; held out "
            f"{', '.join(settings.test)}."
        ),
        command=command,
    )
    started = time.monotonic()
    result = training.train(config, train_set, val_set)
    train_s = time.monotonic() - started
    if not keep_checkpoint:
        result.checkpoint_path.unlink(missing_ok=True)

    predictions: dict[str, np.ndarray] = {}

    def keep(name: str, predicted: np.ndarray, reference: np.ndarray) -> None:
        predictions[name] = predicted.astype(np.int64)

    started = time.monotonic()
    deep = training.evaluate_weights(
        result.weights_path, test_set, device="cpu", batch_size=1, on_prediction=keep
    )
    eval_s = time.monotonic() - started
    names = [c.name for c in result.spec.classes]
    cva_cm = metrics.ConfusionMatrix(2, IGNORE)
    per_pair: list[dict[str, Any]] = []
    vis_dir = out / "visualisations"
    vis_dir.mkdir()
    panels = []
    for i, name in enumerate(test_set.names):
        sample = test_set.read(i)
        before, after = sample.inputs
        reference = sample.label
        cva, threshold = change_vector_analysis(before, after)
        cva_cm.update(cva, reference)
        deep_pred = predictions[name]
        stem = Path(name).stem
        deep_vis = metrics.change_visualisation(deep_pred, reference)
        cva_vis = metrics.change_visualisation(cva, reference)
        _write_png(deep_vis, vis_dir / f"{settings.name}_{stem}_amfnet.png")
        _write_png(cva_vis, vis_dir / f"{settings.name}_{stem}_cva.png")
        panels.append((stem, before, after, reference, deep_vis, cva_vis))
        pair_row = {"pair": name, "changed_fraction": float((reference == 1).mean())}
        for method, pred in (("amfnet", deep_pred), ("cva", cva)):
            cm = metrics.ConfusionMatrix(2, IGNORE)
            cm.update(pred, reference)
            scores = metrics.change_metrics(cm)
            pair_row[method] = metrics.to_jsonable(
                {"precision": scores.precision, "recall": scores.recall, "f1": scores.f1,
                 "iou": scores.iou}
            )  # fmt: skip
        pair_row["cva_threshold"] = round(threshold, 2)
        per_pair.append(pair_row)
    cva = metrics.accuracy_report(cva_cm, names, change_class=1)
    figure = change_figure(panels, out / f"change_{settings.name}_test_pairs.png")
    summary = {
        "model": settings.model,
        "settings": dataclasses.asdict(settings),
        "data": {"train_chips": len(train_set), "folder": settings.folder},
        "deep": {
            **training_summary(result, train_s),
            "eval_seconds": round(eval_s, 1),
            "test": report_row(deep),
        },
        "cva_otsu": {"test": report_row(cva)},
        "per_pair": per_pair,
        "visualisations": sorted(str(p) for p in vis_dir.glob("*.png")),
        "figure": str(figure) if figure else None,
    }
    _write_json(summary, out / "summary.json")
    return summary


# ---------------------------------------------------------------------------------------------
# Figures and files


def _write_json(data: Any, path: Path) -> None:
    path.write_text(json.dumps(metrics.to_jsonable(data), indent=2) + "\n", encoding="utf-8")


def _write_png(rgb: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(path, optimize=True)


def _stretch(rgb: np.ndarray) -> np.ndarray:
    """``[3, H, W]`` values to an 8-bit ``[H, W, 3]`` image with a 2-98 % stretch per band."""
    out = np.empty((*rgb.shape[1:], 3), dtype=np.uint8)
    for b in range(3):
        lo, hi = np.percentile(rgb[b], (2, 98))
        out[..., b] = (np.clip((rgb[b] - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
    return out


def _colour(classes: np.ndarray) -> np.ndarray:
    palette = np.zeros((256, 3), dtype=np.uint8)
    for c in LULC_CLASSES:
        palette[c.value] = c.color
    return palette[np.clip(classes, 0, 255)]


def _figure() -> Any:
    """A matplotlib figure on an Agg canvas (no pyplot, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure()
    FigureCanvasAgg(figure)  # attaches itself: figure.savefig draws with Agg
    return figure


def landcover_figure(
    scene: datasets.RasterScene,
    engine_map: np.ndarray,
    rf_map: np.ndarray,
    finetuned_map: Optional[np.ndarray],
    first_row: int,
    path: Path,
) -> Optional[Path]:
    """Held-out tile: S2 true colour, reference, AMM-FuseNet (engine), forest, fine-tuned."""
    try:
        figure = _figure()
    except ImportError:
        logger.warning("matplotlib is missing: no land-cover figure.")
        return None
    from matplotlib.patches import Patch

    with rasterio.open(scene.inputs[0]) as src:
        rgb = src.read((4, 3, 2)).astype(np.float32)
    with rasterio.open(scene.label) as src:
        reference = datasets.remap_labels(src.read(1), LULC_LABEL_MAP, scene.label)
    panels = [
        ("Sentinel-2 (B4, B3, B2)", _stretch(rgb)),
        ("Reference (LULC)", _colour(reference)),
        ("AMM-FuseNet (engine)", _colour(engine_map)),
        ("Random forest", _colour(rf_map)),
    ]
    maps = [reference, engine_map, rf_map]
    if finetuned_map is not None:
        panels.append(("Fine-tuned above the line", _colour(finetuned_map)))
        maps.append(finetuned_map)
    figure.set_size_inches(2.4 * len(panels), 3.1)
    for i, (title, image) in enumerate(panels):
        axis = figure.add_subplot(1, len(panels), i + 1)
        axis.imshow(image, interpolation="nearest")
        if i == len(panels) - 1 and finetuned_map is not None:
            # Rows above the line were labelled for fine-tuning; the scores use those below.
            axis.axhline(first_row - 0.5, color="black", linestyle="--", linewidth=1)
        axis.set_title(title, fontsize=9)
        axis.set_axis_off()
    present = set().union(*(np.unique(m).tolist() for m in maps))
    handles = [
        Patch(color=np.array(c.color) / 255, label=c.name)
        for c in LULC_CLASSES
        if c.value in present
    ]
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8,
                  frameon=False)  # fmt: skip
    figure.subplots_adjust(left=0.01, right=0.99, top=0.84, bottom=0.12, wspace=0.04)
    figure.suptitle(f"Held-out tile {scene.title}", fontsize=10)
    figure.savefig(str(path), dpi=90)
    return path


def change_figure(
    panels: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    path: Path,
) -> Optional[Path]:
    """Held-out pairs, one row each: before, after, reference, AMFNet and CVA visualisations."""
    try:
        figure = _figure()
    except ImportError:
        logger.warning("matplotlib is missing: no change figure.")
        return None
    titles = ("before (A)", "after (B)", "reference", "AMFNet", "CVA + Otsu")
    figure.set_size_inches(7.5, 1.6 * len(panels) + 0.3)
    for row, (stem, before, after, reference, deep_vis, cva_vis) in enumerate(panels):
        ref_rgb = np.repeat((reference == 1)[..., None] * 255, 3, axis=-1).astype(np.uint8)
        images = (
            np.moveaxis(before, 0, -1).astype(np.uint8),
            np.moveaxis(after, 0, -1).astype(np.uint8),
            ref_rgb,
            deep_vis,
            cva_vis,
        )
        for col, image in enumerate(images):
            axis = figure.add_subplot(len(panels), 5, row * 5 + col + 1)
            # Every second pixel: the figure is a guide, the full-size PNGs sit beside it.
            axis.imshow(image[::2, ::2], interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(titles[col], fontsize=8)
            if col == 0:
                axis.set_ylabel(stem, fontsize=7)
    figure.subplots_adjust(left=0.05, right=0.99, top=0.94, bottom=0.01, wspace=0.03,
                           hspace=0.06)  # fmt: skip
    figure.savefig(str(path), dpi=80)
    return path


def _fmt(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _score_line(label: str, row: Mapping[str, Any]) -> str:
    return (
        f"| {label} | {_fmt(row['oa'])} | {_fmt(row['kappa'])} | {_fmt(row['miou'])} "
        f"| {_fmt(row['fw_iou'])} |"
    )


def _landcover_markdown(lc: Mapping[str, Any]) -> list[str]:
    deep, rf = lc["deep"], lc["random_forest"]
    header = ["| method | OA | kappa | mIoU | fw-IoU |", "| --- | --- | --- | --- | --- |"]
    lines = [f"### Land cover: held-out tile {lc['data']['test_tile']}", "", *header]
    lines += [
        _score_line("AMM-FuseNet, `evaluate_weights` (whole tile)", deep["test_evaluate_weights"]),
        _score_line("AMM-FuseNet, engine map + `assess_class_map`", deep["test_engine"]),
        _score_line("Random forest (same pixels, same bands)", rf["test"]),
        "",
        "Per-class IoU on the held-out tile (classes of its reference; pixels in brackets):",
        "",
    ]
    counts = deep["test_engine"]["reference_pixels"]
    present = [k for k, v in counts.items() if v]
    lines.append("| method | " + " | ".join(f"{k} ({counts[k]})" for k in present) + " |")
    lines.append("| --- |" + " --- |" * len(present))
    for label, row in (
        ("AMM-FuseNet (engine)", deep["test_engine"]),
        ("Random forest", rf["test"]),
    ):
        cells = " | ".join(_fmt(row["per_class_iou"][k]) for k in present)
        lines.append(f"| {label} | {cells} |")
    last = deep["history"][-1]
    lines += [
        "",
        "Validation strips (bottom rows of the training tiles):",
        "",
        *header,
        _score_line(f"AMM-FuseNet, best epoch ({deep['best_epoch']}, chosen here)", deep["val"]),
        f"| AMM-FuseNet, last epoch ({last['epoch']}) | {_fmt(last['oa'])} | "
        f"{_fmt(last['kappa'])} | {_fmt(last['miou'])} | {_fmt(last['fw_iou'])} |",
        _score_line("Random forest", rf["val"]),
        "",
    ]
    local = lc.get("local")
    if local:
        strip = local["deep_before"]["reference_pixels"]
        names = [k for k, v in strip.items() if v]
        lines += [
            f"Local labels: the held-out tile's rows 0-{local['strip_first_row'] - 1} "
            f"({local['local_pixels']} pixels) added; scores on its rows "
            f"{local['strip_first_row']}-223 only (IoU per class, pixels in brackets):",
            "",
            "| method | OA | kappa | mIoU | "
            + " | ".join(f"{k} ({strip[k]})" for k in names)
            + " |",
            "| --- | --- | --- | --- |" + " --- |" * len(names),
        ]
        for label, row in (
            ("AMM-FuseNet, other tiles only", local["deep_before"]),
            (f"AMM-FuseNet fine-tuned ({local['finetune']['epochs_run']} epochs)",
             local["deep_finetuned"]),
            ("Random forest, other tiles only", local["rf_before"]),
            ("Random forest, local pixels added", local["rf_with_local"]),
        ):  # fmt: skip
            cells = " | ".join(_fmt(row["per_class_iou"][k]) for k in names)
            lines.append(
                f"| {label} | {_fmt(row['oa'])} | {_fmt(row['kappa'])} | {_fmt(row['miou'])} "
                f"| {cells} |"
            )
        lines.append("")
    lines += [
        "Class signatures (mean over the class's pixels; S2 in digital numbers after "
        "harmonisation, S1 in dB):",
        "",
        "| tile | class | pixels | NDVI | B04 | B08 | B11 | VV | VH |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for tile, rows in lc["signatures"].items():
        for name, v in rows.items():
            lines.append(
                f"| {tile} | {name} | {v['pixels']} | {v['ndvi']:.2f} | {v['b04']} | "
                f"{v['b08']} | {v['b11']} | {v['vv_db']} | {v['vh_db']} |"
            )
    return [*lines, ""]


def _change_markdown(cd: Mapping[str, Any]) -> list[str]:
    lines = [
        f"### Change detection: {cd['data']['folder']} (held-out pairs pooled)",
        "",
        "| method | precision | recall | F1 | IoU | OA | kappa |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, row in (("AMFNet", cd["deep"]["test"]), ("CVA + Otsu", cd["cva_otsu"]["test"])):
        lines.append(
            f"| {label} | {_fmt(row['change_precision'])} | {_fmt(row['change_recall'])} | "
            f"{_fmt(row['change_f1'])} | {_fmt(row['change_iou'])} | {_fmt(row['oa'])} | "
            f"{_fmt(row['kappa'])} |"
        )
    lines += ["", "| pair | changed | AMFNet F1 | CVA F1 | CVA threshold |",
              "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for pair in cd["per_pair"]:
        lines.append(
            f"| {pair['pair']} | {pair['changed_fraction']:.1%} | {_fmt(pair['amfnet']['f1'])} "
            f"| {_fmt(pair['cva']['f1'])} | {pair['cva_threshold']} |"
        )
    return [*lines, ""]


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """The tables of docs/training.md from a run's summary."""
    lines: list[str] = []
    lc = summary.get("landcover")
    if lc:
        lines += _landcover_markdown(lc)
    for key in ("levir", "dsifn"):
        if summary.get(key):
            lines += _change_markdown(summary[key])
    lines += ["### Runs", "",
              "| run | model | encoder | parameters | epochs (best) | train time |",
              "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    runs = [(key, summary[key]["model"], summary[key]["deep"]) for key in
            ("landcover", "levir", "dsifn") if summary.get(key)]  # fmt: skip
    if lc and lc.get("local"):
        runs.insert(1, ("landcover fine-tuning", lc["model"], lc["local"]["finetune"]))
    for key, model, deep in runs:
        best = deep["best_epoch"] if deep["best_epoch"] is not None else "last"
        lines.append(
            f"| {key} | `{model}` | {deep['encoder']} | {deep['parameters'] / 1e6:.2f} M | "
            f"{deep['epochs_run']} ({best}) | {deep['train_seconds']:.0f} s |"
        )
    if lc:
        rf = lc["random_forest"]
        lines.append(
            f"| landcover random forest | scikit-learn | {rf['trees']} trees | "
            f"{rf['training_pixels']} pixels × {rf['features']} bands | – | "
            f"{rf['fit_seconds']:.0f} s |"
        )
    if "wall_seconds" in summary:
        lines += ["", f"Whole command: {summary['wall_seconds']:.0f} s wall time, "
                  f"{summary['threads']} thread(s), seed {summary['seed']}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def copy_to_docs(summary: Mapping[str, Any], target: Path) -> list[Path]:
    """Copy the learning curves, figures and change visualisations (small PNGs) to the docs."""
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for key in ("landcover", "levir", "dsifn"):
        part = summary.get(key)
        if not part:
            continue
        sources = [(part["deep"].get("curves"), f"{key}_learning_curves.png")]
        if part.get("figure"):
            sources.append((part["figure"], Path(part["figure"]).name))
        # The full-size red/green visualisations compress to a few kB each.
        sources += [(p, Path(p).name) for p in part.get("visualisations", ())]
        for source, name in sources:
            if source and Path(source).is_file():
                copied.append(Path(shutil.copyfile(source, target / name)))
    return copied


# ---------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line."""
    lc, cd = LandCoverSettings(), LEVIR
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="real-data folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch and random-forest CPU threads (1 keeps a shared 2-core machine responsive)",
    )  # fmt: skip
    parser.add_argument(
        "--only", choices=("landcover", "change", "levir", "dsifn"), action="append",
        help="run only these experiments (repeatable; default: all)",
    )  # fmt: skip
    parser.add_argument("--docs", action="store_true", help="copy the PNGs to docs/img/training")
    parser.add_argument(
        "--keep-checkpoints", action="store_true",
        help="keep the training checkpoints (by default only the weights files stay)",
    )  # fmt: skip
    parser.add_argument("--lc-model", default=lc.model, help="three-branch land-cover model")
    parser.add_argument("--lc-test-tile", default=lc.test_tile, choices=TERRAMIND_TILES)
    parser.add_argument("--lc-val-tile", default=None, choices=TERRAMIND_TILES)
    parser.add_argument("--lc-val-rows", type=int, default=lc.val_rows)
    parser.add_argument("--lc-chip", type=int, default=lc.chip)
    parser.add_argument("--lc-stride", type=int, default=lc.stride)
    parser.add_argument("--lc-encoder", default=lc.encoder)
    parser.add_argument("--lc-epochs", type=int, default=lc.epochs)
    parser.add_argument("--lc-batch", type=int, default=lc.batch)
    parser.add_argument("--lc-lr", type=float, default=lc.learning_rate)
    parser.add_argument("--lc-finetune-epochs", type=int, default=lc.finetune_epochs)
    parser.add_argument("--lc-finetune-lr", type=float, default=lc.finetune_lr)
    parser.add_argument("--rf-trees", type=int, default=lc.rf_trees)
    parser.add_argument("--cd-chip", type=int, default=cd.chip)
    parser.add_argument("--cd-stride", type=int, default=cd.stride)
    parser.add_argument("--cd-encoder", default=cd.encoder)
    parser.add_argument("--cd-epochs", type=int, default=cd.epochs)
    parser.add_argument("--cd-batch", type=int, default=cd.batch)
    parser.add_argument("--cd-lr", type=float, default=cd.learning_rate)
    parser.add_argument(
        "--cd-no-balance",
        action="store_true",
        help="an unweighted change loss (the default weights it by class, as the Train tab)",
    )
    return parser.parse_args(argv)


def run(args: argparse.Namespace, command: str = "") -> dict[str, Any]:
    """Run the experiments the arguments select and write the summary.

    Returns:
        The summary (JSON-ready).
    """
    torch.set_num_threads(max(1, args.threads))
    if not args.data.is_dir():
        raise RealDataError(
            f"No real data at {args.data}: give --data (the shared folder with PROVENANCE.md)."
        )
    only = set(args.only or ("landcover", "change"))
    if "change" in only:
        only |= {"levir", "dsifn"}
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"seed": args.seed, "threads": args.threads, "command": command}
    started = time.monotonic()
    if "landcover" in only:
        settings = LandCoverSettings(
            model=args.lc_model, test_tile=args.lc_test_tile, val_tile=args.lc_val_tile,
            val_rows=args.lc_val_rows, chip=args.lc_chip, stride=args.lc_stride,
            encoder=args.lc_encoder,
            epochs=args.lc_epochs, batch=args.lc_batch, learning_rate=args.lc_lr,
            finetune_epochs=args.lc_finetune_epochs, finetune_lr=args.lc_finetune_lr,
            rf_trees=args.rf_trees,
        )  # fmt: skip
        summary["landcover"] = train_landcover(
            args.data,
            args.out / "landcover",
            settings,
            args.seed,
            args.threads,
            command,
            args.keep_checkpoints,
        )
    for base in (LEVIR, DSIFN):
        if base.name not in only:
            continue
        settings = dataclasses.replace(
            base, chip=args.cd_chip, stride=args.cd_stride, encoder=args.cd_encoder,
            epochs=args.cd_epochs, batch=args.cd_batch, learning_rate=args.cd_lr,
            balance=not args.cd_no_balance,
        )  # fmt: skip
        summary[base.name] = train_change(
            args.data,
            args.out / f"change_{base.name}",
            settings,
            args.seed,
            command,
            args.keep_checkpoints,
        )
    summary["wall_seconds"] = round(time.monotonic() - started, 1)
    _write_json(summary, args.out / "summary.json")
    (args.out / "summary.md").write_text(summary_markdown(summary), encoding="utf-8")
    if args.docs:
        for path in copy_to_docs(summary, DOCS_IMG):
            logger.info("Copied %s", path)
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: run, print the tables, return an exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    command = " ".join(["python scripts/train_realdata.py", *(argv or sys.argv[1:])])
    try:
        summary = run(args, command)
    except LandFuseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary_markdown(summary))
    print(f"Total wall time {summary['wall_seconds']:.0f} s; outputs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
