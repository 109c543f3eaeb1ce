"""The LandFuse demo (`make demo`): map a synthetic scene end to end for both tasks.

1. Generates the demo scene with ``demo_data.py`` (fixed seeds): a Sentinel-2 / Sentinel-1 / DEM
   land-cover scene on three different grids with its ground truth, and a Sentinel-2
   before/after pair with its change truth, into ``build/demo/data/``.
2. Maps land cover (``amm_fusenet_lite_s2_s1_dem``) and change (``amfnet_lite_s2``) through the
   engine (``core.engine``, what the dock, Processing and the CLI call) with the bundled demo
   weights in ``demo/weights/``: aligned reading, tiling, blending, Cloud-Optimised GeoTIFFs,
   QML styles and JSON reports in ``build/demo/landcover/`` and ``build/demo/change/``.
3. Scores both maps against the demo ground truth (``core.metrics.assess_class_map``).
4. Writes PNG previews (the inputs in true colour, the class map with its legend, the change
   mask over the after image) and a QGIS project ``build/demo/landfuse_demo.qgz`` with the
   styled layers in groups (written by PyQGIS without a display, in a child process).

The weights are DEMO WEIGHTS trained on synthetic scenes by ``scripts/train_demo_weights.py``;
the demo says so, and says how to make them when they are missing (``--train-missing`` makes
them first instead).

Usage: python scripts/demo.py [--out build/demo] [--size 768] [--change-size 512]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent
DEFAULT_OUT = ROOT / "build" / "demo"
DEFAULT_WEIGHTS = ROOT / "demo" / "weights"
PROJECT_NAME = "landfuse_demo.qgz"
#: True-colour bands (B04, B03, B02) of the 13-band Sentinel-2 stacks, 1-based.
TRUE_COLOUR = (4, 3, 2)
#: Colour of "change" in the previews (the engine's change style).
CHANGE_RGB = (230, 30, 30)


def _load_script(name: str) -> ModuleType:
    """Import a sibling script (``scripts/`` is not a package)."""
    path = SCRIPTS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"landfuse_script_{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"Cannot load {path}.")
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: dataclasses look their module up in sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _say(text: str = "") -> None:
    print(text, flush=True)


def _rel(path: Any) -> str:
    """A path relative to the repository when it is inside it (shorter output)."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


# ---------------------------------------------------------------------------------------------
# Weights


def check_weights(weights_dir: Path, trainer: ModuleType) -> dict[str, Path]:
    """The two demo weights files, or an empty dict when one is missing."""
    files = {
        "landcover": weights_dir / trainer.LANDCOVER_FILE,
        "change": weights_dir / trainer.CHANGE_FILE,
    }
    return files if all(p.is_file() for p in files.values()) else {}


def weights_note(path: Path) -> dict[str, Any]:
    """What a weights file says about how it was made (read from its verified metadata)."""
    from landfuse.models import weights as weights_io

    _, metadata, sha = weights_io.read_weights(path)
    demo = dict(metadata.training.get("demo", {}))
    return {
        "model": metadata.model_name,
        "sha256": sha,
        "demo_weights": bool(demo.get("demo_weights", False)),
        "note": demo.get("note", ""),
        "command": demo.get("command", ""),
        "held_out": metadata.metrics.get("held_out_scene", {}),
        "classes": [c.to_dict() for c in metadata.classes],
    }


# ---------------------------------------------------------------------------------------------
# Engine runs


def run_landcover(scene: Any, weights: Path, out: Path, device: str, precision: str) -> Any:
    """Map land cover over the demo scene with the engine; returns its ``RunResult``."""
    from landfuse.core import engine
    from landfuse.core.cli import ProgressBar
    from landfuse.core.requests import LandCoverRequest, ModalityInput

    request = LandCoverRequest(
        inputs=(
            ModalityInput("s2", (str(scene.s2),)),
            ModalityInput("s1", (str(scene.s1),)),
            ModalityInput("dem", (str(scene.dem),)),
        ),
        model="amm_fusenet_lite_s2_s1_dem",
        weights=str(weights),
        output_dir=str(out),
        device=device,
        precision=precision,
        overwrite=True,
    )
    bar = ProgressBar(sys.stderr)
    try:
        return engine.run_landcover(request, progress=bar)
    finally:
        bar.close()


