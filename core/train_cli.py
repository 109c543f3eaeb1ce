"""``landfuse train-landcover``, ``landfuse train-change`` and ``landfuse evaluate``.

The seeds' ``train.py`` / ``test.py`` workflow without hard-coded paths: every dataset, model,
recipe value and output folder is an option. :func:`register` adds the subcommands to the
engine's parser (:mod:`landfuse.core.cli` calls it); each sets ``func(args) -> int``.

Datasets on the command line:

- a published layout with ``--data ROOT``: AMM-FuseNet (``ann_dir/ s2_dir/ s1_dir/ dem_dir/``
  with ``train/ val/ test/``) for land cover, LEVIR-CD (``A/ B/ label/``, with ``train/ val/
  test/`` sub-folders or ``list/<split>.txt``) for change;
- chips cut from full rasters with ``--scene FILE... LABEL`` (repeatable): the input rasters in
  the model's order followed by the label raster or a vector file of labelled polygons
  (``--label-field``); ``--val-scene`` likewise for validation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence, TextIO

from ..models.architectures import ARCHITECTURES
from .errors import EXIT_OK, CancelledError, LandFuseError, RequestError
from .formatting import format_duration
from .tasks import TASKS, Task, get_task

__all__ = ["TrainingPrinter", "parse_class_table", "parse_label_map", "register"]

#: Chip size of ``--scene`` areas when ``--chip`` is not given.
DEFAULT_CHIP = 256

_TRAIN_EPILOG = """\
Outputs in --out: the weights to map with (model.pt + model.pt.json: class table, bands,
normalisation statistics, training provenance, validation scores; give them to predict-{task}
--weights), training_log.csv (metrics per epoch), learning_curves.png, and
checkpoints/checkpoint.pt (after every epoch, for --resume; not weights to map with).

