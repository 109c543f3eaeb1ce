"""Every registry entry can be chosen and run from every surface (issue 12).

For each model of the registry: small generated inputs, one per input slot of its task, and
tiny (ResNet-18, random) weights whose sidecar names the model. The command line and
``processing.run`` are given no model (the weights decide); the dock selects the weights'
model, shows one layer slot per input, and runs in its worker process. A test-only entry with a
test-only sensor appears in the dock's slots, Processing's parameters and the CLI's flags with
no other change.
"""

import time
from pathlib import Path

import numpy as np
import pytest
from faultcases import write_raster
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from stubmodels import registered, stub_spec

from landfuse.core import cli
from landfuse.core.tasks import get_task
from landfuse.models import sensors
from landfuse.models.registry import list_model_specs
from landfuse.models.specs import NormalisationSpec

pytestmark = pytest.mark.qgis

NAMES = [spec.name for spec in list_model_specs()]
SIZE = 64


def _values(modality, rng, shape):
    """Values the modality's normalisation expects (its statistics, bounds or 8-bit range)."""
    norm = modality.normalisation
    bands = len(modality.bands)
    if norm.mode == "fixed_stats":
        mean, std = np.array(norm.mean)[:, None, None], np.array(norm.std)[:, None, None]
        return (mean + std * rng.standard_normal((bands, *shape))).astype("float32")
    if norm.mode == "fixed_bounds":
        lower, upper = np.array(norm.lower)[:, None, None], np.array(norm.upper)[:, None, None]
        return (lower + (upper - lower) * rng.random((bands, *shape))).astype("float32")
    if norm.mode == "scale":
        return rng.integers(0, 255, (bands, *shape)).astype("uint8")
    return rng.uniform(100, 3000, (bands, *shape)).astype("float32")


def _inputs(folder: Path, spec) -> dict:
    """One file per input slot, on one 10 m grid, bands described with the model's names."""
    rng = np.random.default_rng(len(spec.name))
    task = get_task(spec.task)
    paths = {}
    for slot in task.slots(spec):
        data = _values(slot.modality, rng, (SIZE, SIZE))
        paths[slot.key] = write_raster(
            folder / f"{slot.key}.tif", data, 10, descriptions=list(slot.modality.band_names)
        )
    return paths


@pytest.fixture(scope="module")
def cases(tmp_path_factory, make_tiny_weights):
    """Inputs and tiny weights of every registry entry."""
    made = {}
    for spec in list_model_specs():
        folder = tmp_path_factory.mktemp(spec.name)
        made[spec.name] = (spec, _inputs(folder, spec), make_tiny_weights(folder, spec.name))
    return made


@pytest.mark.parametrize("name", NAMES)
def test_every_entry_runs_from_the_command_line(name, cases, tmp_path, capsys):
    spec, inputs, weights = cases[name]
    task = get_task(spec.task)
    flags = [item for key, path in inputs.items() for item in (f"--{key}", str(path))]
    options = ["--tile", str(SIZE), "--precision", "fp32", "-q"]
    code = cli.main(
        [task.command, *flags, "--weights", str(weights), "--out", str(tmp_path), *options]
    )
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / f"{task.name}_{task.main_product.suffix}.tif").is_file()


@pytest.mark.parametrize("name", NAMES)
def test_every_entry_runs_from_processing(name, cases, provider, tmp_path):
    import processing

    spec, inputs, weights = cases[name]
    algorithm = {"landcover": "landcover", "change": "changedetection"}[spec.task]
    parameters = {key.upper(): str(path) for key, path in inputs.items()}
    parameters.update(
        {
            "WEIGHTS": str(weights),
            "OUTPUT": str(tmp_path / "out.tif"),
            "TILE": SIZE,
            "PRECISION": "fp32",
        }
    )
    result = processing.run(f"landfuse:{algorithm}", parameters)
    assert Path(result["OUTPUT"]).is_file()
    assert Path(result["REPORT"]).is_file()


@pytest.mark.parametrize("name", NAMES)
def test_every_entry_runs_from_the_dock(name, cases, dock, tmp_path):
    spec, inputs, weights = cases[name]
    panel = getattr(dock, spec.task)
    dock.show_panel(panel)
    panel.weights.setFilePath(str(weights))
    assert panel.model_combo.currentData() == spec.name  # the weights chose their model
    shown = [key for key, combo in panel.layer_combos.items() if not combo.isHidden()]
    assert shown == [slot.key for slot in get_task(spec.task).slots(spec)]
    for key, path in inputs.items():
        layer = QgsRasterLayer(str(path), key)
        QgsProject.instance().addMapLayer(layer)
        panel.layer_combos[key].setLayer(layer)
    assert panel.check() == []
    dock.output_dir.setFilePath(str(tmp_path))
    dock.tile.setValue(SIZE)
    dock.precision.setCurrentIndex(dock.precision.findData("fp32"))
    dock.run()
    started = time.monotonic()
    while dock.task is not None and time.monotonic() - started < 300:
        QgsApplication.processEvents()
        time.sleep(0.02)
    assert dock.task is None and dock.last_failure is None, dock.last_failure
    assert dock.last_summary is not None and "ready" in dock.last_summary.text


def test_a_test_only_sensor_and_model_appear_on_every_surface(provider, dock):
    """Registered at run time: the dock's slots after a refresh, Processing's parameters after
    ``refreshAlgorithms()``, the CLI's flags when it parses."""
    from qgis.core import QgsApplication

    table = sensors.Sensor(
        key="test_hyper",
        title="Test hyperspectral sensor",
        unit="reflectance",
        bands=tuple(
            sensors.SensorBand(f"H{i}", f"Band {i}", 30, 400 + 10 * i, (f"hyper{i}",))
            for i in range(1, 6)
        ),
        value_range=(0.0, 1.0),
    )
    sensors.register_sensor(table)
    try:
        scale = NormalisationSpec("scale", factor=1.0)
        spec = stub_spec([("hyper", 5, scale)], name="stub_hyper")
        spec = type(spec)(**{**spec.__dict__, "modalities": (table.modality("hyper", scale),)})
        with registered(spec):
            dock.landcover.refresh_models()
            assert "hyper" in dock.landcover.layer_combos
            index = dock.landcover.model_combo.findData("stub_hyper")
            dock.landcover.model_combo.setCurrentIndex(index)
            assert not dock.landcover.layer_combos["hyper"].isHidden()
            assert dock.landcover.tables["hyper"].rowCount() == 5
            provider.refreshAlgorithms()
            algorithm = QgsApplication.processingRegistry().algorithmById("landfuse:landcover")
            assert algorithm.parameterDefinition("HYPER") is not None
            assert "stub_hyper" in algorithm.parameterDefinition("MODEL").options()
            help_text = cli.build_parser().format_help()
            assert "predict-landcover" in help_text
            args = cli.build_parser().parse_args(
                ["predict-landcover", "--hyper", "h.tif", "--weights", "w", "--out", "o"]
            )
            assert args.hyper == ["h.tif"]
        provider.refreshAlgorithms()
        algorithm = QgsApplication.processingRegistry().algorithmById("landfuse:landcover")
        assert algorithm.parameterDefinition("HYPER") is None
    finally:
        sensors.unregister_sensor("test_hyper")
