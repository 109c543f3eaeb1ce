"""Issue 11's faults that need a whole run: signals sent to real ``landfuse`` processes at each
stage, a disk that fills up mid-run, a band stack in reversed order, and ``--overwrite`` with
fewer outputs than the run before.

Every stopped run must end with exit code 3 and one ``landfuse: cancelled`` line, no traceback,
nothing in the output folder (not even the hidden ``.landfuse-tmp-*`` folder) and the inputs
byte-identical. After ``kill -9`` (which nothing can catch) the next run removes the temporary
folder the killed one left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import rasterio
from faultcases import (
    EXIT_CANCELLED,
    S2_NAMES,
    Kit,
    Run,
    landfuse_command,
    sha256_tree,
    snapshot,
    upscaled_vrt,
)

from landfuse.core import engine

pytestmark = [pytest.mark.unit, pytest.mark.slow]


@pytest.fixture(scope="module")
def weights_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fault_run_weights")


def _long_run(kit: Kit, size: int = 1536) -> Run:
    """A land-cover run of several seconds on this machine (VRTs over the small test files)."""
    inputs = {
        "s2": [upscaled_vrt(kit, kit.s2(), size)],
        "s1": [upscaled_vrt(kit, kit.s1(), size // 2)],
        "dem": [upscaled_vrt(kit, kit.dem(), size)],
    }
    return kit.landcover(inputs=inputs, tile=256, batch=2)


def _start(run: Run, tmp_path: Path, ignore_sigint: bool = False) -> subprocess.Popen:
    def background_job() -> None:  # what a shell without job control does to `cmd &`
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    return subprocess.Popen(
        [*landfuse_command(), *run.cli_args()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=background_job if ignore_sigint else None,
    )


def _wait_for(proc: subprocess.Popen, pattern: str, timeout: float = 240) -> list[str]:
    """Read the progress lines until one contains ``pattern``."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if pattern in line:
            return lines
    proc.kill()
    raise AssertionError(f"never saw {pattern!r}; stderr so far:\n{''.join(lines)}")


def _assert_stopped_cleanly(proc: subprocess.Popen, run: Run, before: dict[str, str]) -> str:
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_CANCELLED, rest
    assert "Traceback" not in rest, rest
    assert sum("landfuse: cancelled" in line for line in rest.splitlines()) == 1, rest
    left = list(run.out.rglob("*")) if run.out.exists() else []
    assert left == [], left
    assert sha256_tree(run.protected()) == before
    return rest


@pytest.mark.parametrize(
    ("stage", "sig"),
    [
        ("Checking the inputs", signal.SIGTERM),
        ("tiles", signal.SIGTERM),
        ("Writing Cloud-Optimised GeoTIFFs", signal.SIGTERM),
        ("tiles", signal.SIGINT),
    ],
    ids=["sigterm_validating", "sigterm_tiles", "sigterm_final_write", "sigint_tiles"],
)
def test_a_signal_stops_the_command_line_cleanly(
    stage: str, sig: int, tmp_path: Path, weights_cache: Path
) -> None:
    run = _long_run(Kit(tmp_path, weights_cache))
    before, _ = snapshot(run)
    proc = _start(run, tmp_path)
    _wait_for(proc, stage)
    proc.send_signal(sig)
    _assert_stopped_cleanly(proc, run, before)


def test_ctrl_c_stops_a_background_job(tmp_path: Path, weights_cache: Path) -> None:
    run = _long_run(Kit(tmp_path, weights_cache))
    before, _ = snapshot(run)
    proc = _start(run, tmp_path, ignore_sigint=True)
    _wait_for(proc, "tiles")
    proc.send_signal(signal.SIGINT)
    _assert_stopped_cleanly(proc, run, before)