def run_change(pair: Any, weights: Path, out: Path, device: str, precision: str) -> Any:
    """Map change over the demo pair with the engine; returns its ``RunResult``."""
    from landfuse.core import engine
    from landfuse.core.cli import ProgressBar
    from landfuse.core.requests import ChangeRequest

    request = ChangeRequest(
        before=(str(pair.before),),
        after=(str(pair.after),),
        model="amfnet_lite_s2",
        weights=str(weights),
        output_dir=str(out),
        device=device,
        precision=precision,
        overwrite=True,
    )
    bar = ProgressBar(sys.stderr)
    try:
        return engine.run_change(request, progress=bar)
    finally:
        bar.close()


# ---------------------------------------------------------------------------------------------
# Previews


def _read(path: Path, bands: Optional[Sequence[int]] = None) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        return src.read(list(bands) if bands else None)


def stretch_limits(image: np.ndarray) -> tuple[list[float], list[float]]:
    """One 1-99 % percentile stretch shared by the three bands (zeros = nodata left out).

    The same limits for red, green and blue keep the hues of a true-colour image.
    """
    values = image[:, (image > 0).all(axis=0)]
    if values.size == 0:
        values = image.reshape(image.shape[0], -1)
    lo, hi = np.percentile(values, (1, 99))
    hi = max(float(hi), float(lo) + 1.0)
    return [float(lo)] * image.shape[0], [hi] * image.shape[0]


def true_colour(path: Path) -> tuple[np.ndarray, tuple[list[float], list[float]]]:
    """An RGB float image 0..1 of a Sentinel-2 stack and the stretch used."""
    image = _read(path, TRUE_COLOUR).astype(np.float32)
    lows, highs = stretch_limits(image)
    bands = [(b - lo) / (hi - lo) for b, lo, hi in zip(image, lows, highs)]
    return np.stack(bands, axis=-1).clip(0, 1), (lows, highs)


def colourise(classes: np.ndarray, table: Sequence[dict[str, Any]]) -> np.ndarray:
    """RGB 0..1 image of a class map (nodata and unknown values in light grey)."""
    lut = np.full((256, 3), 0.85, dtype=np.float32)
    for entry in table:
        lut[int(entry["value"])] = np.asarray(entry["color"], dtype=np.float32) / 255.0
    return lut[classes.astype(np.uint8)]


def _figure(columns: int, height: float = 4.8) -> tuple[Any, Any]:
    # matplotlib's object API on an Agg canvas: no pyplot, no display, no global state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.4 * columns, height), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, columns)
    for ax in np.atleast_1d(axes):
        ax.set_axis_off()
    return figure, np.atleast_1d(axes)


