"""The ``landfuse`` command line: land-cover mapping and change detection on whole scenes.

``landfuse predict-landcover`` and ``landfuse predict-change`` build the same request dataclasses
as the QGIS dock and call the same engine (:mod:`landfuse.core.engine`), so the validation and
the outputs are identical. ``landfuse models`` lists the registry. Training subcommands are added
by :mod:`landfuse.core.train_cli` when it is present (its ``register(subparsers)`` adds parsers
whose ``func(args) -> int`` default is called).

Exit status: 0 success, 2 bad input or a problem the user can fix (the message says what to do),
3 cancelled (Ctrl-C, SIGINT or SIGTERM: the run stops cleanly and leaves no file behind;
:mod:`landfuse.core.signals`), 1 unexpected error (a traceback is printed; please report it).
Warnings the user must read before trusting a map (bands matched by position, input values
unlike the model's) are printed as ``landfuse: warning: ...`` lines on standard error and kept
in the run report.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import threading
import time
import traceback
from typing import Any, Optional, Sequence, TextIO

from .errors import EXIT_OK, LandFuseError, RequestError, exit_code_for
from .memory import format_bytes
from .requests import (
    DEVICE_CHOICES,
    NORMALISATION_CHOICES,
    PRECISION_CHOICES,
    AreaOfInterest,
    ChangeRequest,
    LandCoverRequest,
    ModalityInput,
    RasterSource,
)
from .signals import StopOnSignal, stop_requested

logger = logging.getLogger(__name__)

__all__ = ["ProgressBar", "build_parser", "main", "parse_band_list"]

#: Modality keys offered when the registry cannot be read (it is torch-free, so rarely).
_FALLBACK_MODALITIES = {
    "s2": "Sentinel-2 L1C/L2A (13 bands)",
    "s1": "Sentinel-1 VV + VH backscatter",
    "dem": "digital elevation model",
    "rgb": "8-bit RGB",
    "rgbir": "8-bit RGB + near infrared",
    "dsm": "digital surface model",
}

_LANDCOVER_EPILOG = """\
Inputs are read on the grid of the reference raster (default: the finest-resolution file given
to the first modality, e.g. a 10 m Sentinel-2 band), whatever their CRS, pixel size or extent:
they are warped on the fly, nothing is resampled to disk. Pixels where any input has no data,
or outside the area of interest, get the class value 255 (nodata).

Outputs in --out: <name>_classes.tif (uint8 classes with colour table and names, nodata 255),
<name>_confidence.tif (uint8 probability of the chosen class in %, nodata 255), a .qml style
next to each (QGIS applies it automatically) and <name>_report.json (inputs, model, weights
sha256, device, timings, area of every class in hectares).

examples:
  landfuse predict-landcover --s2 S2_stack.tif --s1 S1_VV_VH.tif \\
      --model amm_fusenet_s2_s1_hunan --weights hunan.pt --out results/
  landfuse predict-landcover --s2 T30UWU_B01.tif T30UWU_B02.tif ... T30UWU_B12.tif \\
      --dem dem.tif --model amm_fusenet_s2_dem_hunan --weights hunan2.pt \\
      --aoi parcels.gpkg --out results/ --device cuda --precision bf16
"""

_CHANGE_EPILOG = """\
The 'after' image is read on the grid of the 'before' image (or of --reference) and warped on
the fly if their CRS, pixel size or extent differ. The network is not symmetric: give the
earlier date as --before.

Outputs in --out (default name: change): <name>_mask.tif (uint8: 0 no change, 1 change,
255 nodata), <name>_probability.tif (float32 0-1, nodata -1), a .qml style next to each (QGIS
applies it automatically) and <name>_report.json (changed area in hectares).

examples:
  landfuse predict-change --before 2015.tif --after 2017.tif \\
      --model amfnet_s2 --weights oscd.pt --out changes/
  landfuse predict-change --before A/tile.png --after B/tile.png --pixel-grid \\
      --model amfnet_rgb_levir --weights levir.pt --out changes/
