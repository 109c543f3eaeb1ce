"""``landfuse evaluate``: assess a weights file on a labelled dataset, or a class map against a
reference (confusion matrix, overall accuracy, kappa, IoU, F1; the change visualisation).

It reads its data with the training command's options (:mod:`landfuse.core.train_cli`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Optional

from .errors import EXIT_OK, RequestError
from .tasks import get_task
from .train_cli import (
    _add_scene_options,
    _chips,
    _finite,
    _layout_dataset,
    _say,
    _scenes,
    parse_class_table,
)

_EVALUATE_EPILOG = """\
Two ways to assess:
  a weights file on a labelled dataset (the seeds' test.py):
    landfuse evaluate --weights runs/hunan/model.pt --data myhunan --split test --hunan-remap
    landfuse evaluate --weights runs/levir/model.pt --data LEVIR-CD --split test \\
        --visualise --out assessment/
  a class map (e.g. from predict-landcover) against a reference raster or labelled polygons:
    landfuse evaluate --map results/landcover_classes.tif --reference survey.gpkg \\
        --label-field class_id --out assessment/

Outputs in --out: report.json (overall accuracy, kappa, mean IoU, per-class IoU / precision /
recall / F1, frequency-weighted IoU, change scores) and confusion_matrix.csv; with --visualise,
the change visualisation (true positives white, false positives red, false negatives green).
"""


def register(subparsers: Any) -> None:
    """Add ``evaluate`` to the ``landfuse`` parser."""
    evaluate = subparsers.add_parser(
        "evaluate",
        help="assess a model on a labelled dataset, or a class map against a reference",
        description="Accuracy assessment: confusion matrix, overall accuracy, kappa, IoU, F1.",
        epilog=_EVALUATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = evaluate.add_mutually_exclusive_group(required=True)
    what.add_argument("--weights", metavar="FILE", help="weights file to assess on a dataset")
    what.add_argument("--map", metavar="FILE", help="class map to assess against --reference")
    evaluate.add_argument(
        "--model", help="registry model (needed for published checkpoints; checked otherwise)"
    )
    data = evaluate.add_argument_group("dataset (with --weights)")
    data.add_argument("--data", metavar="ROOT", help="dataset root (AMM-FuseNet or LEVIR-CD)")
    data.add_argument("--split", default="test", help="split to assess (test; 'none': all)")
    data.add_argument("--modalities", nargs="+", metavar="KEY", help="AMM-FuseNet folders")
    data.add_argument("--hunan-remap", action="store_true", help="remap Hunan labels")
    _add_scene_options(data, get_task("landcover"))
    data.add_argument("--batch", type=int, default=4, metavar="N", help="batch size (4)")
    data.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    ref = evaluate.add_argument_group("reference (with --map)")
    ref.add_argument("--reference", metavar="FILE", help="reference raster or labelled polygons")
    ref.add_argument(
        "--class-names",
        type=parse_class_table,
        metavar="TABLE",
        help="class names of the map (default: those stored in it)",
    )
    ref.add_argument(
        "--change", action="store_true", help="the map is a change map (class 1 = change)"
    )
    out = evaluate.add_argument_group("outputs")
    out.add_argument("--out", metavar="DIR", help="write report.json and confusion_matrix.csv")
    out.add_argument(
        "--visualise",
        action="store_true",
        help="write the change visualisation (white TP, red FP, green FN) into --out",
    )
    out.add_argument("--ignore", type=int, default=255, help="label value to ignore (255)")
    out.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    evaluate.set_defaults(func=_evaluate)


def _write_png(path: Path, rgb: Any) -> None:
    import warnings

    import numpy as np
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(
            path,
            "w",
            driver="PNG",
            width=rgb.shape[1],
            height=rgb.shape[0],
            count=3,
            dtype="uint8",
        ) as dst:
            dst.write(np.moveaxis(rgb, -1, 0))


def _evaluate(args: argparse.Namespace) -> int:
    from .metrics import assess_class_map, write_confusion_csv, write_report_json

    out = Path(args.out) if args.out else None
    if args.visualise and out is None:
        raise RequestError("--visualise writes files: give --out DIR.")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    if args.map:
        if not args.reference:
            raise RequestError("--map needs --reference (a raster or labelled polygons).")
        names = [c.name for c in args.class_names] if args.class_names else None
        if args.change and names is None:
            names = ["no change", "change"]
        report = assess_class_map(
            args.map,
            args.reference,
            label_field=args.label_field,
            label_map=args.label_map,
            class_names=names,
            ignore_index=args.ignore,
            change_class=1 if args.change else None,
            visualisation=(out / "change_visualisation.tif") if args.visualise and out else None,
        )
        extra = {"map": args.map, "reference": args.reference}
    else:
        report, extra = _evaluate_weights(args, out)
    if out is not None:
        write_report_json(report, out / "report.json", **extra)
        write_confusion_csv(report, out / "confusion_matrix.csv")
    if args.json:
        data = report.to_dict()
        data.update(extra)
        _say(json.dumps(data, indent=2))
    else:
        for key, value in report.scalars().items():
            _say(f"{key}: {'n/a' if not _finite(value) else f'{value:.4f}'}")
        if out is not None:
            _say(f"report: {out / 'report.json'}")
    return EXIT_OK


def _evaluate_weights(args: argparse.Namespace, out: Optional[Path]) -> tuple[Any, dict[str, Any]]:
    from ..models import weights as weights_io
    from ..models.errors import WeightsMismatchError
    from .metrics import change_visualisation
    from .training import evaluate_weights, spec_from_metadata

    if args.model is None:
        try:
            _, metadata, _ = weights_io.read_weights(args.weights)
        except WeightsMismatchError as exc:
            raise RequestError(
                f"{args.weights} has no LandFuse metadata; if it is a published checkpoint, "
                "name its model with --model."
            ) from exc
        spec = spec_from_metadata(metadata)
    else:
        from ..models.registry import get_model_spec

        spec = get_model_spec(args.model)
    split = None if args.split.lower() == "none" else args.split
    if args.data and args.scene:
        raise RequestError("Give either --data or --scene, not both.")
    if args.data:
        dataset = _layout_dataset(args, spec, split)
    elif args.scene:
        dataset = _chips(_scenes(args.scene, args), args, spec)
    else:
        raise RequestError("--weights needs a dataset: --data ROOT or --scene FILES... LABEL.")
    callback = None
    if args.visualise and out is not None:
        if get_task(spec.task).change_class is None:
            raise RequestError("--visualise draws change maps; the model is a land-cover model.")
        folder = out / "visualisation"
        folder.mkdir(exist_ok=True)

        def callback(name: str, prediction: Any, label: Any) -> None:
            stem = Path(name).stem.replace("@", "_").replace(",", "_")
            _write_png(folder / f"{stem}.png", change_visualisation(prediction, label))

    report = evaluate_weights(
        args.weights,
        dataset,
        model_name=args.model,
        device=args.device,
        batch_size=args.batch,
        ignore_index=args.ignore,
        on_prediction=callback,
    )
    extra = {
        "weights": args.weights,
        "weights_sha256": weights_io.file_sha256(args.weights),
        "data": args.data or [" ".join(s) for s in args.scene],
        "split": split,
        "samples": len(dataset),
    }
    return report, extra
