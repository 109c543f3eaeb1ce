"""The bad-input and fault matrix of issue 11, as data: each case builds its inputs and says what
every surface must do with them.

A :class:`Case` builds, in a folder of its own, small generated rasters and files (a scene of
Sentinel-2, Sentinel-1 and a DEM for the lite land-cover network, or a Sentinel-2 pair for the
lite change network, with tiny random weights) and returns a :class:`Run`: what to map with
which options. The surfaces turn a Run into their own call: an engine request
(``tests/unit/test_fault_matrix.py``), a ``landfuse`` command line in a subprocess (same file)
and ``processing.run`` (``tests/qgis/test_processing_faults.py``). Each case expects either an
error (its class, a regular expression of the message's advice, the exit code of the command
line) or a named warning when the run may go on. :func:`check_untouched` is what every case
asserts afterwards: inputs byte-identical (sha256), nothing new beside them, nothing left in the
output folder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import rasterio
from rasterio.transform import from_origin

S2_NAMES = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
            "B12")  # fmt: skip
LANDCOVER_MODEL = "amm_fusenet_lite_s2_s1_dem"
CHANGE_MODEL = "amfnet_lite_s2"
SIZE = 64
EXIT_INPUT = 2  # core/errors.py: every LandFuseError the user can fix
EXIT_CANCELLED = 3


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


#: What a warning says on every surface (the CLI's stderr, Processing's log), by code: the user
#: must be able to tell them apart.
WARNING_TEXT = {
    "bands_by_position": r"matched to the model's by their position",
    "input_values": r"(but the model takes|far from those the model)",
    "linear_to_db": r"linear power .* converted with 10 x log10",
    "weights_unverified": r"no checksum",
}


def write_raster(
    path: Path,
    data: np.ndarray,
    res: float = 10.0,
    crs: Optional[str] = "EPSG:32631",
    origin: tuple[float, float] = (500000.0, 4500000.0),
    nodata: Optional[float] = None,
    descriptions: tuple[str, ...] = (),
) -> Path:
    """A small tiled GeoTIFF (tiled so that truncating it cuts blocks, as on a real scene)."""
    profile = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "tiled": True,
        "blockxsize": 16,
        "blockysize": 16,
    }
    if crs is not None:
        profile["crs"] = crs
        profile["transform"] = from_origin(origin[0], origin[1], res, res)
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for index, text in enumerate(descriptions, start=1):
            dst.set_band_description(index, text)
    return path


def s2_values(seed: int = 0, size: int = SIZE) -> np.ndarray:
    """Reflectance x 10000 with some structure (uint16)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(400, 3500, size=(13, 1, 1))
    field_ = np.linspace(0.6, 1.4, size)[None, :, None] * np.ones((1, 1, size))
    noise = rng.normal(0, 120, size=(13, size, size))
    return np.clip(base * field_ + noise, 1, 10000).astype("uint16")


def sha256_tree(paths: list[Path]) -> dict[str, str]:
    """sha256 of every file in and under ``paths`` (files or folders)."""
    out: dict[str, str] = {}
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