def write_previews(
    out: Path,
    scene: Any,
    pair: Any,
    landcover: Any,
    change: Any,
    classes: Sequence[dict[str, Any]],
    scores: dict[str, Any],
) -> dict[str, Path]:
    """Write the PNG previews; returns their paths by name."""
    from matplotlib.patches import Patch

    s2_rgb, _ = true_colour(Path(scene.s2))
    before_rgb, _ = true_colour(Path(pair.before))
    after_rgb, _ = true_colour(Path(pair.after))
    paths = {
        "inputs": out / "inputs_true_colour.png",
        "landcover": out / "landcover_map.png",
        "change": out / "change_map.png",
    }

    figure, axes = _figure(3)
    for ax, image, title in zip(
        axes,
        (s2_rgb, before_rgb, after_rgb),
        ("Land-cover scene: Sentinel-2", "Change pair: before", "Change pair: after"),
    ):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(f"{title}\n(true colour B04/B03/B02)", fontsize=9)
    figure.suptitle("LandFuse demo inputs (synthetic scenes)", fontsize=11)
    figure.savefig(paths["inputs"], bbox_inches="tight")

    predicted = _read(Path(landcover.outputs["classes"]))[0]
    truth = _read(Path(scene.truth))[0]
    figure, axes = _figure(3)
    axes[0].imshow(s2_rgb, interpolation="nearest")
    axes[0].set_title("Sentinel-2 (true colour)", fontsize=9)
    axes[1].imshow(colourise(predicted, classes), interpolation="nearest")
    axes[1].set_title(
        f"LandFuse land cover (demo weights)\nOA {scores['landcover']['oa'] * 100:.1f} %, "
        f"mean IoU {scores['landcover']['miou']:.2f}",
        fontsize=9,
    )
    axes[2].imshow(colourise(truth, classes), interpolation="nearest")
    axes[2].set_title("Ground truth", fontsize=9)
    handles = [
        Patch(facecolor=np.asarray(c["color"]) / 255.0, edgecolor="black", label=c["name"])
        for c in classes
    ]
    # The legend hangs below the middle map, so the tight bounding box keeps it close.
    axes[1].legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.03),
                   ncol=4, fontsize=8, frameon=False)  # fmt: skip
    figure.savefig(paths["landcover"], bbox_inches="tight")

    mask = _read(Path(change.outputs["change"]))[0]
    change_truth = _read(Path(pair.truth))[0]
    red = np.asarray(CHANGE_RGB, dtype=np.float32) / 255.0

    def overlay(image: np.ndarray, changed: np.ndarray) -> np.ndarray:
        shown = image.copy()
        shown[changed] = 0.35 * shown[changed] + 0.65 * red
        return shown

    figure, axes = _figure(3)
    axes[0].imshow(before_rgb, interpolation="nearest")
    axes[0].set_title("Before (true colour)", fontsize=9)
    axes[1].imshow(overlay(after_rgb, mask == 1), interpolation="nearest")
    axes[1].set_title(
        f"After + LandFuse change mask (demo weights)\nF1 {scores['change']['change_f1']:.2f}, "
        f"precision {scores['change']['change_precision']:.2f}, "
        f"recall {scores['change']['change_recall']:.2f}",
        fontsize=9,
    )
    axes[2].imshow(overlay(after_rgb, change_truth == 1), interpolation="nearest")
    axes[2].set_title("After + true change", fontsize=9)
    axes[1].legend(
        handles=[Patch(facecolor=red, edgecolor="black", label="change")],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.03),
        fontsize=8,
        frameon=False,
    )
    figure.savefig(paths["change"], bbox_inches="tight")
    return paths


# ---------------------------------------------------------------------------------------------
# QGIS project


def project_manifest(
    out: Path, scene: Any, pair: Any, landcover: Any, change: Any, classes: Sequence[Any]
) -> dict[str, Any]:
    """The layers of the QGIS project, in groups, top to bottom, with their styles.

    The engine's outputs carry their QML styles beside them; the ground-truth rasters get the
    engine's class and change styles (``core.writers``) written beside them here.
    """
    from landfuse.core.writers import change_style_qml, class_style_qml
    from landfuse.models.registry import CHANGE_CLASSES, ClassSpec

    class_table = [ClassSpec.from_dict(c) for c in classes]
    truth_qml = Path(scene.truth).with_suffix(".qml")
    truth_qml.write_text(class_style_qml(class_table), encoding="utf-8")
    change_qml = Path(pair.truth).with_suffix(".qml")
    change_qml.write_text(change_style_qml(CHANGE_CLASSES), encoding="utf-8")

    def styled(path: str, name: str, visible: bool = True) -> dict[str, Any]:
        qml = Path(path).with_suffix(".qml")
        return {"path": path, "name": name, "qml": str(qml) if qml.is_file() else None,
                "visible": visible}  # fmt: skip

    def rgb(path: Any, name: str, visible: bool) -> dict[str, Any]:
        _, (lows, highs) = true_colour(Path(path))
        return {"path": str(path), "name": name, "rgb": {"bands": list(TRUE_COLOUR),
                "min": lows, "max": highs}, "visible": visible}  # fmt: skip

    def gray(path: Any, name: str) -> dict[str, Any]:
        import rasterio

        with rasterio.open(path) as src:
            band = src.read(1, masked=True)
        lo, hi = np.percentile(band.compressed(), (2, 98))
        return {"path": str(path), "name": name, "gray": {"band": 1, "min": float(lo),
                "max": float(max(hi, lo + 1e-6))}, "visible": False}  # fmt: skip

    lc, ch = landcover.outputs, change.outputs
    groups = [
        {
            "name": "Land cover (AMM-FuseNet lite, demo weights)",
            "layers": [
                styled(lc["classes"], "Land cover (LandFuse)"),
                *([styled(lc["confidence"], "Confidence (%)", False)] if "confidence" in lc
                  else []),
                styled(str(scene.truth), "Ground truth (demo)", False),
                rgb(scene.s2, "Sentinel-2 (true colour)", True),
                gray(scene.s1, "Sentinel-1 VV (dB)"),
                gray(scene.dem, "DEM (m)"),
            ],
        },
        {
            "name": "Change (AMFNet lite, demo weights)",
            "layers": [
                styled(ch["change"], "Change (LandFuse)"),
                *([styled(ch["probability"], "Change probability", False)] if "probability" in ch
                  else []),
                styled(str(pair.truth), "True change (demo)", False),
                rgb(pair.after, "After (true colour)", True),
                rgb(pair.before, "Before (true colour)", False),
            ],
        },
    ]  # fmt: skip
    return {"project": str(out / PROJECT_NAME), "crs": "EPSG:32633", "groups": groups}


