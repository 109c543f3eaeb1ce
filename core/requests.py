"""What a run is asked to do: frozen, validated request dataclasses (no I/O, no torch).

DESIGN.md §2.1: the dock, a Processing algorithm, the command line and the worker all build one
of these and hand it to :mod:`landfuse.core.engine`. Field checks that need no file access
happen here, in ``__post_init__``, and raise :class:`~landfuse.core.errors.RequestError`; the
engine then checks the files, the grids, the weights and the disk before any pixel is computed.

Lists are accepted where tuples are declared and turned into tuples; a plain path is accepted
where a :class:`RasterSource` or a tuple of them is declared. :func:`request_to_dict` and
:func:`request_from_dict` convert to and from JSON-compatible dictionaries (the worker's
protocol).

Example::

    request = LandCoverRequest(
        inputs=(
            ModalityInput("s2", ("S2_10m_B02.tif", "S2_10m_B03.tif", ...)),  # or one 13-band stack
            ModalityInput("s1", RasterSource("S1.tif", bands=("VV", "VH"))),
        ),
        model="amm_fusenet_s2_s1_hunan",
        weights="hunan.pt",
        output_dir="out/",
    )
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Dict, Mapping, Optional, Sequence, Tuple, Union

from .errors import RequestError
from .executor_spec import parse_executor
from .products import CHANGE_PRODUCTS, LANDCOVER_PRODUCTS, output_keys
from .run_options import (
    BATCH,
    DEVICE_CHOICES,
    EXECUTOR,
    FLIPS_CHOICES,
    NORMALISATION_CHOICES,
    PRECISION_CHOICES,
)

__all__ = [
    "CHANGE_OUTPUTS",
    "DEVICE_CHOICES",
    "LANDCOVER_OUTPUTS",
    "NORMALISATION_CHOICES",
    "PRECISION_CHOICES",
    "AreaOfInterest",
    "ChangeRequest",
    "LandCoverRequest",
    "ModalityInput",
    "RasterSource",
    "Request",
    "request_from_dict",
    "request_to_dict",
]

#: Land-cover outputs: the class map (always written) and a confidence raster (0-100 %).
LANDCOVER_OUTPUTS = output_keys(LANDCOVER_PRODUCTS)
#: Change outputs: the change mask (always written) and the change probability (0-1).
CHANGE_OUTPUTS = output_keys(CHANGE_PRODUCTS)

BandRef = Union[int, str]
PathLike = Union[str, "os.PathLike[str]"]
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _path_text(value: Any, what: str) -> str:
    """Return ``value`` as a non-empty path string."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise RequestError(f"{what} must be a file path, got {value!r}.")
    return value


def _set(obj: Any, name: str, value: Any) -> None:
    """Assign to a frozen dataclass field during ``__post_init__``."""
    object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class RasterSource:
    """One raster file and the bands taken from it.

    Attributes:
        path: The raster file (anything GDAL opens: GeoTIFF, JP2, VRT, ENVI, PNG...).
        bands: Bands to take, in order: 1-based indices or band descriptions (e.g. ``"B08"``,
            ``"VV"``, matched case-insensitively against GDAL's band descriptions). Empty: every
            band in file order.
        nodata: Value to treat as nodata, overriding the file's own (None: the file's).
    """

    path: str
    bands: Tuple[BandRef, ...] = ()
    nodata: Optional[float] = None

    def __post_init__(self) -> None:
        _set(self, "path", _path_text(self.path, "A raster source"))
        bands = self.bands
        if isinstance(bands, (int, str)):
            bands = (bands,)
        checked = []
        for band in tuple(bands):
            if isinstance(band, bool) or not isinstance(band, (int, str)):
                raise RequestError(f"Band {band!r} of {self.path}: give a 1-based index or a name.")
            if isinstance(band, int) and band < 1:
                raise RequestError(f"Band {band} of {self.path}: band numbers start at 1.")
            if isinstance(band, str) and not band.strip():
                raise RequestError(f"An empty band name was given for {self.path}.")
            checked.append(band)
        _set(self, "bands", tuple(checked))
        if self.nodata is not None:
            if isinstance(self.nodata, bool) or not isinstance(self.nodata, (int, float)):
                raise RequestError(f"The nodata value of {self.path} must be a number.")
            _set(self, "nodata", float(self.nodata))


