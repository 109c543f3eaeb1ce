"""Issue 11's bad-input and fault matrix through ``processing.run`` (the toolbox, the Graphical
Modeler, batch and ``qgis_process`` all call the algorithms this way).

Each case of ``tests/faultcases.py`` that Processing can express (one file per input, no band
selection) must end in a ``QgsProcessingException`` whose message says what to do and shows no
traceback, or, when the run may go on, in a warning in the Processing feedback; afterwards the
inputs and weights are byte-identical and nothing is left beside them or in the output folder.
The data-loss case of the issue (``OUTPUT`` is the Sentinel-2 input) is one of them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from faultcases import (
    WARNING_TEXT,
    Case,
    Kit,
    Run,
    cases_for,
    check_untouched,
    sha256_tree,
    snapshot,
)
from qgis.core import QgsProcessingException, QgsProcessingFeedback

pytestmark = pytest.mark.qgis


class RecordingFeedback(QgsProcessingFeedback):
    """Keeps what an algorithm tells the user."""

    def __init__(self) -> None:
        super().__init__()
        self.warnings: list[str] = []
        self.errors: list[str] = []

    def pushWarning(self, text: str) -> None:
        self.warnings.append(text)
        super().pushWarning(text)

    def reportError(self, text: str, fatal: bool = False) -> None:
        self.errors.append(text)
        super().reportError(text, fatal)


@pytest.fixture(scope="session")
def weights_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fault_weights_processing")


def _parameters(run: Run) -> tuple[str, dict]:
    output = run.processing_output or (run.out / f"{run.name}.tif")
    common = {
        "MODEL": run.model,
        "WEIGHTS": str(run.weights),
        "OUTPUT": str(output),
        "TILE": run.tile or 0,
        "OVERLAP": -1 if run.overlap is None else run.overlap,
        "BATCH": run.batch,
        "DEVICE": "cpu",
        "PIXEL_GRID": run.pixel_grid,
    }
    if run.bounds is not None:
        xmin, ymin, xmax, ymax = run.bounds
        common["EXTENT"] = f"{xmin},{xmax},{ymin},{ymax} [EPSG:32631]"
    if run.task == "change":
        return "changedetection", {
            **common,
            "BEFORE": str(run.inputs["before"][0]),
            "AFTER": str(run.inputs["after"][0]),
        }
    layers = {key.upper(): str(files[0]) for key, files in run.inputs.items()}
    return "landcover", {**common, **layers}


def _as_layers_in_a_project(run: Run) -> None:
    """Load the inputs as QGIS layers first, as they are in a user's project.

    QGIS itself writes ``<file>.aux.xml`` (the histogram of its default style) beside a raster
    the first time it loads it; that is QGIS's doing, before any LandFuse algorithm runs, so it
    happens before the snapshot, and the check is that LandFuse adds nothing.
    """
    from qgis.core import QgsRasterLayer

    for files in run.inputs.values():
        for path in files:
            layer = QgsRasterLayer(str(path), path.name)
            if layer.isValid():
                layer.renderer()
            del layer


@pytest.mark.parametrize("case", cases_for("processing"), ids=lambda c: c.id)
def test_processing_run(case: Case, provider, tmp_path: Path, weights_cache: Path) -> None:
    import processing

    kit = Kit(tmp_path, weights_cache)
    run = case.build(kit)
    if run.processing_output is None:
        run.out.mkdir(exist_ok=True)
    _as_layers_in_a_project(run)
    before, existed = snapshot(run)
    algorithm, parameters = _parameters(run)
    feedback = RecordingFeedback()
    if case.error:
        with pytest.raises(QgsProcessingException) as info:
            processing.run(f"landfuse:{algorithm}", parameters, feedback=feedback)
        message = str(info.value)
        assert "Traceback" not in message and "please report" not in message, message
        assert re.search(case.processing_advice or case.advice, message, re.S), message
        check_untouched(run, before, existed)
    else:
        processing.run(f"landfuse:{algorithm}", parameters, feedback=feedback)
        assert any(re.search(WARNING_TEXT[case.warning], w) for w in feedback.warnings), (
            feedback.warnings
        )
        assert sha256_tree(run.protected()) == before


def test_a_reversed_band_stack_gives_the_same_map_as_on_the_command_line(
    provider, tmp_path: Path, weights_cache: Path
) -> None:
    """One band resolver: Processing reorders B12...B01 by description exactly as the engine."""
    import numpy as np
    import rasterio
    from faultcases import S2_NAMES

    import processing
    from landfuse.core import engine

    kit = Kit(tmp_path, weights_cache)
    straight = kit.landcover(name="straight")
    engine.run(straight.request())  # type: ignore[arg-type]
    with rasterio.open(straight.inputs["s2"][0]) as src:
        data = src.read()
    reversed_s2 = kit.s2("s2_reversed.tif", data[::-1].copy(), descriptions=S2_NAMES[::-1])
    flipped = kit.landcover(
        inputs={**straight.inputs, "s2": [reversed_s2]}, weights=straight.weights
    )
    flipped.processing_output = tmp_path / "processing_map.tif"
    algorithm, parameters = _parameters(flipped)
    feedback = RecordingFeedback()
    processing.run(f"landfuse:{algorithm}", parameters, feedback=feedback)
    assert not any("by their position" in w for w in feedback.warnings), feedback.warnings
    with (
        rasterio.open(straight.out / "straight_classes.tif") as a,
        rasterio.open(flipped.processing_output) as b,
    ):
        assert np.array_equal(a.read(1), b.read(1))