def write_qgis_project(manifest: dict[str, Any], work: Path) -> dict[str, Any]:
    """Write the ``.qgz`` in a child process running PyQGIS offscreen; returns its check.

    A child process keeps Qt and QGIS apart from torch, and a QGIS that fails to start cannot
    take the demo down with it.

    Raises:
        RuntimeError: when the child fails (its output is in the message).
    """
    work.mkdir(parents=True, exist_ok=True)
    manifest_path = work / "qgis_project.json"
    manifest_path.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    env = dict(os.environ)
    env["QT_QPA_PLATFORM"] = "offscreen"
    if "XDG_RUNTIME_DIR" not in env:
        runtime = work / "xdg-runtime"
        runtime.mkdir(exist_ok=True)
        runtime.chmod(0o700)  # Qt refuses a runtime folder others can read
        env["XDG_RUNTIME_DIR"] = str(runtime)
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--write-project", str(manifest_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"PyQGIS could not write the project (exit {done.returncode}):\n"
            f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        )
    return dict(json.loads(lines[-1]))


def _project_child(manifest_path: Path) -> int:
    """Child process: build, save and re-read the QGIS project described by the manifest."""
    from qgis.core import (
        QgsApplication,
        QgsContrastEnhancement,
        QgsCoordinateReferenceSystem,
        QgsMultiBandColorRenderer,
        QgsProject,
        QgsRasterLayer,
        QgsSingleBandGrayRenderer,
    )

    def stretch(layer: QgsRasterLayer, band: int, lo: float, hi: float) -> QgsContrastEnhancement:
        ce = QgsContrastEnhancement(layer.dataProvider().dataType(band))
        ce.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum, True)
        ce.setMinimumValue(lo)
        ce.setMaximumValue(hi)
        return ce

    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    profile = manifest_path.parent / "qgis-profile"
    profile.mkdir(parents=True, exist_ok=True)
    app = QgsApplication([], False, str(profile))
    app.initQgis()
    try:
        project = QgsProject()
        project.setCrs(QgsCoordinateReferenceSystem(manifest["crs"]))
        project.setTitle("LandFuse demo (synthetic scene, demo weights)")
        root = project.layerTreeRoot()
        problems = []
        for group_info in manifest["groups"]:
            group = root.addGroup(group_info["name"])
            for info in group_info["layers"]:
                layer = QgsRasterLayer(info["path"], info["name"])
                if not layer.isValid():
                    problems.append(f"invalid layer {info['path']}")
                    continue
                if info.get("qml"):
                    message, ok = layer.loadNamedStyle(info["qml"])
                    if not ok:
                        problems.append(f"style {info['qml']}: {message}")
                elif info.get("rgb"):
                    bands, lows, highs = (info["rgb"][k] for k in ("bands", "min", "max"))
                    renderer = QgsMultiBandColorRenderer(layer.dataProvider(), *bands)
                    renderer.setRedContrastEnhancement(stretch(layer, bands[0], lows[0], highs[0]))
                    renderer.setGreenContrastEnhancement(
                        stretch(layer, bands[1], lows[1], highs[1])
                    )
                    renderer.setBlueContrastEnhancement(stretch(layer, bands[2], lows[2], highs[2]))
                    layer.setRenderer(renderer)
                elif info.get("gray"):
                    band, lo, hi = (info["gray"][k] for k in ("band", "min", "max"))
                    gray = QgsSingleBandGrayRenderer(layer.dataProvider(), band)
                    gray.setContrastEnhancement(stretch(layer, band, lo, hi))
                    layer.setRenderer(gray)
                project.addMapLayer(layer, False)
                node = group.addLayer(layer)
                node.setItemVisibilityChecked(bool(info.get("visible", True)))
        if problems:
            print("\n".join(problems), file=sys.stderr)
            return 1
        if not project.write(manifest["project"]):
            print(f"could not write {manifest['project']}", file=sys.stderr)
            return 1
        # Read it back as QGIS would open it, and report what it holds.
        check = QgsProject()
        if not check.read(manifest["project"]):
            print(f"could not read {manifest['project']} back", file=sys.stderr)
            return 1
        layers = []
        for group in check.layerTreeRoot().children():
            for node in group.children():
                layer = node.layer()
                layers.append(
                    {
                        "group": group.name(),
                        "name": layer.name(),
                        "valid": layer.isValid(),
                        "renderer": layer.renderer().type() if layer.renderer() else None,
                        "visible": node.isVisible(),
                    }
                )
        print(json.dumps({"project": manifest["project"], "layers": layers}), flush=True)
        # Projects and layers must be gone before exitQgis(), or QGIS crashes on the way out.
        check.clear()
        project.clear()
        del check, project, layer
        return 0
    finally:
        app.exitQgis()