SourceLike = Union[RasterSource, PathLike, Mapping[str, Any]]


def _source(value: Any) -> RasterSource:
    if isinstance(value, RasterSource):
        return value
    if isinstance(value, Mapping):
        return _from_mapping(RasterSource, value, "raster source")
    return RasterSource(_path_text(value, "A raster source"))


def _sources(value: Any, what: str) -> Tuple[RasterSource, ...]:
    if isinstance(value, (RasterSource, str, os.PathLike, Mapping)):
        value = (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise RequestError(f"{what} must be a raster file or a list of them.") from None
    if not items:
        raise RequestError(f"{what} needs at least one raster file.")
    return tuple(_source(item) for item in items)


@dataclass(frozen=True)
class ModalityInput:
    """The rasters of one modality, e.g. Sentinel-2 given as one stack or one file per band.

    Attributes:
        key: The registry's modality key (``"s2"``, ``"s1"``, ``"dem"``, ``"rgb"``...).
        sources: The files; their selected bands are concatenated in this order and must match
            the model's band list for this modality.
    """

    key: str
    sources: Tuple[RasterSource, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key.strip():
            raise RequestError(f"A modality needs a key such as 's2' or 's1', got {self.key!r}.")
        _set(self, "key", self.key.strip().lower())
        _set(self, "sources", _sources(self.sources, f"Modality '{self.key}'"))


@dataclass(frozen=True)
class AreaOfInterest:
    """Where to work: a rectangle with its CRS, or the polygons of a vector file.

    Attributes:
        bounds: ``(xmin, ymin, xmax, ymax)`` in ``crs``.
        crs: CRS of ``bounds`` (``"EPSG:4326"``, WKT, PROJ); None: the reference grid's CRS.
        polygon_file: A GeoPackage, GeoJSON or Shapefile whose polygons (all features of the
            layer, with their own CRS) delimit the area; pixels outside become nodata.
        layer: Layer name in a multi-layer file (default: the first layer).
    """

    bounds: Optional[Tuple[float, float, float, float]] = None
    crs: Optional[str] = None
    polygon_file: Optional[str] = None
    layer: Optional[str] = None

    def __post_init__(self) -> None:
        if (self.bounds is None) == (self.polygon_file is None):
            raise RequestError(
                "An area of interest is either bounds (xmin ymin xmax ymax) or a polygon file, "
                "not both and not neither."
            )
        if self.bounds is not None:
            try:
                values = tuple(float(v) for v in self.bounds)
            except (TypeError, ValueError):
                raise RequestError("Area of interest bounds must be four numbers.") from None
            if len(values) != 4 or not all(math.isfinite(v) for v in values):
                raise RequestError("Area of interest bounds must be four finite numbers.")
            xmin, ymin, xmax, ymax = values
            if xmin >= xmax or ymin >= ymax:
                raise RequestError(
                    f"Area of interest bounds {values} are empty: give xmin ymin xmax ymax with "
                    "xmin < xmax and ymin < ymax."
                )
            _set(self, "bounds", values)
        if self.polygon_file is not None:
            _set(self, "polygon_file", _path_text(self.polygon_file, "The area of interest"))
        if self.crs is not None and (not isinstance(self.crs, str) or not self.crs.strip()):
            raise RequestError("The area of interest CRS must be text such as 'EPSG:4326'.")


def _check_common(request: Any, allowed_outputs: Sequence[str], default_name: str) -> None:
    """Check and coerce the fields both request kinds share."""
    if request.model is None:
        _set(request, "model", "")
    if not isinstance(request.model, str):
        raise RequestError("The model must be a registry name (`landfuse models` lists them).")
    _set(request, "model", request.model.strip())
    _set(request, "weights", _path_text(request.weights, "The weights file"))
    _set(request, "output_dir", _path_text(request.output_dir, "The output folder"))
    if request.reference is not None:
        _set(request, "reference", _path_text(request.reference, "The reference grid raster"))
    aoi = request.aoi
    if isinstance(aoi, Mapping):
        aoi = _from_mapping(AreaOfInterest, aoi, "area of interest")
        _set(request, "aoi", aoi)
    if aoi is not None and not isinstance(aoi, AreaOfInterest):
        raise RequestError("The area of interest must be an AreaOfInterest.")
    if aoi is not None and request.pixel_grid:
        raise RequestError(
            "An area of interest needs georeferenced inputs; it cannot be used in pixel-grid mode."
        )
    for name in ("tile", "overlap"):
        value = getattr(request, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise RequestError(f"The {name} must be a whole number of pixels, got {value!r}.")
    if request.tile is not None and request.tile <= 0:
        raise RequestError(f"The tile size must be positive, got {request.tile}.")
    if request.overlap is not None and request.overlap < 0:
        raise RequestError(f"The overlap cannot be negative, got {request.overlap}.")
    if request.tile is not None and request.overlap is not None and request.overlap >= request.tile:
        raise RequestError(
            f"The overlap ({request.overlap} px) must be smaller than the tile ({request.tile} px)."
        )
    if isinstance(request.batch, bool) or not isinstance(request.batch, int) or request.batch < 1:
        raise RequestError(f"The batch size must be a whole number >= 1, got {request.batch!r}.")
    executor = str(request.executor or "").strip() or EXECUTOR.default
    parse_executor(executor)  # a RequestError naming the accepted forms
    _set(request, "executor", executor)
    for name, what in (("job_rows", "rows of tiles per job"), ("threads", "threads")):
        value = getattr(request, name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise RequestError(f"The {what} must be a whole number >= 1, got {value!r}.")
    if request.parts_dir is not None:
        _set(request, "parts_dir", _path_text(request.parts_dir, "The parts folder"))
    device = str(request.device).strip().lower()
    if device not in DEVICE_CHOICES and not re.fullmatch(r"cuda:\d+", device):
        raise RequestError(
            f"Unknown device '{request.device}'; use one of {', '.join(DEVICE_CHOICES)} or cuda:N."
        )
    _set(request, "device", device)
    precision = str(request.precision).strip().lower()
    if precision not in PRECISION_CHOICES:
        raise RequestError(
            f"Unknown precision '{request.precision}'; use one of {', '.join(PRECISION_CHOICES)}."
        )
    _set(request, "precision", precision)
    flips = str(request.flips).strip().lower()
    if flips not in FLIPS_CHOICES:
        raise RequestError(
            f"Unknown flips '{request.flips}'; use one of {', '.join(FLIPS_CHOICES)}."
        )
    _set(request, "flips", flips)
    normalisation = str(request.normalisation).strip().lower()
    if normalisation not in NORMALISATION_CHOICES:
        raise RequestError(
            f"Unknown normalisation '{request.normalisation}'; use one of "
            f"{', '.join(NORMALISATION_CHOICES)}."
        )
    _set(request, "normalisation", normalisation)
    outputs = request.outputs
    if isinstance(outputs, str):
        outputs = (outputs,)
    outputs = tuple(dict.fromkeys(str(o).strip().lower() for o in outputs))
    unknown = [o for o in outputs if o not in allowed_outputs]
    if unknown:
        raise RequestError(
            f"Unknown output(s) {', '.join(unknown)}; choose from {', '.join(allowed_outputs)}."
        )
    # The first output (class map / change mask) is the product itself: always written.
    if allowed_outputs[0] not in outputs:
        outputs = (allowed_outputs[0], *outputs)
    _set(request, "outputs", outputs)
    name = default_name if request.name is None else request.name
    if not isinstance(name, str) or not _SAFE_NAME.match(name):
        raise RequestError(
            f"The output name {name!r} must be a plain file name (letters, digits, '.', '_', "
            "'-'), without folders."
        )
    _set(request, "name", name)


@dataclass(frozen=True)
class LandCoverRequest:
    """A land-cover mapping run (AMM-FuseNet and other ``task == "landcover"`` models).

    Attributes:
        inputs: One :class:`ModalityInput` per modality of the model (any order; matched by key).
        model: Registry name, e.g. ``"amm_fusenet_s2_s1_hunan"``; ``""``: the one the weights
            file's sidecar names (a published reference checkpoint has none: name it).
        weights: The weights file (project format with metadata, or a reference checkpoint).
        output_dir: Folder for the outputs (created if missing).
        aoi: Area of interest (None: wherever all inputs overlap).
        reference: Raster whose grid (CRS, pixel size, alignment) the outputs use. None: the
            finest-resolution file of the first modality (e.g. a 10 m Sentinel-2 band).
        pixel_grid: Treat the inputs as plain images on one pixel grid (same width and height,
            no georeferencing needed, e.g. PNG tiles); outputs then carry no CRS.
        tile: Tile edge in pixels (multiple of the model's output stride); None: the model's.
        overlap: Overlap between tiles in pixels; None: the default
            (:func:`~landfuse.core.run_options.default_overlap`).
        batch: Tiles per forward pass (halved automatically on GPU out-of-memory).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
        normalisation: ``auto`` (the weights' / registry's) or a mode name to force.
        flips: ``flips`` averages the tile's prediction with those of the tile flipped
            left-right and upside down (test-time augmentation); ``none`` (default) one pass.
        outputs: Which rasters to write: ``classes`` (always) and ``confidence``.
        name: Base name of the output files (default ``landcover``).
        cog: Write Cloud-Optimised GeoTIFFs with overviews (else plain tiled GeoTIFFs).
        overwrite: Replace outputs of the same name; otherwise an existing one is an error.
        executor: Where the tiles are computed (:mod:`~landfuse.core.executor_spec`):
            ``in-process`` (default), ``process:N``, ``local:N`` or ``dask://HOST:PORT``.
        resume: With an executor other than in-process: reuse the verified parts an
            interrupted run of the same inputs and settings left, and compute only the others.
        job_rows: Rows of tiles per job (None: chosen from the number of workers).
        parts_dir: Folder for the jobs' parts (None: beside the outputs); every worker must
            be able to write it.
        threads: torch threads of each process that computes tiles (None: torch's default
            in-process; with an executor, the cores shared among the local workers). The
            CPU's kernels can round differently with another thread count, so maps are
            byte-identical across executors for the same ``threads``.
    """

    task: ClassVar[str] = "landcover"

    inputs: Tuple[ModalityInput, ...]
    model: str
    weights: str
    output_dir: str
    aoi: Optional[AreaOfInterest] = None
    reference: Optional[str] = None
    pixel_grid: bool = False
    tile: Optional[int] = None
    overlap: Optional[int] = None
    batch: int = BATCH.default
    device: str = "auto"
    precision: str = "auto"
    normalisation: str = "auto"
    flips: str = "none"
    outputs: Tuple[str, ...] = LANDCOVER_OUTPUTS
    name: Optional[str] = None
    cog: bool = True
    overwrite: bool = False
    executor: str = EXECUTOR.default
    resume: bool = False
    job_rows: Optional[int] = None
    parts_dir: Optional[str] = None
    threads: Optional[int] = None

    def __post_init__(self) -> None:
        inputs: Any = self.inputs
        if isinstance(inputs, (ModalityInput, Mapping)):
            inputs = (inputs,)
        items: list[ModalityInput] = []
        for item in tuple(inputs):
            if isinstance(item, Mapping):
                item = _from_mapping(ModalityInput, item, "modality input")
            if not isinstance(item, ModalityInput):
                raise RequestError(f"Land-cover inputs must be ModalityInput items, got {item!r}.")
            items.append(item)
        if not items:
            raise RequestError("A land-cover run needs at least one input modality.")
        keys = [item.key for item in items]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise RequestError(f"Modality {', '.join(duplicates)} is given more than once.")
        _set(self, "inputs", tuple(items))
        _check_common(self, LANDCOVER_OUTPUTS, "landcover")

    @property
    def all_sources(self) -> Tuple[RasterSource, ...]:
        """Every raster source of the request, in modality order."""
        return tuple(source for item in self.inputs for source in item.sources)


@dataclass(frozen=True)
class ChangeRequest:
    """A change-detection run on a before/after pair (AMFNet and other ``change`` models).

    Attributes:
        before: The earlier image (one stack, or one file per band).
        after: The later image, same bands in the same order. The network is not symmetric
            (NETWORKS.md §3): swapping the dates changes the result.
        model: Registry name, e.g. ``"amfnet_rgb_levir"``; ``""``: the weights file's.
        weights: The weights file.
        output_dir: Folder for the outputs.
        threshold: Change probability from which a pixel is "changed" (0.5 = the arg-max).
        (other fields as in :class:`LandCoverRequest`; ``reference`` defaults to the finest
        "before" file; ``outputs`` are ``change`` (always) and ``probability``.)
    """

    task: ClassVar[str] = "change"

    before: Tuple[RasterSource, ...]
    after: Tuple[RasterSource, ...]
    model: str
    weights: str
    output_dir: str
    aoi: Optional[AreaOfInterest] = None
    reference: Optional[str] = None
    pixel_grid: bool = False
    tile: Optional[int] = None
    overlap: Optional[int] = None
    batch: int = BATCH.default
    device: str = "auto"
    precision: str = "auto"
    normalisation: str = "auto"
    flips: str = "none"
    outputs: Tuple[str, ...] = CHANGE_OUTPUTS
    name: Optional[str] = None
    cog: bool = True
    overwrite: bool = False
    threshold: float = 0.5
    executor: str = EXECUTOR.default
    resume: bool = False
    job_rows: Optional[int] = None
    parts_dir: Optional[str] = None
    threads: Optional[int] = None

    def __post_init__(self) -> None:
        _set(self, "before", _sources(self.before, "The 'before' image"))
        _set(self, "after", _sources(self.after, "The 'after' image"))
        _check_common(self, CHANGE_OUTPUTS, "change")
        threshold = self.threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise RequestError(f"The change threshold must be a number, got {threshold!r}.")
        if not 0.0 < float(threshold) < 1.0:
            raise RequestError(f"The change threshold must be between 0 and 1, got {threshold}.")
        _set(self, "threshold", float(threshold))

    @property
    def all_sources(self) -> Tuple[RasterSource, ...]:
        """Every raster source of the request: the 'before' files, then the 'after' files."""
        return (*self.before, *self.after)


Request = Union[LandCoverRequest, ChangeRequest]
_REQUEST_TYPES: Dict[str, Any] = {"landcover": LandCoverRequest, "change": ChangeRequest}


def _from_mapping(cls: Any, data: Mapping[str, Any], what: str) -> Any:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise RequestError(
            f"Unknown {what} field(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}."
        )
    try:
        return cls(**dict(data))
    except TypeError as error:
        raise RequestError(f"Incomplete {what}: {error}.") from None


def request_to_dict(request: Request) -> Dict[str, Any]:
    """Return a JSON-compatible dictionary of ``request`` with its ``task``.

    Args:
        request: A land-cover or change request.

    Returns:
        Plain dicts, lists, strings and numbers; :func:`request_from_dict` reverses it.
    """
    data = asdict(request)
    data["task"] = request.task

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        return value

    return plain(data)


def request_from_dict(data: Mapping[str, Any]) -> Request:
    """Build a request from a dictionary such as :func:`request_to_dict` returns.

    Args:
        data: Must hold ``task`` (``"landcover"`` or ``"change"``) and the request's fields.

    Returns:
        The validated request.

    Raises:
        RequestError: for a missing or unknown task, unknown or missing fields, or any value
            the request refuses.
    """
    if not isinstance(data, Mapping):
        raise RequestError("A request must be a JSON object.")
    body = dict(data)
    task = body.pop("task", None)
    cls = _REQUEST_TYPES.get(str(task))
    if cls is None:
        raise RequestError(f"The request needs 'task': 'landcover' or 'change', got {task!r}.")
    if "aoi" in body and body["aoi"] is not None:
        body["aoi"] = _from_mapping(AreaOfInterest, body["aoi"], "area of interest")
    return _from_mapping(cls, body, f"{task} request")