def test_after_kill_9_the_next_run_removes_the_temporary_folder(
    tmp_path: Path, weights_cache: Path
) -> None:
    run = _long_run(Kit(tmp_path, weights_cache), size=1024)
    proc = _start(run, tmp_path)
    _wait_for(proc, "tiles")
    proc.kill()
    proc.communicate(timeout=60)
    leftovers = [p.name for p in run.out.iterdir() if p.name.startswith(".landfuse-tmp-")]
    assert leftovers, "a killed run leaves its temporary folder (nothing can run in it)"
    done = subprocess.run(
        [*landfuse_command(), *run.cli_args()], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert not [p for p in run.out.iterdir() if p.name.startswith(".landfuse-tmp-")]
    assert (run.out / "map_classes.tif").is_file()


def _tmpfs(path: Path, size: str) -> Optional[str]:
    """Mount a small tmpfs at ``path``; the reason when this machine does not allow it."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return "mounting a small file system needs root"
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    return None if done.returncode == 0 else f"mount refused: {done.stderr.strip()}"


def test_a_disk_that_fills_up_mid_run_is_named_as_full(tmp_path: Path, weights_cache: Path) -> None:
    """A real full disk (a 30 MB tmpfs filled once the tiles run), not a patched write."""
    disk = tmp_path / "disk"
    reason = _tmpfs(disk, "30m")
    if reason:
        pytest.skip(f"{reason}; tests/unit/test_engine.py covers the message with a patched write")
    try:
        kit = Kit(tmp_path, weights_cache)
        run = _long_run(kit, size=2048)
        run.out = disk / "out"
        before, _ = snapshot(run)
        proc = _start(run, tmp_path)
        _wait_for(proc, "tiles")
        filler = disk / "filler"
        with filler.open("wb") as fh:  # fill the disk to the last byte
            try:
                while True:
                    fh.write(b"\0" * (1 << 20))
                    fh.flush()
            except OSError:
                pass
        _, rest = proc.communicate(timeout=300)
        assert proc.returncode == 2, rest
        assert "Traceback" not in rest and "ERROR 1:" not in rest, rest
        errors = [line for line in rest.splitlines() if "landfuse: error:" in line]
        assert len(errors) == 1 and "disk is full" in errors[0], rest
        assert "free some space" in errors[0]
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]
        assert sha256_tree(run.protected()) == before
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# --- maps that must come out right --------------------------------------------------------------


def _classes(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def test_a_stack_in_reversed_band_order_gives_the_same_map(
    tmp_path: Path, weights_cache: Path
) -> None:
    """B12...B01 described in the file: both surfaces reorder by description (one resolver)."""
    kit = Kit(tmp_path, weights_cache)
    straight = kit.landcover(name="straight")
    with rasterio.open(straight.inputs["s2"][0]) as src:
        data = src.read()
    reversed_s2 = kit.s2("s2_reversed.tif", data[::-1].copy(), descriptions=S2_NAMES[::-1])
    flipped = kit.landcover(
        inputs={**straight.inputs, "s2": [reversed_s2]}, name="reversed", weights=straight.weights
    )
    engine.run(straight.request())  # type: ignore[arg-type]
    engine.run(flipped.request())  # type: ignore[arg-type]
    expected = _classes(straight.out / "straight_classes.tif")
    assert np.array_equal(_classes(flipped.out / "reversed_classes.tif"), expected)
    report = json.loads((flipped.out / "reversed_report.json").read_text())
    matching = {entry["input"]: entry["band_matching"] for entry in report["inputs"]}
    assert matching == {"s2": "name", "s1": "name", "dem": "name"}
    cli_out = tmp_path / "cli"
    flipped.out, flipped.name = cli_out, "cli"
    done = subprocess.run(
        [*landfuse_command(), *flipped.cli_args()], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "by their position" not in done.stderr
    assert np.array_equal(_classes(cli_out / "cli_classes.tif"), expected)


def test_overwrite_with_fewer_outputs_removes_the_old_confidence(
    tmp_path: Path, weights_cache: Path
) -> None:
    kit = Kit(tmp_path, weights_cache)
    first = kit.landcover(outputs=("classes", "confidence"))
    engine.run(first.request())  # type: ignore[arg-type]
    assert (first.out / "map_confidence.tif").is_file()
    second = kit.landcover(
        inputs=first.inputs, weights=first.weights, overwrite=True, outputs=("classes",)
    )
    done = subprocess.run(
        [*landfuse_command(), *second.cli_args()], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    names = sorted(p.name for p in first.out.iterdir())
    assert "map_confidence.tif" not in names and "map_confidence.qml" not in names, names
    assert "map_classes.tif" in names
