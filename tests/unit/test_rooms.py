"""One room per thing that varies: sensors, architectures, tasks, products and run options are
tables, and every surface is generated from them (issue 12).

A test-only sensor (a table), a registry entry of the stub architecture with it, and the command
line, the tasks and the engine take it with no other change; the band resolver the dock and the
engine share reads the sensor's aliases; the package stays cut into files of a readable size.
"""

import ast
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from stubmodels import PixelNet, registered, stub_spec

from landfuse.core import cli, engine
from landfuse.core.band_mapping import (
    MATCHED_BY_NAME,
    FileBands,
    resolve_bands,
    suggest_band_mapping,
)
from landfuse.core.products import PRODUCTS
from landfuse.core.requests import LandCoverRequest, ModalityInput
from landfuse.core.run_options import RUN_OPTIONS, default_overlap, resolve_overlap
from landfuse.core.tasks import TASKS, get_task
from landfuse.models import sensors
from landfuse.models.registry import list_model_specs
from landfuse.models.specs import NormalisationSpec

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = ("core", "models", "processing", "ui")
MAX_LINES = 600


def test_no_package_file_is_over_600_lines():
    long = {
        str(path.relative_to(REPO)): n
        for folder in PACKAGE_DIRS
        for path in (REPO / folder).rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}, f"split these files (over {MAX_LINES} lines): {long}"


def _branches_on_names(path: Path) -> list[str]:
    """Comparisons of anything with a task or architecture name (``x == "change"``)."""
    names = {"change", "landcover"} | {a for a in ("amfnet", "amm_fusenet")}
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(
            isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops
        ):
            values = [node.left, *node.comparators]
            if any(isinstance(v, ast.Constant) and v.value in names for v in values):
                target = ast.unparse(node)
                if "style" not in target:  # a product's style is no task
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: {target}")
    return found


def test_no_module_branches_on_a_task_or_architecture_name():
    """The task and architecture rooms answer; nothing else compares their names."""
    rooms = {REPO / "core" / "tasks", REPO / "models" / "architectures.py"}
    found = [
        hit
        for folder in PACKAGE_DIRS
        for path in (REPO / folder).rglob("*.py")
        if not any(path == room or room in path.parents for room in rooms)
        for hit in _branches_on_names(path)
    ]
    assert found == []


def _s2_band_lists(path: Path) -> list[int]:
    """Lines of tuple or list literals that spell out three or more Sentinel-2 band names."""
    names = {f"B{i:02d}" for i in range(1, 13)} | {"B8A"}
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, (ast.Tuple, ast.List))
        and sum(isinstance(e, ast.Constant) and e.value in names for e in node.elts) >= 3
    ]


def test_the_sentinel_2_band_list_is_written_once():
    """Every Sentinel-2 band list of the package comes from the sensor tables."""
    holders = {
        str(p.relative_to(REPO)): lines
        for folder in PACKAGE_DIRS
        for p in (REPO / folder).rglob("*.py")
        if (lines := _s2_band_lists(p))
    }
    assert holders == {}


@pytest.mark.parametrize(
    "sensor, text, band",
    [
        ("sentinel2_l1c", "red", "B04"),
        ("sentinel2_l1c", "S2_B8A", "B8A"),
        ("sentinel2_l1c", "b8a", "B8A"),
        ("sentinel2_l2a", "B4", "B04"),
        ("rgb", "red", "R"),
        ("landsat_oli", "SR_B4", "B4"),
        ("landsat_oli", "red", "B4"),
        ("sentinel1_grd", "vv", "VV"),
    ],
)
def test_sensor_aliases_name_the_sensor_s_bands(sensor, text, band):
    table = sensors.get_sensor(sensor)
    assert table.canonical(text) == band
    assert sensors.band_key(text, table) == sensors.band_key(band, table)


def test_the_dock_s_suggestion_and_the_engine_s_resolver_agree_on_aliases():
    """``red``/``green``/``blue`` descriptions: the same bands in the dock's table and the run."""
    s2 = sensors.get_sensor("sentinel2_l1c")
    wanted = ("B02", "B03", "B04", "B08")
    descriptions = ("nir", "red", "green", "blue")
    suggested = suggest_band_mapping(descriptions, wanted, s2)
    assert suggested.raster_bands == (4, 3, 2, 1)
    resolved = resolve_bands([FileBands("x.tif", descriptions, sensor=s2)], wanted)
    assert resolved.how == MATCHED_BY_NAME
    assert resolved.read_order(1) is not None
    assert [c for c in resolved.choices] == [(0, 4), (0, 3), (0, 2), (0, 1)]


