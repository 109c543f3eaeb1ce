"""The ``landfuse`` command line: arguments, help, progress, exit codes, the training hook."""

import io
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from stubmodels import Norm, registered, stub_spec

from landfuse.core import cli, engine
from landfuse.core.errors import CancelledError, InputFileError
from landfuse.core.requests import ChangeRequest, LandCoverRequest
from landfuse.core.runner import Progress

pytestmark = pytest.mark.unit


class Stub(torch.nn.Module):
    def __init__(self, bands, classes):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(bands, classes, 1)

    def predict(self, *inputs):
        return self.conv(torch.cat(inputs, 1))


@pytest.fixture
def scene(tmp_path, monkeypatch):
    """An S2 (3 bands) + S1 (2 bands) scene, a stub model 'stub' and a weights file."""
    rng = np.random.default_rng(0)
    paths = {}
    for name, bands, res in (("s2", 3, 10), ("s1", 2, 20)):
        size = 640 // res
        paths[name] = str(tmp_path / f"{name}.tif")
        with rasterio.open(
            paths[name],
            "w",
            driver="GTiff",
            width=size,
            height=size,
            count=bands,
            dtype="float32",
            crs="EPSG:32631",
            transform=from_origin(500000, 4000000, res, res),
        ) as dst:
            dst.write(rng.normal(1000, 300, (bands, size, size)).astype(np.float32))
            if name == "s2":
                for index, band in enumerate(("B02", "B03", "B04"), start=1):
                    dst.set_band_description(index, band)
    paths["weights"] = str(tmp_path / "w.pt")
    (tmp_path / "w.pt").write_bytes(b"stub")
    stats = Norm("fixed_stats", mean=(1000.0,), std=(300.0,))
    spec = stub_spec([("s2", ("B02", "B03", "B04"), stats), ("s1", ("VV", "VH"), stats)])
    monkeypatch.setattr(
        engine.plan, "load_network", lambda i, w, d, warn=None: (Stub(5, 3), i, "0" * 64, {})
    )
    paths["out"] = str(tmp_path / "out")
    with registered(spec):
        yield paths


def landcover_args(scene, *extra):
    return [
        "predict-landcover",
        "--s2",
        scene["s2"],
        "--s1",
        scene["s1"],
        "--model",
        "stub",
        "--weights",
        scene["weights"],
        "--out",
        scene["out"],
        "--tile",
        "32",
        *extra,
    ]


def test_predict_landcover_writes_outputs_and_prints_paths(scene, capsys):
    assert cli.main(landcover_args(scene)) == 0
    captured = capsys.readouterr()
    assert "classes: " in captured.out and "report: " in captured.out
    assert "100.0%" in captured.err  # progress lines on stderr (not a terminal here)
    with rasterio.open(captured.out.split("classes: ")[1].split()[0]) as src:
        assert src.shape == (64, 64)


def test_json_output_and_options_reach_the_request(scene, capsys, monkeypatch):
    seen = {}
    real_run = engine.run

    def spy(request, progress=None, cancel=None, warn=None):
        seen["request"] = request
        return real_run(request, progress, cancel)

    monkeypatch.setattr(engine, "run", spy)
    code = cli.main(
        landcover_args(
            scene,
            "--json",
            "-q",
            "--overlap",
            "4",
            "--batch",
            "3",
            "--device",
            "cpu",
            "--precision",
            "fp32",
            "--no-confidence",
            "--name",
            "farm",
            "--s2-bands",
            "1,2,B04",
            "--no-cog",
        )
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["outputs"]) == {"classes", "report"}
    request = seen["request"]
    assert isinstance(request, LandCoverRequest)
    assert (request.overlap, request.batch, request.device, request.precision) == (
        4,
        3,
        "cpu",
        "fp32",
    )
    assert request.inputs[0].sources[0].bands == (1, 2, "B04") and request.name == "farm"
    assert request.outputs == ("classes",) and request.cog is False