"""


def parse_band_list(text: str) -> tuple[int | str, ...]:
    """Parse ``"1,2,3"`` or ``"B02,B03,B8A"`` (mixed allowed) into a band selection.

    Args:
        text: Comma-separated 1-based band numbers or band descriptions.

    Returns:
        The selection (numbers as ints).

    Raises:
        argparse.ArgumentTypeError: for an empty list.
    """
    items = [part.strip() for part in text.split(",") if part.strip()]
    if not items:
        raise argparse.ArgumentTypeError("give band numbers or names separated by commas")
    return tuple(int(item) if item.isdigit() else item for item in items)


def _modalities() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Modality keys with their title and band names, from the registry (no torch needed)."""
    fallback: dict[str, tuple[str, tuple[str, ...]]] = {
        key: (title, ()) for key, title in _FALLBACK_MODALITIES.items()
    }
    try:
        from ..models import registry
    except ImportError:
        return fallback
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for spec in registry.list_model_specs():
        for modality in spec.modalities:
            found.setdefault(modality.key, (modality.title, modality.band_names))
    return found or fallback


def _model_lines(task: str) -> str:
    try:
        from ..models import registry

        specs = registry.list_model_specs(task)
    except (ImportError, LandFuseError):
        return ""
    lines = [f"  {s.name:<32} {s.title}" for s in specs]
    return "models:\n" + "\n".join(lines) + "\n\n"