examples:
{examples}
"""

_LANDCOVER_EXAMPLES = """\
  landfuse train-landcover --model amm_fusenet_s2_s1_hunan --data myhunan --hunan-remap \\
      --encoder resnet18 --epochs 30 --batch 8 --out runs/hunan
  landfuse train-landcover --model amm_fusenet_s2_s1_dem --classes water,trees,crops,built \\
      --scene s2_a.tif s1_a.tif dem_a.tif lulc_a.tif \\
      --scene s2_b.tif s1_b.tif dem_b.tif lulc_b.tif \\
      --val-scene s2_c.tif s1_c.tif dem_c.tif lulc_c.tif --label-map 0:255,1:0,2:1,4:2,5:3 \\
      --chip 64 --encoder resnet18 --epochs 20 --batch 4 --out runs/terramind
  landfuse train-landcover --model amm_fusenet_s2_s1_hunan --classes classes.json \\
      --scene s2.tif s1.tif fields.gpkg --label-field crop --finetune runs/hunan/model.pt \\
      --epochs 10 --out runs/finetuned"""

_CHANGE_EXAMPLES = """\
  landfuse train-change --model amfnet_rgb_levir --data LEVIR-CD --epochs 200 --batch 32 \\
      --init-encoders resnet34-b627a593.pth --out runs/levir
  landfuse train-change --model amfnet_rgb_levir --scene before.tif after.tif changes.gpkg \\
      --label-field changed --chip 256 --encoder resnet18 --out runs/city"""

#: Examples of each task's training command (a task without examples gets none).
_EXAMPLES = {"landcover": _LANDCOVER_EXAMPLES, "change": _CHANGE_EXAMPLES}


def parse_label_map(text: str) -> dict[Any, int]:
    """Parse ``"0:255,1:0,2:1"`` (or ``"water:0,forest:1"`` for text fields) into a mapping.

    Raises:
        argparse.ArgumentTypeError: for a malformed entry.
    """
    mapping: dict[Any, int] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = item.rpartition(":")
        if not sep or not key.strip() or not value.strip().lstrip("-").isdigit():
            raise argparse.ArgumentTypeError(
                f"'{item}' is not VALUE:CLASS (e.g. 0:255,1:0,2:1 or water:0)"
            )
        source = key.strip()
        mapping[int(source) if source.lstrip("-").isdigit() else source] = int(value)
    if not mapping:
        raise argparse.ArgumentTypeError("give at least one VALUE:CLASS pair")
    return mapping


def parse_class_table(text: str) -> tuple[Any, ...]:
    """A class table from a JSON file or a comma-separated list of names.

    The JSON file holds a list of ``{"name": ..., "color": ...}`` (values are the list order),
    or names only; on the command line names are separated by commas, each with an optional
    hex colour (``water:#1f78b4,trees``; the JSON file takes ``r,g,b`` too). A colour is
    ``#rrggbb``, ``"r,g,b"`` or ``[r, g, b]``; a class without one gets a colour its name
    suggests (water blue, trees green, built-up red), else one of a palette.

    Returns:
        ``ClassSpec`` tuple with values 0..n-1.

    Raises:
        argparse.ArgumentTypeError: for an empty or malformed table.
    """
    from ..models.registry import ClassSpec

    path = Path(text)
    entries: list[Any]
    if path.suffix.lower() == ".json" or path.is_file():
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise argparse.ArgumentTypeError(f"cannot read the class table {text}: {exc}") from exc
        if isinstance(entries, dict) and "classes" in entries:
            entries = entries["classes"]
    else:
        entries = [name.strip() for name in text.split(",") if name.strip()]
    if not isinstance(entries, list) or not entries:
        raise argparse.ArgumentTypeError("the class table needs at least one class")
    from .label_classes import colour_for, parse_colour

    classes = []
    for value, entry in enumerate(entries):
        if isinstance(entry, str):  # "water" or "water:#1f78b4"
            name, _, raw = entry.partition(":")
        elif isinstance(entry, dict) and "name" in entry:
            name, raw = str(entry["name"]), entry.get("color")
        else:
            raise argparse.ArgumentTypeError(f"class entry {entry!r}: give a name or an object")
        try:
            color = parse_colour(raw) if raw not in (None, "") else colour_for(name, value)
        except LandFuseError as error:
            raise argparse.ArgumentTypeError(f"class {name}: {error}") from None
        classes.append(ClassSpec(value, name.strip(), color))
    return tuple(classes)


class TrainingPrinter:
    """Progress of a training run on a terminal (a bar per epoch) or as one line per epoch.

    Args:
        stream: Where to write (standard error).
        quiet: Print nothing.
    """

    def __init__(self, stream: TextIO, quiet: bool = False) -> None:
        self.stream = stream
        self.quiet = quiet
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._open_line = False

    def __call__(self, progress: Any) -> None:
        """Draw one ``training.TrainingProgress``."""
        if self.quiet:
            return
        eta = "" if progress.eta_s is None else f", {format_duration(progress.eta_s)} left"
        if progress.phase == "train":
            if self.tty:
                width = 24
                filled = round(width * progress.step / max(1, progress.steps_per_epoch))
                self.stream.write(
                    f"\repoch {progress.epoch}/{progress.epochs} [{'#' * filled:-<{width}}] "
                    f"loss {progress.loss:.4f}{eta}   "
                )
                self.stream.flush()
                self._open_line = True
            return
        if self._open_line:
            self.stream.write("\n")
            self._open_line = False
        shown = ("train_loss", "val_loss", "oa", "miou", "kappa", "change_f1", "learning_rate")
        values = ", ".join(
            f"{k} {v:.4g}" for k, v in progress.metrics.items() if k in shown and _finite(v)
        )
        self.stream.write(f"epoch {progress.epoch}/{progress.epochs}: {values}{eta}\n")
        self.stream.flush()


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and value == value and abs(value) != float("inf")


# ---------------------------------------------------------------------------------------------
# Parsers


def _add_data_options(parser: argparse.ArgumentParser, task: Task) -> None:
    data = parser.add_argument_group(
        "data (a published layout with --data, or --scene rasters)",
        f"--data ROOT reads the {task.layout}: {task.layout_help}. Its images are used whole, or "
        "cut into chips with --chip/--stride.",
    )
    data.add_argument("--data", metavar="ROOT", help=f"dataset root in the {task.layout}")
    data.add_argument("--train-split", default="train", help="training split (train)")
    data.add_argument(
        "--val-split",
        default="val",
        help="validation split ('none' to train without validation; default val)",
    )
    if task.modality_folders:
        data.add_argument(
            "--modalities",
            nargs="+",
            metavar="KEY",
            help="modality folders in the model's order (default: the model's keys, e.g. s2 s1)",
        )
        data.add_argument(
            "--hunan-remap",
            action="store_true",
            help="remap Hunan labels (255→12, then [255,0,1,2,1,3,4,6,6,5,6,7,255])",
        )
    _add_scene_options(data, task)


def _add_scene_options(group: Any, task: Task) -> None:
    inputs = task.scene_inputs
    group.add_argument(
        "--scene",
        nargs="+",
        action="append",
        metavar="FILE",
        help=f"one area: {inputs} (inputs in the model's order, then a label raster or a vector "
        "file of polygons); repeat for more areas",
    )
    group.add_argument(
        "--val-scene",
        nargs="+",
        action="append",
        metavar="FILE",
        help="a validation area, as --scene (repeatable)",
    )
    group.add_argument("--label-field", metavar="NAME", help="class attribute of label polygons")
    group.add_argument(
        "--label-map",
        type=parse_label_map,
        metavar="MAP",
        help="label value to class, e.g. 0:255,1:0,2:1 (255 ignores a value)",
    )
    group.add_argument(
        "--chip",
        type=int,
        metavar="PX",
        help="chip size (--scene: 256 by default; --data: cut the layout's images into chips)",
    )
    group.add_argument("--stride", type=int, metavar="PX", help="chip step (default: --chip)")
    group.add_argument(
        "--min-labelled",
        type=float,
        default=0.0,
        metavar="F",
        help="minimum share of labelled pixels in a chip (0: any)",
    )
    group.add_argument(
        "--preload", action="store_true", help="hold the scenes in memory (faster epochs)"
    )


def _add_train_options(parser: argparse.ArgumentParser, task: Task) -> None:
    parser.add_argument("--model", required=True, help="registry model (see `landfuse models`)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    _add_data_options(parser, task)
    model = parser.add_argument_group("network")
    model.add_argument(
        "--encoder",
        choices=("resnet18", "resnet34", "resnet50"),
        help="ResNet of the encoders (default: the model's; resnet18 is the light variant)",
    )
    strides = sorted(
        {s for a in ARCHITECTURES.values() if a.task == task.name for s in a.output_strides}
    )
    if strides:
        model.add_argument(
            "--output-stride", type=int, choices=strides, help="the network's output stride"
        )
    model.add_argument(
        "--classes",
        type=parse_class_table,
        metavar="TABLE",
        help="class table: names separated by commas, or a JSON file of {name, color} "
        "(default: the model's)",
    )
    start = model.add_mutually_exclusive_group()
    start.add_argument(
        "--init-encoders",
        metavar="FILE|KEY",
        help="start the encoders from a ResNet state_dict file or a pretrained encoder of the "
        "catalogue (`landfuse encoders`; downloaded once, sha256 checked), for every encoder "
        "or per modality: s2=ssl4eo_s12_s2_moco,s1=ssl4eo_s12_s1_moco",
    )
    start.add_argument(
        "--finetune",
        metavar="FILE",
        help="weights to start from (LandFuse file or published checkpoint); the classifier "
        "is replaced when --classes differs",
    )
    recipe = parser.add_argument_group("recipe (default: the published one of the model)")
    recipe.add_argument("--epochs", type=int, metavar="N", help="epochs")
    recipe.add_argument(
        "--max-iterations",
        type=int,
        metavar="N",
        help="optimiser steps (AMM-FuseNet's published recipe: 50000); with --epochs, the first "
        "reached ends the run",
    )
    recipe.add_argument("--batch", type=int, metavar="N", help="batch size (at least 2)")
    recipe.add_argument("--lr", type=float, metavar="F", help="initial learning rate")
    recipe.add_argument("--optimizer", choices=("sgd", "adam"), help="optimiser")
    recipe.add_argument("--momentum", type=float, metavar="F", help="SGD momentum")
    recipe.add_argument("--weight-decay", type=float, metavar="F", help="weight decay")
    recipe.add_argument("--poly-power", type=float, metavar="F", help="poly decay power")
    recipe.add_argument(
        "--patience",
        type=int,
        metavar="N",
        help="stop when the validation score has not improved for N epochs",
    )
    recipe.add_argument(
        "--monitor", metavar="SCORE", help="validation score: miou, change_f1, oa, kappa, fw_iou"
    )
    recipe.add_argument(
        "--normalisation",
        choices=("auto", "fixed_stats", "registry", "weights"),
        help="auto: statistics of the training data (or of the fine-tuned weights)",
    )
    recipe.add_argument("--no-augment", action="store_true", help="no flips / rotations")
    recipe.add_argument("--workers", type=int, metavar="N", help="data loading processes (0)")
    run = parser.add_argument_group("run")
    run.add_argument("--seed", type=int, default=0, help="random seed (0)")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    run.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch CPU threads (default: half the cores; all the cores of a busy machine are "
        "many times slower than fewer)",
    )
    run.add_argument(
        "--resume", action="store_true", help="continue from --out/checkpoints/checkpoint.pt"
    )
    run.add_argument("--weights-name", default="model.pt", help="weights file name (model.pt)")
    run.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress")


def register(subparsers: Any) -> None:
    """Add ``train-landcover``, ``train-change`` and ``evaluate`` to the ``landfuse`` parser.

    Args:
        subparsers: What ``ArgumentParser.add_subparsers()`` returned.
    """
    for task in TASKS:
        helptext = f"train or fine-tune a {task.noun} model"
        parser = subparsers.add_parser(
            task.train_command,
            help=helptext,
            description=f"{helptext[0].upper()}{helptext[1:]} with the published recipe "
            "(configurable), on a published dataset layout or on chips cut from your rasters.",
            epilog=_TRAIN_EPILOG.format(task=task.name, examples=_EXAMPLES.get(task.name, "")),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_train_options(parser, task)
        parser.set_defaults(func=_train, task=task.name)

    from .encoders_cli import register as register_encoders

    register_encoders(subparsers)
    from .evaluate_cli import register as register_evaluate  # it uses this module

    register_evaluate(subparsers)


# ---------------------------------------------------------------------------------------------
# Commands


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")


def _scenes(groups: Optional[Sequence[Sequence[str]]], args: argparse.Namespace) -> list[Any]:
    from .datasets import RasterScene

    scenes = []
    for files in groups or ():
        if len(files) < 2:
            raise RequestError(
                f"--scene {' '.join(files)}: give the input rasters followed by the labels."
            )
        scenes.append(
            RasterScene(
                inputs=tuple(files[:-1]),
                label=files[-1],
                label_field=args.label_field,
                label_map=args.label_map,
            )
        )
    return scenes


def _classes_from_polygons(args: argparse.Namespace, task: Task) -> None:
    """Polygons with a class field and no ``--label-map``: the field's values (text or numbers)
    become the classes, sorted, named by their values unless ``--classes`` names them."""
    from .label_classes import polygon_classes
    from .train_requests import vector_values
    from .vector_labels import VECTOR_EXTENSIONS

    if not args.label_field or args.label_map is not None:
        return
    values: list[Any] = []
    for files in [*(args.scene or ()), *(args.val_scene or ())]:
        if files and Path(files[-1]).suffix.lower() in VECTOR_EXTENSIONS:
            values += vector_values(files[-1], args.label_field)
    if not values:
        return
    found = polygon_classes(values)
    args.label_map = (
        task.polygon_label_map(found) if not task.classes_from_labels else dict(found.label_map)
    )
    if task.classes_from_labels and args.classes is None:
        args.classes = found.classes
    shown = ", ".join(f"{k}→{v}" for k, v in list(args.label_map.items())[:12])
    sys.stderr.write(f"landfuse: classes from the field '{args.label_field}': {shown}\n")


def _chips(scenes: list[Any], args: argparse.Namespace, spec: Any) -> Any:
    from .datasets import RasterChipDataset

    dataset = RasterChipDataset(
        scenes,
        chip_size=args.chip or DEFAULT_CHIP,
        stride=args.stride,
        min_labelled_fraction=args.min_labelled,
        nearest_inputs=get_task(spec.task).nearest_inputs(spec),
        preload=args.preload,
        modalities=get_task(spec.task).input_modalities(spec),
    )
    for warning in dataset.warnings:
        sys.stderr.write(f"landfuse: warning: {warning.message}\n")
    return dataset


def _layout_dataset(args: argparse.Namespace, spec: Any, split: Optional[str]) -> Any:
    task = get_task(spec.task)
    dataset = task.layout_dataset(
        args.data,
        split,
        spec,
        modalities=getattr(args, "modalities", None),
        hunan_remap=getattr(args, "hunan_remap", False),
        label_map=getattr(args, "label_map", None),
    )
    if not args.chip:
        return dataset
    return _chips(_layout_scenes(dataset, task), args, spec)


def _layout_scenes(dataset: Any, task: Task) -> list[Any]:
    """The samples of a layout as scenes, to cut them into chips (``--chip``/``--stride``)."""
    from .datasets import RasterScene

    roles = task.layout_inputs or tuple(getattr(dataset, "modalities", ()))
    label_map = getattr(dataset, "label_map", None) or task.layout_label_map
    scenes = []
    for index, name in enumerate(dataset.names):
        files = dataset.files(index)
        scenes.append(
            RasterScene(
                inputs=tuple(str(files[role]) for role in roles),
                label=str(files["label"]),
                label_map=label_map,
                name=Path(name).stem,
            )
        )
    return scenes


def _datasets(args: argparse.Namespace, spec: Any) -> tuple[Any, Optional[Any], str]:
    if args.data and args.scene:
        raise RequestError("Give either --data (a dataset layout) or --scene, not both.")
    if args.data:
        train = _layout_dataset(args, spec, args.train_split)
        val_split = None if args.val_split.lower() == "none" else args.val_split
        val = _layout_dataset(args, spec, val_split) if val_split else None
        chips = f", chips of {args.chip} px, stride {args.stride or args.chip}" if args.chip else ""
        return train, val, f"{args.data} (splits {args.train_split} / {val_split}{chips})"
    if not args.scene:
        raise RequestError("Give the training data: --data ROOT, or --scene FILES... LABEL.")
    train = _chips(_scenes(args.scene, args), args, spec)
    val = _chips(_scenes(args.val_scene, args), args, spec) if args.val_scene else None
    names = "; ".join(" ".join(s) for s in args.scene)
    return train, val, f"chips of {args.chip or DEFAULT_CHIP} px from {names}"


def _recipe(args: argparse.Namespace, model: str) -> Any:
    from .training import recipe_for

    changes: dict[str, Any] = {}
    simple = {
        "batch": "batch_size",
        "lr": "learning_rate",
        "optimizer": "optimizer",
        "momentum": "momentum",
        "weight_decay": "weight_decay",
        "poly_power": "poly_power",
        "patience": "patience",
        "monitor": "monitor",
        "normalisation": "normalisation",
        "workers": "num_workers",
    }
    for option, name in simple.items():
        value = getattr(args, option, None)
        if value is not None:
            changes[name] = value
    if args.epochs is not None or args.max_iterations is not None:
        changes["epochs"] = args.epochs
        changes["max_iterations"] = args.max_iterations
    if args.no_augment:
        changes["augmentation"] = None
    return recipe_for(model, **changes)


def _train(args: argparse.Namespace) -> int:
    from ..models.registry import get_model_spec
    from .train_requests import default_threads
    from .training import TrainingConfig, resolve_model_spec, train

    threads = args.threads or default_threads()
    if threads < 1:
        raise RequestError("--threads must be at least 1.")
    import torch

    torch.set_num_threads(threads)
    spec = get_model_spec(args.model)
    if spec.task != args.task:
        other = get_task(spec.task).train_command
        raise RequestError(f"{args.model} is a {spec.task} model; use `landfuse {other}`.")
    _classes_from_polygons(args, get_task(spec.task))
    config = TrainingConfig(
        model=args.model,
        output_dir=args.out,
        recipe=_recipe(args, args.model),
        encoder=args.encoder,
        output_stride=getattr(args, "output_stride", None),
        classes=args.classes,
        seed=args.seed,
        device=args.device,
        init_encoders=args.init_encoders,
        finetune_from=args.finetune,
        resume=args.resume,
        weights_name=args.weights_name,
        command="landfuse " + " ".join(sys.argv[1:]),
    )
    train_set, val_set, description = _datasets(args, resolve_model_spec(config))
    config = dataclasses.replace(config, data_description=description)
    printer = TrainingPrinter(sys.stderr, quiet=args.quiet)
    started = time.monotonic()
    try:
        result = train(config, train_set, val_set, progress=printer)
    except KeyboardInterrupt:
        raise CancelledError(
            f"Training interrupted; the checkpoint of the last finished epoch is in {args.out}: "
            "continue with the same command and --resume."
        ) from None
    summary = {
        "weights": str(result.weights_path),
        "sha256": result.sha256,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "monitor": result.monitor,
        "best_score": result.best_score,
        "stopped_early": result.stopped_early,
        "log": str(result.log_path),
        "plot": str(result.plot_path) if result.plot_path else None,
        "seconds": round(time.monotonic() - started, 1),
    }
    if args.json:
        _say(json.dumps(summary, indent=2))
    else:
        score = (
            "" if result.best_score is None else f", best {result.monitor} {result.best_score:.4f}"
        )
        _say(f"weights: {result.weights_path}{score} ({result.epochs_run} epochs)")
        _say(f"log: {result.log_path}")
        if result.plot_path:
            _say(f"learning curves: {result.plot_path}")
    return EXIT_OK
