"""The worker process: JSON lines protocol, exit codes, and killing it in the middle of a run."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from landfuse.core.requests import LandCoverRequest, ModalityInput, request_to_dict

pytestmark = pytest.mark.unit

PYTHON = sys.executable

# A driver that runs the real worker with a stub registry entry and network (no weights needed).
DRIVER = textwrap.dedent(
    """
    import sys, time
    import torch
    from landfuse.core import engine, worker

    DELAY = float(sys.argv.pop(1))

    class Stub(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(2, 3, 1)

        def predict(self, *inputs):
            time.sleep(DELAY)
            return self.conv(torch.cat(inputs, 1))

    sys.path.insert(0, TESTS)  # the shared test helpers
    from stubmodels import Norm, stub_spec
    from landfuse.models.registry import register_model

    SPEC = stub_spec([("s2", ("a", "b"), Norm("fixed_stats", mean=(1000.0,), std=(500.0,)))])
    register_model(SPEC)  # for the life of this worker process
    engine.plan.load_network = lambda spec, weights, device, warn=None: (Stub(), spec, "0" * 64, {})
    sys.exit(worker.main())
    """
).replace("TESTS", repr(str(Path(__file__).resolve().parents[1])))


@pytest.fixture
def scene(tmp_path):
    data = np.random.default_rng(0).integers(0, 3000, (2, 96, 128)).astype(np.uint16)
    path = tmp_path / "s2.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=128,
        height=96,
        count=2,
        dtype="uint16",
        crs="EPSG:32631",
        transform=from_origin(500000, 4000000, 10, 10),
    ) as dst:
        dst.write(data)
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"stub")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    return {
        "s2": str(path),
        "weights": str(weights),
        "driver": str(driver),
        "out": tmp_path / "out",
    }


def request_file(scene, tmp_path, **kwargs):
    request = LandCoverRequest(
        inputs=(ModalityInput("s2", scene["s2"]),),
        model="stub",
        weights=scene["weights"],
        output_dir=str(scene["out"]),
        tile=32,
        overlap=8,
        batch=1,
        precision="fp32",
        **kwargs,
    )
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request_to_dict(request)))
    return str(path)


def lines_of(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_bad_request_gives_an_error_line_and_exit_2(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"weights")
    request = {
        "task": "change",
        "before": [{"path": str(tmp_path / "missing.tif")}],
        "after": str(tmp_path / "missing.tif"),
        "model": "amfnet_rgb_levir",
        "weights": str(tmp_path / "w.pt"),
        "output_dir": str(tmp_path / "out"),
    }
    proc = subprocess.run(
        [PYTHON, "-m", "landfuse.core.worker"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = lines_of(proc.stdout)
    assert proc.returncode == 2
    assert lines[0]["type"] == "started"
    assert lines[-1]["type"] == "error" and lines[-1]["exit_code"] == 2
    assert lines[-1]["error"] == "InputFileError" and "missing.tif" in lines[-1]["message"]
    invalid = subprocess.run(
        [PYTHON, "-m", "landfuse.core.worker", "-"],
        input="{not json",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert invalid.returncode == 2
    error = lines_of(invalid.stdout)[-1]
    assert error["error"] == "RequestError" and "not valid JSON" in error["message"]


def test_validate_checks_and_writes_nothing(scene, tmp_path):
    """``--validate``: the checks of a run, their warnings, one result line; no output."""
    proc = subprocess.run(
        [PYTHON, scene["driver"], "0", request_file(scene, tmp_path), "--validate"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = lines_of(proc.stdout)
    assert [line["type"] for line in lines] == ["started", "warning", "result"]
    assert lines[1]["code"] == "bands_by_position"  # the stub file names no bands
    assert lines[-1]["validated"] is True and lines[-1]["summary"]["tiles"] > 0
    assert not scene["out"].exists() or not list(scene["out"].iterdir())


def test_run_streams_progress_then_the_result(scene, tmp_path):
    proc = subprocess.run(
        [PYTHON, scene["driver"], "0", request_file(scene, tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = lines_of(proc.stdout)  # every stdout line is JSON
    assert lines[0]["type"] == "started" and lines[-1]["type"] == "result"
    progress = [line for line in lines if line["type"] == "progress"]
    fractions = [p["fraction"] for p in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(p["stage"] == "infer" and p["eta_seconds"] is not None for p in progress)
    outputs = lines[-1]["outputs"]
    assert Path(outputs["classes"]).is_file() and Path(outputs["report"]).is_file()
    assert lines[-1]["summary"]["tiles"]["computed"] == 20


def start_slow_run(scene, tmp_path, *extra):
    proc = subprocess.Popen(
        [PYTHON, scene["driver"], "0.3", *extra, request_file(scene, tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(json.loads(line))
        if lines[-1].get("stage") == "infer":
            return proc, lines
    proc.kill()
    pytest.fail(f"the worker never reached inference: {lines} {proc.stderr.read()}")


def finish(proc):
    out, err = proc.communicate(timeout=60)
    return proc.returncode, lines_of(out), err


def test_sigterm_cancels_at_once_and_leaves_nothing(scene, tmp_path):
    proc, _ = start_slow_run(scene, tmp_path)
    assert any(name.startswith(".landfuse-tmp-") for name in os.listdir(scene["out"]))
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code, lines, err = finish(proc)
    assert time.monotonic() - started < 10
    assert code == 3, err
    assert lines[-1]["type"] == "error" and lines[-1]["error"] == "CancelledError"
    assert not os.path.exists(scene["out"])  # the folder this run created is gone too


def test_cancel_file_stops_before_the_next_batch(scene, tmp_path):
    stop = tmp_path / "STOP"
    proc, _ = start_slow_run(scene, tmp_path, "--cancel-file", str(stop))
    stop.write_text("")
    code, lines, _ = finish(proc)
    assert code == 3 and lines[-1]["error"] == "CancelledError"
    assert not os.path.exists(scene["out"])  # the folder this run created is gone too


def test_a_killed_worker_leaves_only_a_temporary_folder_that_the_next_run_removes(scene, tmp_path):
    proc, _ = start_slow_run(scene, tmp_path)
    proc.kill()  # SIGKILL: nothing can run in the worker any more
    proc.communicate(timeout=60)
    left = os.listdir(scene["out"])
    assert len(left) == 1 and left[0].startswith(".landfuse-tmp-")  # no output under a final name
    proc = subprocess.run(
        [PYTHON, scene["driver"], "0", request_file(scene, tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert not any(name.startswith(".landfuse-tmp-") for name in os.listdir(scene["out"]))