def test_predict_change_builds_a_change_request(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_run(request, progress=None, cancel=None, warn=None):
        seen["request"] = request
        return engine.RunResult("change", {"change": "c.tif", "report": "r.json"}, {})

    monkeypatch.setattr(engine, "run", fake_run)
    code = cli.main(
        [
            "predict-change",
            "--before",
            "a1.tif",
            "a2.tif",
            "--after",
            "b1.tif",
            "b2.tif",
            "--model",
            "amfnet_s2",
            "--weights",
            "w.pt",
            "--out",
            str(tmp_path),
            "--threshold",
            "0.7",
            "--pixel-grid",
            "--no-probability",
        ]
    )
    assert code == 0
    request = seen["request"]
    assert isinstance(request, ChangeRequest)
    assert [s.path for s in request.after] == ["b1.tif", "b2.tif"]
    assert request.threshold == 0.7 and request.pixel_grid and request.outputs == ("change",)


def test_bad_input_exits_2_with_the_message(scene, capsys):
    args = landcover_args(scene)
    args[args.index(scene["s1"])] = scene["s1"] + ".missing"
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "landfuse: error:" in err and "does not exist" in err


def test_request_errors_from_arguments_exit_2(scene, capsys):
    assert cli.main(landcover_args(scene, "--overlap", "40")) == 2
    assert "smaller than the tile" in capsys.readouterr().err
    assert cli.main(landcover_args(scene, "--bounds-crs", "EPSG:4326")) == 2
    assert cli.main(["predict-landcover", "--model", "stub", "--weights", "w", "--out", "o"]) == 2
    assert "Give the input rasters" in capsys.readouterr().err


@pytest.mark.parametrize(
    "error,code,text",
    [
        (KeyboardInterrupt(), 3, "cancelled"),
        (CancelledError("stop"), 3, "cancelled"),
        (InputFileError("x.tif does not exist"), 2, "x.tif does not exist"),
        (RuntimeError("bug"), 1, "unexpected error (RuntimeError: bug)"),
    ],
)
def test_exit_codes(scene, monkeypatch, capsys, error, code, text):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(engine, "run", fail)
    assert cli.main(landcover_args(scene, "-q")) == code
    assert text in capsys.readouterr().err


def test_usage_errors_and_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["predict-landcover", "--tile", "notanumber"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["predict-change", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--before" in text and "amfnet_rgb_levir" in text and "not symmetric" in text
    assert cli.main([]) == 2


def test_validate_only_writes_nothing(scene, capsys):
    assert cli.main(landcover_args(scene, "--validate-only")) == 0
    assert capsys.readouterr().out.startswith("OK: 9 tiles of 32 px on a 64x64 grid")
    out = Path(scene["out"])
    assert not out.exists() or not list(out.iterdir())


def test_band_list_parsing():
    assert cli.parse_band_list("1, 2,B8A") == (1, 2, "B8A")
    with pytest.raises(Exception, match="separated by commas"):
        cli.parse_band_list(" , ")


def test_progress_bar_on_a_terminal_and_in_a_log():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    bar = cli.ProgressBar(tty, width=10)
    bar(Progress("infer", 0.5, 5, 10, 65.0, "5/10 tiles"))
    bar.close()
    assert "[#####-----]  50.0% 5/10 tiles, 1m05s left" in tty.getvalue()
    log = io.StringIO()
    bar = cli.ProgressBar(log)
    for done in range(11):
        bar(Progress("infer", done / 10, done, 10, 1.0, f"{done}/10"))
        bar(Progress("infer", done / 10 + 0.01, done, 10, 1.0, "again"))
    lines = log.getvalue().splitlines()
    assert len(lines) == 11  # one line per 10 %


def test_train_cli_subcommands_are_registered_when_present(monkeypatch):
    module = types.ModuleType("landfuse.core.train_cli")

    def register(subparsers):
        parser = subparsers.add_parser("train", help="train a model")
        parser.set_defaults(func=lambda args: 0)

    module.register = register
    monkeypatch.setitem(sys.modules, "landfuse.core.train_cli", module)
    parser = cli.build_parser()
    assert parser.parse_args(["train"]).func(None) == 0
    assert cli.main(["train"]) == 0


def test_console_module_help_runs_without_torch_work():
    proc = subprocess.run(
        [sys.executable, "-m", "landfuse.core.cli", "predict-landcover", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0
    assert "Sentinel-2" in proc.stdout and "--s1" in proc.stdout and "--pixel-grid" in proc.stdout
    assert "exit" not in proc.stderr.lower()
