"""Fixtures for the headless QGIS tier: small scenes and tiny (ResNet-18) weights files."""

from pathlib import Path

import numpy as np
import pytest
from faultcases import write_raster  # one writer for every tier's generated rasters

S2_NAMES = [
    "B01",
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B09",
    "B10",
    "B11",
    "B12",
]


@pytest.fixture(scope="session")
def scenes(tmp_path_factory):
    """An S2 (13 bands, 10 m) + S1 (VV/VH, 20 m) scene and an RGB before/after pair."""
    folder = tmp_path_factory.mktemp("scenes")
    rng = np.random.default_rng(0)
    s2 = rng.integers(200, 4000, size=(13, 96, 96)).astype("uint16")
    s1 = rng.normal(-12, 3, size=(2, 48, 48)).astype("float32")
    before = rng.integers(0, 255, size=(3, 64, 64)).astype("uint8")
    after = before.copy()
    after[:, 16:40, 20:44] = 255 - after[:, 16:40, 20:44]
    truth = np.zeros((1, 64, 64), np.uint8)
    truth[0, 16:40, 20:44] = 1
    return {
        "s2": write_raster(folder / "s2.tif", s2, 10, descriptions=S2_NAMES),
        "s1": write_raster(folder / "s1.tif", s1, 20, descriptions=["VV", "VH"]),
        "before": write_raster(folder / "before.tif", before, 0.5),
        "after": write_raster(folder / "after.tif", after, 0.5),
        "truth": write_raster(folder / "truth.tif", truth, 0.5, nodata=255),
    }


def tiny_weights(folder: Path, model_name: str, seed: int = 0) -> Path:
    """Randomly initialised weights of a registry model with a ResNet-18 encoder (fast on CPU)."""
    import torch

    from landfuse.models.registry import build_architecture, get_model_spec
    from landfuse.models.weights import WeightsMetadata, save_weights

    torch.manual_seed(seed)
    spec = get_model_spec(model_name)
    config = {**spec.model_config(), "encoder": "resnet18"}
    model = build_architecture(spec.architecture, config)
    path = folder / f"{model_name}_tiny.pt"
    metadata = WeightsMetadata.for_spec(
        spec, config=model.config, training={"note": "random initialisation for tests"}
    )
    save_weights(path, model, metadata)
    return path


@pytest.fixture(scope="session")
def make_tiny_weights():
    """:func:`tiny_weights`, for tests that need weights of other registry models."""
    return tiny_weights


@pytest.fixture(scope="session")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    return {
        "landcover": tiny_weights(folder, "amm_fusenet_s2_s1_hunan"),
        "change": tiny_weights(folder, "amfnet_rgb_levir"),
    }


@pytest.fixture(scope="module")
def provider(qgis_processing):
    """The LandFuse Processing provider, registered for the module's tests."""
    from qgis.core import QgsApplication

    from landfuse.processing.provider import LandFuseProvider

    registry = QgsApplication.processingRegistry()
    provider = LandFuseProvider()
    registry.addProvider(provider)
    yield provider
    registry.removeProvider(provider)


@pytest.fixture
def dock(qgis_new_project, qgis_iface):
    """A LandFuse dock whose worker runs with this Python (which has torch)."""
    import sys

    from qgis.core import QgsSettings

    from landfuse.processing import environment
    from landfuse.ui.dock import LandFuseDock

    QgsSettings().setValue(environment.SETTINGS_WORKER_PYTHON, sys.executable)
    widget = LandFuseDock(None, qgis_iface)
    yield widget
    widget.cleanup()
    widget.deleteLater()
    QgsSettings().remove(environment.SETTINGS_WORKER_PYTHON)