# ---------------------------------------------------------------------------------------------
# Main


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        description="LandFuse demo: map a synthetic scene for land cover and change, with "
        "previews and a QGIS project.",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output ({DEFAULT_OUT})")
    parser.add_argument(
        "--weights", type=Path, default=DEFAULT_WEIGHTS, help=f"weights ({DEFAULT_WEIGHTS})"
    )
    parser.add_argument("--size", type=int, default=768, help="land-cover scene edge (768 px)")
    parser.add_argument("--change-size", type=int, default=512, help="change pair edge (512 px)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--precision", default="auto", help="auto, fp32, bf16 or fp16")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--train-missing",
        action="store_true",
        help="train the demo weights first when they are missing (a few minutes)",
    )
    parser.add_argument("--no-project", action="store_true", help="skip the QGIS project")
    parser.add_argument("--write-project", type=Path, help=argparse.SUPPRESS)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the demo; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.write_project is not None:
        return _project_child(args.write_project)

    started = time.monotonic()
    trainer = _load_script("train_demo_weights")
    demo_data = trainer.load_demo_data()
    out: Path = args.out
    _say("LandFuse demo: land cover and change detection on a synthetic scene")
    _say("=" * 68)

    files = check_weights(args.weights, trainer)
    if not files:
        command = "python scripts/train_demo_weights.py"
        if not args.train_missing:
            _say(
                f"The demo weights are missing from {_rel(args.weights)} (expected "
                f"{trainer.LANDCOVER_FILE} and {trainer.CHANGE_FILE}).\nMake them with\n\n"
                f"    .venv/bin/{command}\n\n(a few minutes on a CPU), or run this demo with "
                "--train-missing to train them first."
            )
            return 2
        _say(f"The demo weights are missing: training them first ({command}).")
        trainer.main(["--out", str(args.weights)])
        files = check_weights(args.weights, trainer)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    notes = {task: weights_note(path) for task, path in files.items()}
    _say("NOTE: the bundled weights are DEMO WEIGHTS, trained only on synthetic scenes by")
    _say("scripts/train_demo_weights.py. They show the workflow; they are not fit for real")
    _say("imagery. Train on your own labels for real use (landfuse train-landcover).")
    for task, note in notes.items():
        marked = "demo weights" if note["demo_weights"] else "NOT marked as demo weights"
        _say(f"  {task}: {_rel(files[task])} ({note['model']}, {marked})")
    _say()

    _say(f"[1/5] Generating the demo scene into {_rel(out / 'data')} (seeds 1 and 11)")
    scene = trainer.make_scene(demo_data, "landcover", out / "data" / "landcover", args.size, 1)
    pair = trainer.make_scene(demo_data, "change", out / "data" / "change", args.change_size, 11)

    _say("[2/5] Land cover: Sentinel-2 + Sentinel-1 + DEM -> amm_fusenet_lite_s2_s1_dem")
    landcover = run_landcover(scene, files["landcover"], out / "landcover", args.device,
                              args.precision)  # fmt: skip
    _say("[3/5] Change: Sentinel-2 before/after -> amfnet_lite_s2")
    change = run_change(pair, files["change"], out / "change", args.device, args.precision)

    _say("[4/5] Accuracy against the demo ground truth")
    from landfuse.core.metrics import assess_class_map

    classes = notes["landcover"]["classes"]
    lc_report = assess_class_map(
        landcover.outputs["classes"], scene.truth, class_names=[c["name"] for c in classes]
    )
    ch_report = assess_class_map(
        change.outputs["change"],
        pair.truth,
        class_names=["no change", "change"],
        change_class=1,
        visualisation=out / "change" / "change_assessment.tif",
    )
    scores = {"landcover": lc_report.scalars(), "change": ch_report.scalars()}
    lc = scores["landcover"]
    _say(
        f"  land cover: overall accuracy {lc['oa'] * 100:.1f} %, kappa {lc['kappa']:.3f}, "
        f"mean IoU {lc['miou']:.3f}"
    )
    for name, iou, f1 in zip(lc_report.class_names, lc_report.iou, lc_report.f1):
        _say(f"    {name:<20} IoU {iou:.3f}  F1 {f1:.3f}")
    ch = scores["change"]
    _say(
        f"  change: F1 {ch['change_f1']:.3f}, precision {ch['change_precision']:.3f}, "
        f"recall {ch['change_recall']:.3f}, IoU {ch['change_iou']:.3f} "
        f"(overall accuracy {ch['oa'] * 100:.1f} %)"
    )

    _say("[5/5] Previews and QGIS project")
    previews = write_previews(out, scene, pair, landcover, change, classes, scores)
    project: Optional[dict[str, Any]] = None
    if args.no_project:
        _say("  QGIS project skipped (--no-project).")
    elif importlib.util.find_spec("qgis") is None:
        _say("  QGIS project skipped: PyQGIS is not installed (run `make setup`).")
    else:
        project = write_qgis_project(
            project_manifest(out, scene, pair, landcover, change, classes), out / ".work"
        )

    summary = {
        "demo_weights": {task: {k: v for k, v in n.items() if k != "classes"}
                         for task, n in notes.items()},
        "scene": {"landcover": {k: str(v) for k, v in vars(scene).items()},
                  "change": {k: str(v) for k, v in vars(pair).items()}},
        "outputs": {"landcover": landcover.outputs, "change": change.outputs},
        "accuracy": {"landcover": lc_report.to_dict(), "change": ch_report.to_dict()},
        "previews": {k: str(v) for k, v in previews.items()},
        "qgis_project": project,
        "seconds": round(time.monotonic() - started, 1),
    }  # fmt: skip
    summary_path = out / "demo_summary.json"
    summary_path.write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")

    _say()
    _say("Where everything is:")
    _say(f"  land-cover map      {_rel(landcover.outputs['classes'])} (+ .qml style, report)")
    _say(f"  change mask         {_rel(change.outputs['change'])} (+ probability, report)")
    _say(f"  change assessment   {_rel(out / 'change' / 'change_assessment.tif')} "
         "(white: found, red: false alarm, green: missed)")  # fmt: skip
    for name, path in previews.items():
        _say(f"  preview ({name:<9}) {_rel(path)}")
    if project is not None:
        _say(f"  QGIS project        {_rel(project['project'])} "
             f"({len(project['layers'])} styled layers in 2 groups)")  # fmt: skip
        _say(f"                      open it with: qgis {_rel(project['project'])}")
    _say(f"  summary             {_rel(summary_path)}")
    _say()
    _say("Reminder: DEMO WEIGHTS trained on synthetic data; the accuracy above is on a synthetic")
    _say(f"scene they never saw, not a claim about real imagery. Done in {summary['seconds']} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