def _add_common(parser: argparse.ArgumentParser, task: str) -> None:
    """Options shared by both prediction commands."""
    model = parser.add_argument_group("model")
    model.add_argument("--model", required=True, help="registry model name (see `landfuse models`)")
    model.add_argument(
        "--weights",
        required=True,
        metavar="FILE",
        help="weights file: a LandFuse .pt with its metadata, or a published reference checkpoint",
    )
    area = parser.add_argument_group("grid and area of interest")
    area.add_argument(
        "--reference",
        metavar="FILE",
        help="raster whose grid (CRS, pixel size, alignment) the outputs use",
    )
    where = area.add_mutually_exclusive_group()
    where.add_argument(
        "--aoi",
        metavar="FILE",
        help="polygons (GeoPackage, GeoJSON, Shapefile) delimiting the area to map",
    )
    where.add_argument(
        "--bounds",
        nargs=4,
        type=float,
        metavar=("XMIN", "YMIN", "XMAX", "YMAX"),
        help="rectangle to map, in --bounds-crs (default: the reference grid's CRS)",
    )
    area.add_argument("--aoi-layer", metavar="NAME", help="layer of a multi-layer --aoi file")
    area.add_argument(
        "--bounds-crs", metavar="CRS", help="CRS of --bounds, e.g. EPSG:4326 (longitude/latitude)"
    )
    area.add_argument(
        "--pixel-grid",
        action="store_true",
        help="inputs are plain images without georeferencing (e.g. PNG tiles) of the same size; "
        "pixels are used as they are and the outputs carry no CRS",
    )
    run = parser.add_argument_group("processing")
    run.add_argument(
        "--tile", type=int, metavar="PX", help="tile edge in pixels (default: the model's, 256)"
    )
    run.add_argument(
        "--overlap",
        type=int,
        metavar="PX",
        help="overlap between tiles in pixels, blended smoothly (default: tile/8)",
    )
    run.add_argument("--batch", type=int, default=4, metavar="N", help="tiles per batch (4)")
    run.add_argument(
        "--device",
        default="auto",
        metavar="DEV",
        help=f"{', '.join(DEVICE_CHOICES)} or cuda:N (auto: GPU if present, else CPU)",
    )
    run.add_argument(
        "--precision",
        default="auto",
        choices=PRECISION_CHOICES,
        help="auto: bf16/fp16 where the hardware supports it, else fp32",
    )
    run.add_argument(
        "--normalisation",
        default="auto",
        choices=NORMALISATION_CHOICES,
        help="auto: as the weights/model were trained; minmax_per_tile: the reference "
        "AMM-FuseNet scaling (each band of each tile to 0-1)",
    )
    out = parser.add_argument_group("outputs")
    out.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    out.add_argument("--name", metavar="NAME", help=f"base name of the output files ({task})")
    out.add_argument(
        "--no-cog",
        action="store_true",
        help="write plain tiled GeoTIFFs instead of Cloud-Optimised GeoTIFFs with overviews",
    )
    out.add_argument("--overwrite", action="store_true", help="replace outputs of the same name")
    out.add_argument(
        "--validate-only",
        action="store_true",
        help="check everything (files, grids, weights, disk) and stop before computing",
    )
    out.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    out.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    """Build the ``landfuse`` argument parser with every subcommand.

    Returns:
        The parser; each subcommand sets ``func(args) -> int``.
    """
    parser = argparse.ArgumentParser(
        prog="landfuse",
        description="Multi-modal land-cover mapping (AMM-FuseNet) and change detection (AMFNet) "
        "on whole satellite scenes, tiled and streamed to Cloud-Optimised GeoTIFFs.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")

    landcover = subparsers.add_parser(
        "predict-landcover",
        help="map land cover from Sentinel-2 plus Sentinel-1 and/or a DEM",
        description="Map land cover over a scene with a multi-modal network (AMM-FuseNet).",
        epilog=_model_lines("landcover") + _LANDCOVER_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inputs = landcover.add_argument_group(
        "inputs (give the modalities the model takes; a modality may be one multi-band file or "
        "one file per band, in the model's band order)"
    )
    for key, (title, band_names) in _modalities().items():
        inputs.add_argument(f"--{key}", nargs="+", metavar="FILE", help=f"{title}: raster(s)")
        example = ",".join(band_names[:3]) if band_names else "B02,B03,B04"
        inputs.add_argument(
            f"--{key}-bands",
            type=parse_band_list,
            metavar="LIST",
            help=f"bands of a single --{key} file in the model's order: numbers (e.g. "
            f"{','.join(str(i + 1) for i in range(min(3, len(band_names) or 3)))}) or band "
            f"descriptions (e.g. {example})",
        )
        inputs.add_argument(
            f"--{key}-nodata", type=float, metavar="VALUE", help=f"nodata value of --{key}"
        )
    _add_common(landcover, "landcover")
    landcover.add_argument(
        "--no-confidence", action="store_true", help="do not write the confidence raster"
    )
    landcover.set_defaults(func=_predict_landcover)

    change = subparsers.add_parser(
        "predict-change",
        help="detect changes between two dates (before / after)",
        description="Detect changes between a 'before' and an 'after' image (AMFNet).",
        epilog=_model_lines("change") + _CHANGE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pair = change.add_argument_group("inputs")
    pair.add_argument("--before", nargs="+", required=True, metavar="FILE", help="earlier image")
    pair.add_argument("--after", nargs="+", required=True, metavar="FILE", help="later image")
    pair.add_argument(
        "--bands",
        type=parse_band_list,
        metavar="LIST",
        help="bands of single-file images, same for both dates: numbers or names",
    )
    pair.add_argument("--nodata", type=float, metavar="VALUE", help="nodata value of both images")
    _add_common(change, "change")
    change.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="change probability from which a pixel is marked changed (0.5)",
    )
    change.add_argument(
        "--no-probability", action="store_true", help="do not write the change probability"
    )
    change.set_defaults(func=_predict_change)

    models = subparsers.add_parser("models", help="list the models and their inputs")
    models.add_argument("--task", choices=("landcover", "change"), help="only this task")
    models.set_defaults(func=_list_models)

    train_cli = _optional_train_cli()
    if train_cli is not None:
        train_cli.register(subparsers)
    return parser


def _optional_train_cli() -> Any:
    """Import ``core/train_cli.py`` when it exists (training is an optional part)."""
    name = f"{__package__}.train_cli"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name == name:
            return None
        raise


def _sources(files: Sequence[str], bands: Any, nodata: Optional[float], what: str) -> tuple:
    if bands and len(files) > 1:
        raise RequestError(
            f"Band selection for {what} applies to a single file; with one file per band, give "
            "the files in the model's band order instead."
        )
    return tuple(RasterSource(path, bands=tuple(bands or ()), nodata=nodata) for path in files)


def _aoi(args: argparse.Namespace) -> Optional[AreaOfInterest]:
    if args.aoi:
        return AreaOfInterest(polygon_file=args.aoi, layer=args.aoi_layer)
    if args.bounds:
        return AreaOfInterest(bounds=tuple(args.bounds), crs=args.bounds_crs)
    if args.bounds_crs or args.aoi_layer:
        raise RequestError("--bounds-crs needs --bounds, and --aoi-layer needs --aoi.")
    return None


def _common_fields(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "model": args.model,
        "weights": args.weights,
        "output_dir": args.out,
        "aoi": _aoi(args),
        "reference": args.reference,
        "pixel_grid": args.pixel_grid,
        "tile": args.tile,
        "overlap": args.overlap,
        "batch": args.batch,
        "device": args.device,
        "precision": args.precision,
        "normalisation": args.normalisation,
        "name": args.name,
        "cog": not args.no_cog,
        "overwrite": args.overwrite,
    }


def _predict_landcover(args: argparse.Namespace) -> int:
    inputs = []
    for key in _modalities():
        files = getattr(args, key.replace("-", "_"), None)
        if files:
            bands = getattr(args, f"{key}_bands", None)
            nodata = getattr(args, f"{key}_nodata", None)
            inputs.append(ModalityInput(key, _sources(files, bands, nodata, f"--{key}")))
    if not inputs:
        raise RequestError(
            "Give the input rasters, e.g. --s2 S2.tif --s1 S1.tif (see --help for the modalities)."
        )
    outputs = ("classes",) if args.no_confidence else ("classes", "confidence")
    request = LandCoverRequest(inputs=tuple(inputs), outputs=outputs, **_common_fields(args))
    return _execute(request, args)


def _predict_change(args: argparse.Namespace) -> int:
    outputs = ("change",) if args.no_probability else ("change", "probability")
    request = ChangeRequest(
        before=_sources(args.before, args.bands, args.nodata, "--before"),
        after=_sources(args.after, args.bands, args.nodata, "--after"),
        threshold=args.threshold,
        outputs=outputs,
        **_common_fields(args),
    )
    return _execute(request, args)


def _execute(request: Any, args: argparse.Namespace) -> int:
    import json

    from . import engine  # torch is imported only when something is computed

    if args.validate_only:
        summary = engine.validate(request, warn=_print_warning)
        if args.json:
            _say(json.dumps(summary, indent=2))
        else:
            memory = summary.get("memory") or {}
            need = memory.get("estimate_bytes")
            free = memory.get("available_host_bytes")
            room = (
                f" Needs about {format_bytes(need)} of memory"
                + (f" ({format_bytes(free)} free)." if free else ".")
                if need
                else ""
            )
            _say(
                f"OK: {summary['tiles']} tiles of {summary['tile']} px on a "
                f"{summary['grid']['width']}x{summary['grid']['height']} grid, "
                f"{summary['device']} ({summary['precision']}).{room}"
            )
        return EXIT_OK
    bar = None if args.quiet else ProgressBar(sys.stderr)
    try:
        result = engine.run(request, progress=bar, cancel=stop_requested, warn=_print_warning)
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        _say(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        for key, path in result.outputs.items():
            _say(f"{key}: {path}")
    return EXIT_OK


def _print_warning(warning: Any) -> None:
    """Print a run warning on standard error (after the progress line, if one is drawn)."""
    sys.stderr.write(f"\nlandfuse: warning: {warning.message}\n")
    sys.stderr.flush()


def _say(text: str) -> None:
    """Write a result line to standard output (progress and errors go to standard error)."""
    sys.stdout.write(text + "\n")


def _list_models(args: argparse.Namespace) -> int:
    from ..models import registry

    for spec in registry.list_model_specs(args.task):
        inputs = " + ".join(f"{m.key} ({len(m.bands)} bands)" for m in spec.modalities)
        classes = ", ".join(c.name for c in spec.classes)
        _say(f"{spec.name}\n  {spec.title}\n  task: {spec.task}; inputs: {inputs}")
        _say(f"  classes: {classes}\n  tile {spec.tile_size} px; weights: {spec.weights_note}\n")
    return EXIT_OK


class ProgressBar:
    """A progress bar on a terminal; elsewhere (a log file, a pipe) a line at least every few
    seconds.

    Off a terminal a line is written at every tenth of the work, at every change of stage, and
    whenever :data:`HEARTBEAT_S` seconds passed since the last line, so a log shows within
    seconds that the run is alive; a timer thread writes the same line again when a single
    batch takes longer than that.

    Args:
        stream: Where to draw (standard error).
        width: Bar width in characters.
        heartbeat_s: Longest silence off a terminal, in seconds.
    """

    HEARTBEAT_S = 5.0

    def __init__(self, stream: TextIO, width: int = 30, heartbeat_s: Optional[float] = None):
        self.stream = stream
        self.width = width
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.heartbeat_s = self.HEARTBEAT_S if heartbeat_s is None else float(heartbeat_s)
        self._last_step = -1
        self._last_stage = ""
        self._last_line = ""
        self._last_write = time.monotonic()
        self._drawn = False
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._timer: Optional[threading.Thread] = None
        if not self.tty and self.heartbeat_s > 0:
            self._timer = threading.Thread(target=self._beat, name="landfuse-progress", daemon=True)
            self._timer.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s / 2):
            with self._lock:
                silent = time.monotonic() - self._last_write
                if self._last_line and silent >= self.heartbeat_s:
                    elapsed = _duration(time.monotonic() - self._started)
                    self._write(f"{self._last_line} (still working, {elapsed} elapsed)\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
        self._last_write = time.monotonic()

    def __call__(self, progress: Any) -> None:
        """Draw one :class:`~landfuse.core.runner.Progress` update."""
        fraction = min(max(float(progress.fraction), 0.0), 1.0)
        eta = progress.eta_seconds
        tiles = (
            f" {progress.tiles_done}/{progress.tiles_total} tiles" if progress.tiles_total else ""
        )
        left = f", {_duration(eta)} left" if eta is not None and fraction < 1.0 else ""
        with self._lock:
            if self.tty:
                filled = round(fraction * self.width)
                bar = "#" * filled + "-" * (self.width - filled)
                message = progress.message[:40]
                self._write(f"\r[{bar}] {fraction * 100:5.1f}%{tiles}{left} {message:<40}")
                self._drawn = True
                return
            step = int(fraction * 10)
            line = f"{fraction * 100:5.1f}%{tiles}{left}: {progress.message}"
            quiet_for = time.monotonic() - self._last_write
            same = step == self._last_step and progress.stage == self._last_stage
            self._last_line = line
            if same and quiet_for < self.heartbeat_s:
                return
            self._last_step, self._last_stage = step, progress.stage
            self._write(line + "\n")

    def close(self) -> None:
        """End the bar's line and stop the heartbeat."""
        self._stop.set()
        if self._timer is not None:
            self._timer.join(timeout=1.0)
        if self.tty and self._drawn:
            self._write(f"\n{_duration(time.monotonic() - self._started)} elapsed\n")


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _report_error(error: BaseException, stream: TextIO) -> None:
    code = exit_code_for(error)
    if code == 3:
        detail = str(error) if isinstance(error, LandFuseError) and str(error) else ""
        stream.write(f"landfuse: cancelled: {detail or 'no output was written.'}\n")
    elif code == 2:
        stream.write(f"landfuse: error: {error}\n")
    else:
        traceback.print_exc(file=stream)
        stream.write(
            f"landfuse: unexpected error ({type(error).__name__}: {error}); please report it "
            "with the traceback above.\n"
        )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``landfuse`` console script.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 ok, 2 bad input, 3 cancelled, 1 unexpected.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # GDAL's own error lines (rasterio logs them) repeat, in GDAL's words, what the error
        # message below says; with --verbose they are shown.
        logging.getLogger("rasterio").setLevel(logging.CRITICAL)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    stop = StopOnSignal()
    on_main_thread = threading.current_thread() is threading.main_thread()
    try:
        if on_main_thread:
            stop.install()
        return int(func(args) or EXIT_OK)
    except (Exception, KeyboardInterrupt) as error:
        _report_error(error, sys.stderr)
        return exit_code_for(error)
    finally:
        if on_main_thread:
            stop.restore()


if __name__ == "__main__":
    sys.exit(main())
