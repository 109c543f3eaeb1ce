"""Labels on one half of a tile, a map of the other half: the Train tab's code path against a
random forest on the same labels, on the real TerraMind tiles (issue 15's land-cover target).

For each tile of ``../shared/realdata/terramind_examples``: the reference land cover of the top
half is the label raster (the bottom half unlabelled), a session trains exactly as the dock's
Train tab does (:func:`landfuse.core.training.session.run_session`: its spatial split, chip
repetition, best epoch), the engine maps the whole tile with the new weights (the tile size they
were trained on), and the bottom half is scored against the reference. The baseline is a
per-pixel random forest fitted on every labelled pixel of the top half (the network's training
and validation chips together) with the same bands as the network reads them, scored on the same
bottom-half pixels. mIoU is over the classes of the label table; reference classes absent from
the top half count as misses for both.

Usage::

    .venv/bin/python scripts/train_halves.py [--tiles T ...] [--epochs 30] [--chip 32]
        [--threads 1] [--out build/halves] [--markdown]

Writes ``summary.json`` (and with ``--markdown`` prints the table for docs/training.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from landfuse.core import engine, metrics, train_requests
from landfuse.core.datasets import RasterChipDataset, RasterScene
from landfuse.core.requests import LandCoverRequest, ModalityInput, RasterSource
from landfuse.core.tasks import get_task
from landfuse.core.train_requests import TrainRequest
from landfuse.core.training.baselines import fit_random_forest, labelled_pixels
from landfuse.core.training.session import run_session
from landfuse.models.registry import get_model_spec

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "realdata" / "terramind_examples"
TILES = ("282D_485L_3_3", "38D_378R_2_3", "609U_541L_3_0", "637U_59R_1_3")
#: TerraMind LULC values (Esri 10 m classes shifted to 1..9; 0 = no data).
NAMES = {1: "water", 2: "trees", 3: "flooded vegetation", 4: "crops", 5: "built area",
         6: "bare ground", 7: "snow/ice", 8: "clouds", 9: "rangeland"}  # fmt: skip
MODEL = "amm_fusenet_lite_s2_s1_dem"


def top_half_labels(reference: Path, out: Path) -> tuple[Path, int]:
    """The reference with its bottom half unlabelled (0); returns the file and the first
    unlabelled row."""
    with rasterio.open(reference) as src:
        label, profile = src.read(1), src.profile
    half = label.shape[0] // 2
    label = label.copy()
    label[half:] = 0
    profile.update(nodata=0)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(label[None])
    return out, half


def score(predicted: np.ndarray, truth: np.ndarray, values: list[int]) -> dict[str, Any]:
    """mIoU / OA of class indices against reference values (``values``: class i's value)."""
    lookup = np.full(256, 255, np.int64)
    for index, value in enumerate(values):
        lookup[value] = index
    cm = metrics.ConfusionMatrix(len(values), 255)
    cm.update(predicted.astype(np.int64), lookup[truth])
    report = metrics.accuracy_report(cm, [NAMES[v] for v in values])
    return {"miou": report.mean_iou, "oa": report.overall_accuracy}


def run_tile(tile: str, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)  # this script's own folder: a fresh run each time
    out.mkdir(parents=True)
    labels, half = top_half_labels(DATA / "LULC" / f"{tile}.tif", out / "top_half.tif")
    with rasterio.open(DATA / "LULC" / f"{tile}.tif") as src:
        truth = src.read(1)
    values = sorted(int(v) for v in np.unique(truth[:half]) if v)
    if len(values) < 2:  # nothing to learn or to score (609U_541L_3_0 is all snow and ice)
        return {"tile": tile, "classes": [NAMES[v] for v in values], "skipped": "one class"}
    inputs = {
        key: (RasterSource(str(DATA / folder / f"{tile}.tif")),)
        for key, folder in (("s2", "S2L1C"), ("s1", "S1RTC"), ("dem", "DEM"))
    }
    request = TrainRequest(
        task="landcover",
        model=MODEL,
        inputs=inputs,
        labels=str(labels),
        output_dir=str(out / "run"),
        classes=tuple({"value": v, "name": NAMES[v]} for v in values),
        label_map={0: 255, **{v: i for i, v in enumerate(values)}},
        epochs=args.epochs,
        chip=args.chip,
        batch=args.batch,
        threads=args.threads,
        device="cpu",
        seed=args.seed,
        balance=not args.no_balance,
    )
    started = time.monotonic()
    result = run_session(request)
    train_s = time.monotonic() - started
    mapped = engine.run(
        LandCoverRequest(
            inputs=tuple(ModalityInput(k, (s[0].path,)) for k, s in inputs.items()),
            weights=result["outputs"]["weights"],
            model="",
            output_dir=str(out / "map"),
            tile=args.map_tile,
            flips="flips" if args.flips else "none",
            precision="fp32",
            device="cpu",
        )
    )
    with rasterio.open(mapped.outputs["classes"]) as src:
        network = src.read(1)
    # The random forest on every labelled pixel of the top half, bands as the network reads them.
    spec = get_model_spec(MODEL)
    whole = RasterChipDataset(
        [RasterScene(tuple(inputs.values()), str(labels), label_map=dict(request.label_map))],
        chip_size=truth.shape[0],
        modalities=get_task("landcover").input_modalities(spec),
    )
    x, y = labelled_pixels(whole)
    started = time.monotonic()
    forest = fit_random_forest(np.nan_to_num(x), y, 100, None, args.seed, args.threads)
    sample = whole.read(0)
    stack = np.nan_to_num(np.concatenate(sample.inputs, axis=0))
    forest_map = forest.predict(stack.reshape(stack.shape[0], -1).T).reshape(truth.shape)
    forest_s = time.monotonic() - started
    bottom = slice(half, None)
    row = {
        "tile": tile,
        "classes": [NAMES[v] for v in values],
        "labelled_pixels": len(y),
        "train_seconds": round(train_s, 1),
        "forest_seconds": round(forest_s, 1),
        "network": score(network[bottom], truth[bottom], values),
        "forest": score(forest_map[bottom], truth[bottom], values),
        "session_verdict": result["assessment"]["verdict"],
    }
    row["difference_miou"] = row["network"]["miou"] - row["forest"]["miou"]
    return row


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "| tile | classes | network mIoU | forest mIoU | difference | network OA | forest OA "
        "| training |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['tile']} | {len(r['classes'])} | skipped: {r['skipped']} |||||")
            continue
        lines.append(
            f"| {r['tile']} | {len(r['classes'])} | {r['network']['miou']:.3f} | "
            f"{r['forest']['miou']:.3f} | {r['difference_miou']:+.3f} | "
            f"{r['network']['oa']:.3f} | {r['forest']['oa']:.3f} | {r['train_seconds']:.0f} s |"
        )
    mean = float(np.mean([r["difference_miou"] for r in rows if not r.get("skipped")]))
    lines.append(
        f"\nMean mIoU difference (network − forest): **{mean:+.3f}** "
        f"(epochs {args.epochs}, chips {args.chip} px, batch {args.batch}, {args.threads} "
        f"thread(s), seed {args.seed}, at least {args.min_steps} steps, map tile "
        f"{args.map_tile or 'the chip size'}{', test-time flips' if args.flips else ''}"
        f"{', unbalanced loss' if args.no_balance else ', balanced loss'})."
    )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", nargs="+", default=list(TILES))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--chip", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "halves")
    parser.add_argument("--markdown", action="store_true", help="print the table")
    parser.add_argument(
        "--map-tile", type=int, help="map with this tile size (default: the weights' chip size)"
    )
    parser.add_argument(
        "--no-balance",
        action="store_true",
        help="no class-balanced loss (the Train tab's default balances the classes)",
    )
    parser.add_argument(
        "--flips", action="store_true", help="map with test-time flips (three passes averaged)"
    )
    parser.add_argument(
        "--min-steps",
        type=int,
        default=train_requests.MIN_STEPS,
        help=f"optimiser steps a session makes at least ({train_requests.MIN_STEPS}; 1: one "
        "pass over the chips per epoch)",
    )
    args = parser.parse_args(argv)
    train_requests.MIN_STEPS = args.min_steps  # what the Train tab uses, unless measured otherwise
    if not DATA.is_dir():
        sys.stderr.write(f"Missing {DATA}: the shared real data.\n")
        return 2
    rows = [run_tile(tile, args.out / tile, args) for tile in args.tiles]
    (args.out / "summary.json").write_text(json.dumps(rows, indent=1))
    text = markdown(rows, args)
    sys.stdout.write(text + "\n" if args.markdown else json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