class Kit:
    """Builds one case's files in its folder; tiny weights are made once per session."""

    def __init__(self, folder: Path, weights_cache: Path) -> None:
        self.folder = folder
        self.inputs = folder / "inputs"
        self.inputs.mkdir(parents=True, exist_ok=True)
        self.out = folder / "out"
        self.weights_cache = weights_cache

    # -- scenes --------------------------------------------------------------------------
    def s2(self, name: str = "s2.tif", data: Optional[np.ndarray] = None, **kw: object) -> Path:
        kw.setdefault("descriptions", S2_NAMES)
        return write_raster(self.inputs / name, s2_values() if data is None else data, **kw)

    def s1(self, name: str = "s1.tif", data: Optional[np.ndarray] = None, **kw: object) -> Path:
        rng = np.random.default_rng(1)
        values = rng.normal(-13, 2.5, size=(2, SIZE // 2, SIZE // 2)).astype("float32")
        kw.setdefault("descriptions", ("VV", "VH"))
        kw.setdefault("res", 20.0)
        return write_raster(self.inputs / name, values if data is None else data, **kw)

    def dem(self, name: str = "dem.tif", data: Optional[np.ndarray] = None, **kw: object) -> Path:
        values = (np.linspace(120, 480, SIZE)[None, :, None] * np.ones((1, 1, SIZE))).astype(
            "float32"
        )
        kw.setdefault("descriptions", ("DEM",))
        return write_raster(self.inputs / name, values if data is None else data, **kw)

    # -- weights -------------------------------------------------------------------------
    def weights(self, task: str = "landcover") -> Path:
        """A copy (with sidecar) of the session's tiny random weights for ``task``."""
        name = LANDCOVER_MODEL if task == "landcover" else CHANGE_MODEL
        cached = self.weights_cache / f"{name}.pt"
        if not cached.exists():
            make_weights(cached, name)
        dest = self.folder / "weights" / cached.name
        dest.parent.mkdir(exist_ok=True)
        shutil.copy2(cached, dest)
        shutil.copy2(cached.with_name(cached.name + ".json"), dest.with_name(dest.name + ".json"))
        return dest

    # -- runs ----------------------------------------------------------------------------
    def landcover(self, **kw: object) -> Run:
        inputs = kw.pop("inputs", None) or {
            "s2": [self.s2()],
            "s1": [self.s1()],
            "dem": [self.dem()],
        }
        weights = kw.pop("weights", None) or self.weights("landcover")
        out = kw.pop("out", None) or self.out
        return Run("landcover", LANDCOVER_MODEL, inputs, weights, out, **kw)  # type: ignore[arg-type]

    def change(self, **kw: object) -> Run:
        inputs = kw.pop("inputs", None) or {
            "before": [self.s2("before.tif")],
            "after": [self.s2("after.tif", s2_values(seed=3))],
        }
        weights = kw.pop("weights", None) or self.weights("change")
        out = kw.pop("out", None) or self.out
        return Run("change", CHANGE_MODEL, inputs, weights, out, **kw)  # type: ignore[arg-type]


def make_weights(path: Path, model_name: str, seed: int = 0) -> Path:
    """Random weights of a registry model, written as a LandFuse weights file."""
    import torch

    from landfuse.models.registry import get_model_spec
    from landfuse.models.weights import WeightsMetadata, save_weights

    torch.manual_seed(seed)
    spec = get_model_spec(model_name)
    model = spec.build()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_weights(path, model, WeightsMetadata.for_spec(spec, config=model.config))
    return path


# ----------------------------------------------------------------------------------------------
# Runs and cases
# ----------------------------------------------------------------------------------------------


@dataclass
class Run:
    """What to map: the same for every surface.

    ``processing_output``: the OUTPUT destination for Processing (default: ``out/<name>.tif``);
    ``surfaces``: the surfaces that can express this run (Processing takes one file per input
    and no band selection).
    """

    task: str
    model: str
    inputs: dict[str, list[Path]]
    weights: Path
    out: Path
    name: str = "map"
    bands: dict[str, str] = field(default_factory=dict)
    tile: Optional[int] = 64
    overlap: Optional[int] = None
    batch: int = 2
    bounds: Optional[tuple[float, float, float, float]] = None
    aoi: Optional[Path] = None
    pixel_grid: bool = False
    overwrite: bool = False
    outputs: tuple[str, ...] = ()
    processing_output: Optional[Path] = None

    def cli_args(self) -> list[str]:
        """The ``landfuse predict-*`` arguments."""
        cmd = ["predict-landcover" if self.task == "landcover" else "predict-change"]
        for key, files in self.inputs.items():
            cmd += [f"--{key}", *map(str, files)]
            if key in self.bands:
                cmd += [f"--{key}-bands", self.bands[key]]
        cmd += ["--model", self.model, "--weights", str(self.weights), "--out", str(self.out)]
        cmd += ["--name", self.name, "--batch", str(self.batch), "--device", "cpu"]
        if self.tile is not None:
            cmd += ["--tile", str(self.tile)]
        if self.overlap is not None:
            cmd += ["--overlap", str(self.overlap)]
        if self.bounds is not None:
            cmd += ["--bounds", *map(str, self.bounds)]
        if self.aoi is not None:
            cmd += ["--aoi", str(self.aoi)]
        if self.pixel_grid:
            cmd.append("--pixel-grid")
        if self.overwrite:
            cmd.append("--overwrite")
        if self.task == "landcover" and "confidence" not in (self.outputs or ("confidence",)):
            cmd.append("--no-confidence")
        return cmd

    def request(self) -> object:
        """The engine request."""
        from landfuse.core.requests import (
            AreaOfInterest,
            ChangeRequest,
            LandCoverRequest,
            ModalityInput,
            RasterSource,
        )

        def sources(key: str) -> tuple[RasterSource, ...]:
            bands = tuple(
                int(b) if b.strip().isdigit() else b.strip()
                for b in self.bands.get(key, "").split(",")
                if b.strip()
            )
            return tuple(RasterSource(str(p), bands) for p in self.inputs[key])

        aoi = None
        if self.bounds is not None:
            aoi = AreaOfInterest(bounds=self.bounds)
        elif self.aoi is not None:
            aoi = AreaOfInterest(polygon_file=str(self.aoi))
        common = dict(
            model=self.model,
            weights=str(self.weights),
            output_dir=str(self.out),
            aoi=aoi,
            pixel_grid=self.pixel_grid,
            tile=self.tile,
            overlap=self.overlap,
            batch=self.batch,
            device="cpu",
            name=self.name,
            overwrite=self.overwrite,
        )
        if self.task == "landcover":
            if self.outputs:
                common["outputs"] = self.outputs
            return LandCoverRequest(
                inputs=tuple(ModalityInput(k, sources(k)) for k in self.inputs), **common
            )
        return ChangeRequest(before=sources("before"), after=sources("after"), **common)

    def protected(self) -> list[Path]:
        """Inputs, their folder, the weights and their folder: what must not change."""
        return [self.weights.parent, *sorted({p.parent for f in self.inputs.values() for p in f})]


@dataclass
class Case:
    """One row of the matrix.

    Attributes:
        id: Short name (the test id).
        build: Makes the files and returns the run.
        error: Name of the error class expected (None: the run goes on).
        advice: Regular expression the message must match: what to do.
        warning: Warning code expected when the run goes on.
        surfaces: Where the case applies (``engine``, ``cli``, ``processing``).
        processing_advice: The advice Processing shows when QGIS itself refuses the input
            before LandFuse sees it (e.g. a file that is no raster at all).
    """

    id: str
    build: Callable[[Kit], Run]
    error: Optional[str] = None
    advice: str = ""
    warning: Optional[str] = None
    surfaces: tuple[str, ...] = ("engine", "cli", "processing")
    processing_advice: Optional[str] = None


def _truncate(path: Path, keep: float | int) -> Path:
    data = path.read_bytes()
    n = keep if isinstance(keep, int) else int(len(data) * keep)
    path.write_bytes(data[:n])
    return path


def _vrt_over(kit: Kit, source: Path, name: str) -> Path:
    vrt = kit.inputs / name
    subprocess.run(
        ["gdal_translate", "-q", "-of", "VRT", str(source), str(vrt)],
        check=True,
        capture_output=True,
    )
    return vrt


def _with_s2(kit: Kit, s2: Path, **kw: object) -> Run:
    return kit.landcover(inputs={"s2": [s2], "s1": [kit.s1()], "dem": [kit.dem()]}, **kw)


def _weights_variant(kit: Kit, make: Callable[[Path], Path]) -> Run:
    src = kit.weights("landcover")
    return kit.landcover(weights=make(src))


class _CreatesFile:
    """Unpickling it would call ``open(marker, "w")``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.marker, "w"))


def _malicious(path: Path) -> Path:
    import torch

    evil = path.with_name("evil.pt")
    marker = str(path.parent / "PAYLOAD_RAN")
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _CreatesFile(marker)}, evil)
    return evil


def _torch_save(content: object, path: Path) -> Path:
    import torch

    torch.save(content, path)
    return path


def _edit_inside(path: Path) -> Path:
    import torch

    raw = torch.load(path, weights_only=True)
    meta = json.loads(raw["metadata_json"])
    meta["classes"][0]["name"] = "Edited name"
    raw["metadata_json"] = json.dumps(meta, sort_keys=True)
    edited = path.with_name("edited.pt")
    torch.save(raw, edited)
    return edited


def _edit_sidecar(path: Path) -> Path:
    side = path.with_name(path.name + ".json")
    data = json.loads(side.read_text())
    data["metadata"]["classes"][0]["name"] = "Edited name"
    side.write_text(json.dumps(data))
    return path


def _format_1(path: Path) -> Path:
    import torch

    raw = torch.load(path, weights_only=True)
    raw["format_version"] = 1
    del raw["metadata_sha256"]
    old = path.with_name("old_format.pt")
    torch.save(raw, old)
    return old


def _byte_s2(kit: Kit) -> Path:
    scaled = (s2_values().astype("float64") / 10000 * 255).clip(1, 255).astype("uint8")
    return kit.s2("s2_byte.tif", scaled)


def _points_file(kit: Kit) -> Path:
    path = kit.inputs / "points.geojson"
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": "EPSG:32631"}},
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": {"type": "Point", "coordinates": [500100.0, 4499900.0]},
                    }
                ],
            }
        )
    )
    return path


def _missing_vrt_source(kit: Kit) -> Run:
    vrt = _vrt_over(kit, kit.s2("src.tif"), "s2.vrt")
    (kit.inputs / "src.tif").unlink()
    return _with_s2(kit, vrt, name="m")


def _text_file(kit: Kit, name: str, text: str) -> Path:
    path = kit.inputs / name
    path.write_text(text)
    return path


def _garbage_weights(path: Path) -> Path:
    junk = path.with_name("junk.pt")
    junk.write_bytes(np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return junk


def _bare_tensor(path: Path) -> Path:
    import torch

    return _torch_save(torch.zeros(4, 4), path.with_name("tensor.pt"))


def _tensor_list(path: Path) -> Path:
    import torch

    return _torch_save([torch.zeros(2), torch.ones(2)], path.with_name("list.pt"))


def _output_folder_is_a_file(kit: Kit) -> Run:
    afile = kit.folder / "afile"
    afile.write_text("x")
    return kit.landcover(out=afile)


def _corrupt_block(kit: Kit) -> Run:
    """A DEFLATE GeoTIFF whose file is whole but one block inside holds garbage: the file passes
    inspection and the read fails in the tile loop, which must name the file and the window."""
    from osgeo import gdal

    src = kit.s2("s2_plain.tif")
    damaged = kit.inputs / "s2_damaged.tif"
    gdal.Translate(str(damaged), str(src), creationOptions=["TILED=YES", "BLOCKXSIZE=16",
                   "BLOCKYSIZE=16", "COMPRESS=DEFLATE", "INTERLEAVE=BAND"])  # fmt: skip
    dataset = gdal.Open(str(damaged))
    band = dataset.GetRasterBand(4)
    offset = int(band.GetMetadataItem("BLOCK_OFFSET_2_2", "TIFF"))
    size = int(band.GetMetadataItem("BLOCK_SIZE_2_2", "TIFF"))
    dataset = None
    data = bytearray(damaged.read_bytes())
    data[offset : offset + size] = bytes((i * 37 + 11) % 256 for i in range(size))
    damaged.write_bytes(bytes(data))
    src.unlink()
    return _with_s2(kit, damaged, tile=32)


def _style_clash(kit: Kit) -> Run:
    """The S2 input m_classes.vrt has its own style m_classes.qml, which the map's would replace."""
    vrt = _vrt_over(kit, kit.s2(), "m_classes.vrt")
    (kit.inputs / "m_classes.qml").write_text("<qgis>the user's own style</qgis>")
    return _with_s2(kit, vrt, out=kit.inputs, name="m")


def _output_exists(kit: Kit) -> Run:
    kit.out.mkdir()
    (kit.out / "map_classes.tif").write_text("an earlier map")
    return kit.landcover()


def upscaled_vrt(kit: Kit, source: Path, size: int) -> Path:
    """A VRT showing ``source`` at ``size`` px a side (same extent, no pixels stored)."""
    vrt = kit.inputs / f"{source.stem}_{size}.vrt"
    subprocess.run(
        ["gdal_translate", "-q", "-of", "VRT", "-outsize", str(size), str(size), str(source),
         str(vrt)],
        check=True, capture_output=True,
    )  # fmt: skip
    return vrt


def _huge_run(kit: Kit) -> Run:
    """A 30000² scene (VRTs over the small files) with one 100000 px tile."""
    inputs = {
        "s2": [upscaled_vrt(kit, kit.s2(), 30000)],
        "s1": [upscaled_vrt(kit, kit.s1(), 15000)],
        "dem": [upscaled_vrt(kit, kit.dem(), 30000)],
    }
    return kit.landcover(inputs=inputs, tile=100000)


CASES: list[Case] = [
    # --- unreadable inputs -------------------------------------------------------------------
    Case("s2_missing", lambda k: _with_s2(k, k.inputs / "nope.tif"), "InputFileError",
         r"does not exist|not found|[Cc]heck the path",
         processing_advice=r"S2|[Ss]entinel-2|layer"),
    Case("s2_truncated_50pc", lambda k: _with_s2(k, _truncate(k.s2(), 0.5)), "InputFileError",
         r"(truncated|damaged|incomplete).*(copy|export|download)"),
    Case("s2_truncated_90pc", lambda k: _with_s2(k, _truncate(k.s2(), 0.9)), "InputFileError",
         r"(truncated|damaged|incomplete).*(copy|export|download)"),
    Case("s2_truncated_1000_bytes", lambda k: _with_s2(k, _truncate(k.s2(), 1000)),
         "InputFileError", r"(truncated|damaged|incomplete|cannot be read)",
         processing_advice=r"S2|[Ss]entinel-2|layer|truncated|damaged"),
    Case("s2_truncated_1000_bytes_pixel_grid",
         lambda k: _with_s2(k, _truncate(k.s2(), 1000), pixel_grid=True), "InputFileError",
         r"(truncated|damaged|incomplete|cannot be read)", surfaces=("engine", "cli")),
    Case("s2_damaged_block", _corrupt_block, "InputFileError",
         r"s2_damaged\.tif failed at columns \d+-\d+, rows \d+-\d+.*copy it again"),
    Case("vrt_source_missing", _missing_vrt_source, "InputFileError",
         r"src\.tif.*(missing|does not exist|not found)",
         processing_advice=r"S2|[Ss]entinel-2|layer|src\.tif"),
    Case("s2_not_a_raster", lambda k: _with_s2(k, _text_file(k, "notes.tif", "not an image")),
         "InputFileError", r"(not a raster|cannot (open|read)|GDAL)",
         processing_advice=r"S2|[Ss]entinel-2|layer"),
    Case("s2_empty_file", lambda k: _with_s2(k, _text_file(k, "empty.tif", "")),
         "InputFileError", r"(empty|not a raster|cannot (open|read))",
         processing_advice=r"S2|[Ss]entinel-2|layer"),
    # --- bands -----------------------------------------------------------------------------
    Case("s2_ten_bands",
         lambda k: _with_s2(k, k.s2("s2_10.tif", s2_values()[:10], descriptions=S2_NAMES[:10])),
         "BandMismatchError", r"needs 13 bands|B8A|[Ss]elect"),
    Case("s2_duplicate_band_names",
         lambda k: _with_s2(k, k.s2("dup.tif", descriptions=("B02",) * 13)),
         "BandMismatchError", r"(more than once|twice|duplicate)"),
    Case("s2_band_index_out_of_range",
         lambda k: _with_s2(k, k.s2(), bands={"s2": ",".join(["1"] * 12 + ["99"])}),
         "BandMismatchError", r"99.*(has|only) 13|band 99", surfaces=("engine", "cli")),
    Case("s2_unknown_band_name",
         lambda k: _with_s2(k, k.s2(), bands={"s2": ",".join((*S2_NAMES[:12], "B13"))}),
         "BandMismatchError", r"B13", surfaces=("engine", "cli")),
    Case("s2_bands_by_position", lambda k: _with_s2(k, k.s2("plain.tif", descriptions=())),
         warning="bands_by_position"),
    # --- values ------------------------------------------------------------------------------
    Case("s2_converted_to_8_bit", lambda k: _with_s2(k, _byte_s2(k)), "InputValuesError",
         r"8-bit.*(original|uint16|reflectance)"),
    Case("s2_reflectance_0_to_1",
         lambda k: _with_s2(k, k.s2("s2_float.tif", (s2_values() / 10000).astype("float32"))),
         warning="input_values"),
    Case("s1_linear_power",
         lambda k: k.landcover(inputs={"s2": [k.s2()], "dem": [k.dem()], "s1": [k.s1(
             "s1_linear.tif", (10 ** (np.random.default_rng(2).normal(-13, 2.5, (2, 32, 32)) / 10)
                               ).astype("float32"))]}),
         warning="linear_to_db"),  # converted to dB since issue 13 (it was only warned of)
    Case("dem_in_centimetres",
         lambda k: k.landcover(inputs={"s2": [k.s2()], "s1": [k.s1()], "dem": [k.dem(
             "dem_cm.tif", np.full((1, SIZE, SIZE), 2.5e6, np.float32))]}),
         warning="input_values"),
    Case("s2_all_nodata",
         lambda k: _with_s2(k, k.s2("blank.tif", np.zeros((13, SIZE, SIZE), np.uint16), nodata=0)),
         "EmptyInputError", r"nodata.*(check|another)"),
    # --- georeferencing and overlap ----------------------------------------------------------
    Case("s2_without_georeferencing", lambda k: _with_s2(k, k.s2("nogeo.tif", crs=None)),
         "GeoreferenceError", r"(pixel.grid|georeferenc)"),
    Case("s1_elsewhere",
         lambda k: k.landcover(inputs={"s2": [k.s2()], "dem": [k.dem()],
                                       "s1": [k.s1("far.tif", origin=(700000.0, 4900000.0))]}),
         "NoOverlapError", r"(overlap|same area)"),
    Case("modality_missing", lambda k: k.landcover(inputs={"s2": [k.s2()], "dem": [k.dem()]}),
         "RequestError", r"(s1|Sentinel-1)", processing_advice=r"Sentinel-1"),
    # --- weights -----------------------------------------------------------------------------
    Case("weights_missing", lambda k: k.landcover(weights=k.folder / "none.pt"),
         "WeightsNotFoundError", r"does not exist|train a model|path"),
    Case("weights_folder", lambda k: k.landcover(weights=k.weights().parent),
         "WeightsNotFoundError", r"is a folder.*\.pt"),
    Case("weights_sidecar_given",
         lambda k: k.landcover(weights=k.weights().with_name(LANDCOVER_MODEL + ".pt.json")),
         "WeightsNotFoundError", r"sidecar.*give .*\.pt"),
    Case("weights_truncated", lambda k: _weights_variant(k, lambda p: _truncate(p, 0.5)),
         "CorruptWeightsError", r"(copy|export) it again"),
    Case("weights_garbage", lambda k: _weights_variant(k, _garbage_weights),
         "CorruptWeightsError", r"(damaged|not a torch file).*again"),
    Case("weights_bare_tensor", lambda k: _weights_variant(k, _bare_tensor),
         "WeightsMismatchError", r"state_dict"),
    Case("weights_list_of_tensors", lambda k: _weights_variant(k, _tensor_list),
         "WeightsMismatchError", r"state_dict"),
    Case("weights_malicious_pickle", lambda k: _weights_variant(k, _malicious),
         "UnsafeWeightsError", r"could run code.*re-save"),
    Case("weights_for_another_model", lambda k: k.landcover(weights=k.weights("change")),
         "WeightsMismatchError", r"(Pick|pick) the matching model|another weights"),
    Case("weights_metadata_edited", lambda k: _weights_variant(k, _edit_inside),
         "CorruptWeightsError", r"edited.*(Copy|export)"),
    Case("weights_sidecar_edited", lambda k: _weights_variant(k, _edit_sidecar),
         "CorruptWeightsError", r"classes\[0\]\.name.*(Restore|delete)"),
    Case("weights_format_1_without_sidecar", lambda k: _weights_variant(k, _format_1),
         warning="weights_unverified"),
    # --- options -----------------------------------------------------------------------------
    Case("overlap_not_smaller_than_tile", lambda k: k.landcover(tile=64, overlap=64),
         "RequestError", r"overlap.*smaller than the tile"),
    Case("batch_zero", lambda k: k.landcover(batch=0), "RequestError", r"batch.*>= 1",
         processing_advice=r"BATCH|[Bb]atch"),
    Case("tile_too_large_for_memory", _huge_run, "NotEnoughMemoryError",
         r"tile of at most \d+ px"),
    Case("aoi_outside_the_inputs",
         lambda k: k.landcover(bounds=(900000.0, 100.0, 900100.0, 200.0)),
         "AreaOfInterestError", r"outside the inputs.*(CRS|drawn over)"),
    Case("aoi_file_missing", lambda k: k.landcover(aoi=k.inputs / "nope.gpkg"),
         "AreaOfInterestError", r"does not exist", surfaces=("engine", "cli")),
    Case("aoi_points_not_polygons", lambda k: k.landcover(aoi=_points_file(k)),
         "AreaOfInterestError", r"polygon", surfaces=("engine", "cli")),
    # --- outputs -----------------------------------------------------------------------------
    Case("output_is_the_s2_input",
         lambda k: _with_s2(k, k.s2("scene_classes.tif"), out=k.inputs, name="scene",
                            processing_output=k.inputs / "scene_classes.tif"),
         "OutputError", r"(input|would overwrite|another name|another folder)"),
    Case("output_is_a_vrt_source",
         lambda k: _with_s2(k, _vrt_over(k, k.s2("src_classes.tif"), "s2.vrt"), out=k.inputs,
                            name="src", processing_output=k.inputs / "src_classes.tif"),
         "OutputError", r"(input|would overwrite|another name|another folder)"),
    Case("output_is_a_style_beside_an_input", _style_clash, "OutputError",
         r"(input|would overwrite|another name|another folder)", surfaces=("engine", "cli")),
    Case("output_folder_is_a_file", _output_folder_is_a_file, "OutputError",
         r"(not a folder|is a file|another (output )?folder)", surfaces=("engine", "cli")),
    Case("output_exists_without_overwrite", _output_exists, "OutputError",
         r"--overwrite|another name", surfaces=("engine", "cli")),
    # --- change pair -------------------------------------------------------------------------
    Case("change_dates_with_different_bands",
         lambda k: k.change(inputs={"before": [k.s2("b.tif")],
                                    "after": [k.s2("a.tif", s2_values()[:10],
                                                   descriptions=S2_NAMES[:10])]}),
         "BandMismatchError", r"(needs 13 bands|same bands|B8A)"),
    Case("change_dates_do_not_overlap",
         lambda k: k.change(inputs={"before": [k.s2("b.tif")],
                                    "after": [k.s2("a.tif", origin=(800000.0, 100000.0))]}),
         "NoOverlapError", r"(overlap|same area)"),
]  # fmt: skip


def cases_for(surface: str) -> list[Case]:
    """The cases that apply to a surface."""
    return [c for c in CASES if surface in c.surfaces]


def check_untouched(run: Run, before: dict[str, str], out_existed: set[str]) -> None:
    """Inputs byte-identical, nothing new beside them, nothing left in the output folder."""
    after = sha256_tree(run.protected())
    assert after == before, f"inputs changed: {sorted(set(after) ^ set(before))}"
    if run.out.is_dir():
        left = {str(p) for p in run.out.rglob("*")} - out_existed
        assert not left, f"left in the output folder: {sorted(left)}"


def snapshot(run: Run) -> tuple[dict[str, str], set[str]]:
    """What :func:`check_untouched` compares with."""
    existed = {str(p) for p in run.out.rglob("*")} if run.out.is_dir() else set()
    return sha256_tree(run.protected()), existed


def landfuse_command() -> list[str]:
    """The command line as users run it (the venv's entry point)."""
    exe = Path(sys.executable).with_name("landfuse")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "landfuse.core.cli"]