def test_run_options_and_products_drive_the_command_line():
    """Every run option is a flag with its default; every optional product a --no- flag."""
    parser = cli.build_parser()
    for task in TASKS:
        args = parser.parse_args([task.command, "--weights", "w.pt", "--out", "o"])
        for option in (*RUN_OPTIONS, *task.options):
            assert getattr(args, option.name) == option.default
        for product in PRODUCTS[task.name]:
            assert hasattr(args, f"no_{product.key}") is (not product.main)
    assert default_overlap(256) == 32 and resolve_overlap(256, None) == 32
    assert resolve_overlap(256, 0) == 0


def _landsat_scene(folder: Path) -> str:
    """Seven Landsat surface-reflectance bands, described as USGS names them, shuffled."""
    rng = np.random.default_rng(3)
    path = folder / "LC09_SR.tif"
    order = (3, 1, 2, 7, 5, 4, 6)  # SR_B3 first: only the names can put them right
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=64,
        height=64,
        count=7,
        dtype="uint16",
        crs="EPSG:32631",
        transform=from_origin(500000, 4000000, 30, 30),
    ) as dst:
        for index, band in enumerate(order, start=1):
            dst.write(rng.integers(7000, 20000, (64, 64)).astype(np.uint16) + band, index)
            dst.set_band_description(index, f"SR_B{band}")
    return str(path)


def test_a_new_sensor_is_a_table_and_a_new_model_one_entry(tmp_path, monkeypatch):
    """Landsat 8/9 OLI with the stub architecture: the command line offers its input, the task
    its slot, and the engine maps a file whose bands are named in USGS's own way."""
    landsat = sensors.get_sensor("landsat_oli")
    scale = NormalisationSpec("scale", factor=1 / 65535)
    modality = landsat.modality("landsat", scale, "Landsat 8/9 OLI surface reflectance")
    spec = stub_spec([("landsat", 7, scale)], classes=3, name="stub_landsat")
    spec = type(spec)(**{**spec.__dict__, "modalities": (modality,)})
    with registered(spec):
        assert spec.name in {s.name for s in list_model_specs("landcover")}
        slots = get_task("landcover").slots(spec)
        assert [s.key for s in slots] == ["landsat"]
        help_text = (
            cli.build_parser()
            ._subparsers._group_actions[0]
            .choices["predict-landcover"]
            .format_help()
        )
        assert "--landsat" in help_text and "--landsat-bands" in help_text
        net = PixelNet([7], 3)
        monkeypatch.setattr(
            engine.plan, "load_network", lambda s, w, d, warn=None: (net, s, "0" * 64, {})
        )
        weights = tmp_path / "w.pt"
        weights.write_bytes(b"stub")
        warnings = []
        result = engine.run(
            LandCoverRequest(
                inputs=(ModalityInput("landsat", _landsat_scene(tmp_path)),),
                model="stub_landsat",
                weights=str(weights),
                output_dir=str(tmp_path / "out"),
                tile=32,
                precision="fp32",
            ),
            warn=warnings.append,
        )
    entry = result.report["inputs"][0]
    assert entry["band_matching"] == MATCHED_BY_NAME
    assert entry["bands"] == [2, 3, 1, 6, 5, 7, 4]  # SR_B1..SR_B7 found by their names
    assert not [w for w in warnings if w.code == "bands_by_position"]
    assert Path(result.outputs["classes"]).is_file()
    assert torch.is_tensor(next(net.parameters()))


def test_the_tables_refuse_a_second_row_of_a_name_and_keep_their_built_in_rows():
    from landfuse.models import architectures, registry
    from landfuse.models.errors import ModelConfigError

    with pytest.raises(ModelConfigError, match="An architecture called 'amfnet' is already"):
        architectures.register_architecture(architectures.get_architecture("amfnet"))
    with pytest.raises(ModelConfigError, match="built-in sensor"):
        sensors.unregister_sensor("sentinel2_l1c")
    with pytest.raises(ModelConfigError, match="built-in model"):
        registry.unregister_model("amfnet_s2")
    spec = stub_spec([("x", 2, NormalisationSpec("minmax_per_tile"))], name="stub_table")
    with registered(spec), pytest.raises(ModelConfigError, match="A model called 'stub_table'"):
        registry.register_model(spec)
    assert "stub_table" not in registry.model_names()
