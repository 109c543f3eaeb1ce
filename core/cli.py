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
import textwrap
import threading
import time
import traceback
from typing import Any, Optional, Sequence, TextIO

from ..models import registry
from .band_mapping import parse_band_selection
from .errors import EXIT_OK, LandFuseError, RequestError, exit_code_for
from .formatting import format_duration
from .memory import format_bytes
from .requests import AreaOfInterest, RasterSource
from .run_options import RUN_OPTIONS, RunOption
from .signals import StopOnSignal, stop_requested
from .tasks import TASKS, Task, get_task

logger = logging.getLogger(__name__)

__all__ = ["ProgressBar", "build_parser", "main", "parse_band_list"]

_OUTPUTS_NOTE = (
    "a .qml style next to each (QGIS applies it automatically) and <name>_report.json (inputs, "
    "how their bands were matched, model, weights sha256, device, timings, areas in hectares)."
)


def parse_band_list(text: str) -> tuple[int | str, ...]:
    """Parse ``"1,2,3"`` or ``"B02,B03,B8A"`` (mixed allowed) into a band selection.

    Args:
        text: Comma-separated 1-based band numbers or band descriptions.

    Returns:
        The selection (numbers as ints).

    Raises:
        argparse.ArgumentTypeError: for an empty list.
    """
    selection = parse_band_selection(text)
    if not selection:
        raise argparse.ArgumentTypeError("give band numbers or names separated by commas")
    return selection


def _escape(text: str) -> str:
    """Help text as argparse wants it (it %-formats argument help)."""
    return text.replace("%", "%%")


def _epilog(task: Task, specs: Sequence[Any]) -> str:
    """Models, alignment, outputs and examples of a task's command, from the task and registry."""
    models = "".join(f"  {s.name:<32} {s.title}\n" for s in specs)
    outputs = ", ".join(f"<name>_{p.suffix}.tif ({p.help})" for p in task.products)
    paragraphs = [
        task.alignment,
        f"Outputs in --out (default name: {task.name}): {outputs}, {_OUTPUTS_NOTE}",
    ]
    text = "\n\n".join(textwrap.fill(p, 96) for p in paragraphs if p)
    return (f"models:\n{models}\n" if models else "") + text + "\n\nexamples:\n" + task.examples


def _add_option(group: Any, option: RunOption) -> None:
    """A run option as a flag: its type, default, limits and help from the option itself."""
    default = option.default
    shown = option.automatic or default
    help_text = _escape(f"{option.help} (default: {shown})")
    if option.kind == "text":
        group.add_argument(
            option.flag, default=default, metavar=option.name.upper()[:4], help=help_text
        )
        return
    if option.kind == "choice":
        if option.strict:
            group.add_argument(option.flag, default=default, choices=option.choices, help=help_text)
        else:
            group.add_argument(
                option.flag,
                default=default,
                metavar=option.name.upper()[:4],
                help=f"{', '.join(option.choices)}: {help_text}",
            )
        return
    kind = float if option.kind == "float" else int
    group.add_argument(
        option.flag, type=kind, default=default, metavar=option.name.upper()[:4], help=help_text
    )


def _add_slots(parser: argparse.ArgumentParser, task: Task, specs: Sequence[Any]) -> None:
    """One ``--<slot>`` flag per input slot of the task's models (and its band selection)."""
    inputs = parser.add_argument_group(
        "inputs (give the ones the model takes; each may be one multi-band file, its band files "
        "in any order (named ..._B02.tif, ..._B8A.jp2), or a folder of them such as a Sentinel-2 "
        ".SAFE product)"
    )
    for slot in task.slot_keys(specs):
        inputs.add_argument(
            f"--{slot.key}", nargs="+", metavar="FILE", help=_escape(f"{slot.title}: {slot.help}")
        )
        if task.shared_bands:
            continue
        names = slot.modality.band_names
        inputs.add_argument(
            f"--{slot.key}-bands",
            type=parse_band_list,
            metavar="LIST",
            help=f"bands of a single --{slot.key} file in the model's order: numbers (e.g. "
            f"{','.join(str(i + 1) for i in range(min(3, len(names))))}) or band descriptions "
            f"(e.g. {','.join(names[:3])})",
        )
        inputs.add_argument(
            f"--{slot.key}-nodata",
            type=float,
            metavar="VALUE",
            help=f"nodata value of --{slot.key}",
        )
    if task.shared_bands:
        inputs.add_argument(
            "--bands",
            type=parse_band_list,
            metavar="LIST",
            help="bands of single-file images, the same for every input: numbers or names",
        )
        inputs.add_argument(
            "--nodata", type=float, metavar="VALUE", help="nodata value of every input"
        )


