"""``landfuse predict-batch``: many scenes (a list, or a folder of dates) as one submission.

``landfuse predict-batch landcover --scenes scenes.csv --weights W --out DIR --executor local:4``
maps every scene of the list with the same weights and options; the jobs of all scenes go to
one executor at once (:func:`landfuse.core.engine.run_batch`), and each scene's outputs land in
``DIR/<scene>/`` as soon as its last job is back.

The scenes are either

* a CSV file with a ``name`` column and one column per input slot (``s2``, ``s1``, ``dem``;
  ``before``, ``after``), each cell a file or folder, several separated by ``;``, relative to
  the CSV's folder; or
* a folder with one subfolder per scene (a date), whose files or folders are matched to the
  slots by the start of their names (``S2…``, ``s1_vv_vh.tif``, ``dem.tif``; ``before…``,
  ``after…``).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

from ..models import registry
from .cli import ProgressBar, add_common, print_warning, request_fields
from .errors import EXIT_OK, RequestError
from .requests import RasterSource
from .signals import stop_requested
from .tasks import TASKS, Task, get_task

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt", ".img", ".png", ".safe")


def register(subparsers: Any) -> None:
    """Add ``predict-batch <task>`` to the ``landfuse`` command."""
    batch = subparsers.add_parser(
        "predict-batch",
        help="map many scenes (a CSV list or a folder of dates) as one submission",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tasks = batch.add_subparsers(dest="batch_task", metavar="TASK")
    for task in TASKS:
        parser = tasks.add_parser(task.name, help=task.summary)
        parser.add_argument(
            "--scenes",
            required=True,
            metavar="CSV|FOLDER",
            help="a CSV with a name column and one column per input ("
            + ", ".join(slot_names(task))
            + "), or a folder with one subfolder per scene",
        )
        add_common(parser, task)
        parser.set_defaults(func=_run, task=task.name)


def slot_names(task: Task) -> list[str]:
    return [slot.key for slot in task.slot_keys(registry.list_model_specs(task.name))]


def read_scenes(path: str, task: Task) -> dict[str, dict[str, tuple[RasterSource, ...]]]:
    """The scenes of a CSV or a folder: name -> slot -> sources.

    Raises:
        RequestError: for a missing list, an unknown column, a scene without inputs or files
            that do not exist.
    """
    where = Path(path)
    slots = slot_names(task)
    if where.is_dir():
        scenes = _folder_scenes(where, slots)
    elif where.is_file():
        scenes = _csv_scenes(where, slots)
    else:
        raise RequestError(f"{path} is neither a CSV file nor a folder of scenes.")
    if not scenes:
        raise RequestError(
            f"{path} lists no scene; give a CSV with the columns name, {', '.join(slots)}, or a "
            "folder with one subfolder per scene."
        )
    for name, inputs in scenes.items():
        for slot, sources in inputs.items():
            for source in sources:
                if not Path(source.path).exists():
                    raise RequestError(f"Scene '{name}', {slot}: {source.path} does not exist.")
    return scenes


def _csv_scenes(path: Path, slots: list[str]) -> dict[str, dict[str, tuple[RasterSource, ...]]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    scenes: dict[str, dict[str, tuple[RasterSource, ...]]] = {}
    for number, row in enumerate(rows, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        unknown = sorted(set(row) - {"name", *slots})
        if unknown:
            raise RequestError(
                f"{path}: unknown column(s) {', '.join(unknown)}; the columns are name, "
                f"{', '.join(slots)}."
            )
        name = row.get("name") or f"scene{number - 1}"
        if name in scenes:
            raise RequestError(f"{path}, line {number}: the scene name '{name}' is used twice.")
        inputs = {
            slot: tuple(
                RasterSource(str((path.parent / part.strip()).absolute()))
                for part in row[slot].split(";")
                if part.strip()
            )
            for slot in slots
            if row.get(slot)
        }
        if not inputs:
            raise RequestError(f"{path}, line {number}: scene '{name}' has no input.")
        scenes[name] = inputs
    return scenes


def _folder_scenes(path: Path, slots: list[str]) -> dict[str, dict[str, tuple[RasterSource, ...]]]:
    scenes: dict[str, dict[str, tuple[RasterSource, ...]]] = {}
    # Longest slot names first: "s1" must not take what "s12…" would name (none today).
    ordered = sorted(slots, key=len, reverse=True)
    for folder in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        inputs: dict[str, list[RasterSource]] = {}
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith(".") or (
                entry.is_file() and entry.suffix.lower() not in RASTER_SUFFIXES
            ):
                continue
            slot = next((s for s in ordered if entry.name.lower().startswith(s.lower())), None)
            if slot is not None:
                inputs.setdefault(slot, []).append(RasterSource(str(entry.absolute())))
        if inputs:
            scenes[folder.name] = {k: tuple(v) for k, v in inputs.items()}
    return scenes


def _run(args: argparse.Namespace) -> int:
    from . import engine

    task = get_task(args.task)
    scenes = read_scenes(args.scenes, task)
    fields = request_fields(args, task)
    requests = [
        task.make_request(
            args.model or "",
            args.weights,
            inputs,
            output_dir=str(Path(args.out) / name),
            **fields,
        )
        for name, inputs in scenes.items()
    ]
    if args.validate_only:
        for name, request in zip(scenes, requests):
            summary = engine.validate(request, warn=print_warning)
            sys.stdout.write(f"OK: {name}: {summary['tiles']} tiles\n")
        return EXIT_OK
    bar = None if args.quiet else ProgressBar(sys.stderr)
    try:
        results = engine.run_batch(
            requests, args.executor, progress=bar, cancel=stop_requested, warn=print_warning
        )
    finally:
        if bar is not None:
            bar.close()
    for name, result in zip(scenes, results):
        main = next(iter(result.outputs.values()))
        sys.stdout.write(f"{name}: {main}\n")
    return EXIT_OK