def add_common(parser: argparse.ArgumentParser, task: Task) -> None:
    """Options of every prediction command: model, grid and area, run options, outputs."""
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model",
        help="registry model name (see `landfuse models`); default: the one the weights file "
        "names (a published reference checkpoint needs it)",
    )
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
    for option in (*RUN_OPTIONS, *task.options):
        _add_option(run, option)
    add_job_flags(run)
    out = parser.add_argument_group("outputs")
    out.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    out.add_argument("--name", metavar="NAME", help=f"base name of the output files ({task.name})")
    for product in task.products:
        if not product.main:
            out.add_argument(
                f"--no-{product.key}",
                action="store_true",
                help=_escape(f"do not write the {product.title.lower()} raster"),
            )
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

    One prediction command per task (:mod:`landfuse.core.tasks`), with one input flag per slot
    of the registry's models of the task, read when the parser is built.

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
    for task in TASKS:
        specs = registry.list_model_specs(task.name)
        command = subparsers.add_parser(
            task.command,
            help=task.summary,
            description=task.description,
            epilog=_epilog(task, specs),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_slots(command, task, specs)
        add_common(command, task)
        command.set_defaults(func=_predict, task=task.name)

    models = subparsers.add_parser("models", help="list the models and their inputs")
    models.add_argument("--task", choices=tuple(t.name for t in TASKS), help="only this task")
    models.set_defaults(func=_list_models)

    train_cli = _optional_train_cli()
    if train_cli is not None:
        train_cli.register(subparsers)
    from . import batch_cli

    batch_cli.register(subparsers)
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


def _slot_sources(args: argparse.Namespace, task: Task) -> dict[str, tuple]:
    """The files given per slot, with their band selection and nodata."""
    sources = {}
    for slot in task.slot_keys(registry.list_model_specs(task.name)):
        attribute = slot.key.replace("-", "_")
        files = getattr(args, attribute, None)
        if not files:
            continue
        prefix = "" if task.shared_bands else f"{attribute}_"
        bands = getattr(args, f"{prefix}bands", None)
        nodata = getattr(args, f"{prefix}nodata", None)
        sources[slot.key] = _sources(files, bands, nodata, f"--{slot.key}")
    return sources


def add_job_flags(group: Any) -> None:
    """The flags of runs split into jobs (every executor but in-process)."""
    group.add_argument(
        "--resume",
        action="store_true",
        help="with an --executor other than in-process: reuse the verified parts an "
        "interrupted run of the same inputs and settings left, and compute only the others",
    )
    group.add_argument(
        "--job-rows",
        type=int,
        metavar="N",
        help="rows of tiles per job (default: enough jobs for every worker, at least 8 rows)",
    )
    group.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch threads of each process computing tiles (default: torch's own in-process; "
        "with an --executor, this machine's cores shared among its workers); give the same "
        "number to get byte-identical maps from different executors",
    )
    group.add_argument(
        "--parts-dir",
        metavar="DIR",
        help="folder for the jobs' parts, which every worker must be able to write (default: "
        "beside the outputs)",
    )


def job_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The request fields of :func:`add_job_flags`."""
    return {
        "resume": args.resume,
        "job_rows": args.job_rows,
        "parts_dir": args.parts_dir,
        "threads": args.threads,
    }


def _predict(args: argparse.Namespace) -> int:
    task = get_task(args.task)
    sources = _slot_sources(args, task)
    if not sources:
        example = " ".join(
            f"--{s.key} {s.key.upper()}.tif"
            for s in task.slot_keys(registry.list_model_specs(task.name))[:2]
        )
        raise RequestError(
            f"Give the input rasters, e.g. {example} (see --help for the inputs of each model)."
        )
    request = task.make_request(
        args.model or "", args.weights, sources, output_dir=args.out, **request_fields(args, task)
    )
    return _execute(request, args)


def request_fields(args: argparse.Namespace, task: Task) -> dict[str, Any]:
    """The request fields of :func:`add_common`'s flags, but the model, weights and folder."""
    outputs = tuple(
        p.key for p in task.products if p.main or not getattr(args, f"no_{p.key}", False)
    )
    fields: dict[str, Any] = {
        option.name: getattr(args, option.name) for option in (*RUN_OPTIONS, *task.options)
    }
    fields.update(job_fields(args))
    fields.update(
        aoi=_aoi(args),
        reference=args.reference,
        pixel_grid=args.pixel_grid,
        name=args.name,
        cog=not args.no_cog,
        overwrite=args.overwrite,
        outputs=outputs,
    )
    return fields


def _execute(request: Any, args: argparse.Namespace) -> int:
    import json

    from . import engine  # torch is imported only when something is computed

    if args.validate_only:
        summary = engine.validate(request, warn=print_warning)
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
        result = engine.run(request, progress=bar, cancel=stop_requested, warn=print_warning)
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        _say(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        for key, path in result.outputs.items():
            _say(f"{key}: {path}")
    return EXIT_OK


def print_warning(warning: Any) -> None:
    """Print a run warning on standard error (after the progress line, if one is drawn)."""
    sys.stderr.write(f"\nlandfuse: warning: {warning.message}\n")
    sys.stderr.flush()


def _say(text: str) -> None:
    """Write a result line to standard output (progress and errors go to standard error)."""
    sys.stdout.write(text + "\n")


def _list_models(args: argparse.Namespace) -> int:
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
                    elapsed = format_duration(time.monotonic() - self._started)
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
        left = f", {format_duration(eta)} left" if eta is not None and fraction < 1.0 else ""
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
            self._write(f"\n{format_duration(time.monotonic() - self._started)} elapsed\n")


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
