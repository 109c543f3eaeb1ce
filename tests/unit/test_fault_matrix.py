"""Issue 11's bad-input and fault matrix on the engine API and the command line.

Every case of ``tests/faultcases.py`` that applies to the surface is run; each asserts the error
class (or the named warning when the run may go on), a message that says what to do, the exit
code on the command line, that no traceback is shown, that nothing is left in the output folder
or beside the inputs, and that the inputs and weights are byte-identical afterwards (sha256).
The same cases through ``processing.run`` are in ``tests/qgis/test_processing_faults.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from faultcases import (
    EXIT_INPUT,
    WARNING_TEXT,
    Case,
    Kit,
    cases_for,
    check_untouched,
    landfuse_command,
    sha256_tree,
    snapshot,
)

from landfuse.core import engine
from landfuse.core import errors as core_errors
from landfuse.models import errors as model_errors
from landfuse.models.errors import LandFuseError

pytestmark = [pytest.mark.unit, pytest.mark.slow]


def _error_class(name: str) -> type[BaseException]:
    for module in (core_errors, model_errors):
        if hasattr(module, name):
            return getattr(module, name)
    raise AssertionError(f"unknown error class {name}")


@pytest.fixture(scope="session")
def weights_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fault_weights")


def _ids(case: Case) -> str:
    return case.id


@pytest.mark.parametrize("case", cases_for("engine"), ids=_ids)
def test_engine_api(case: Case, tmp_path: Path, weights_cache: Path) -> None:
    kit = Kit(tmp_path, weights_cache)
    run = case.build(kit)
    before, existed = snapshot(run)
    seen: list = []
    if case.error:
        with pytest.raises(LandFuseError) as info:
            engine.run(run.request(), warn=seen.append)  # type: ignore[arg-type]
        assert isinstance(info.value, _error_class(case.error)), repr(info.value)
        assert re.search(case.advice, str(info.value), re.S), str(info.value)
        check_untouched(run, before, existed)
    else:
        result = engine.run(run.request(), warn=seen.append)  # type: ignore[arg-type]
        assert case.warning in {w.code for w in seen}
        assert case.warning in {w["code"] for w in result.report["warnings"]}
        assert sha256_tree(run.protected()) == before
    assert not (tmp_path / "inputs" / "PAYLOAD_RAN").exists()
    assert not (tmp_path / "weights" / "PAYLOAD_RAN").exists()


@pytest.mark.parametrize("case", cases_for("cli"), ids=_ids)
def test_command_line(case: Case, tmp_path: Path, weights_cache: Path) -> None:
    kit = Kit(tmp_path, weights_cache)
    run = case.build(kit)
    before, existed = snapshot(run)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*landfuse_command(), *run.cli_args(), "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    if case.error:
        assert proc.returncode == EXIT_INPUT, proc.stderr[-3000:]
        error_lines = [line for line in proc.stderr.splitlines() if "landfuse: error:" in line]
        assert len(error_lines) == 1, proc.stderr[-3000:]
        assert re.search(case.advice, proc.stderr, re.S), proc.stderr[-3000:]
        assert "ERROR 1:" not in proc.stderr  # GDAL's own lines stay in the log
        check_untouched(run, before, existed)
    else:
        assert proc.returncode == 0, proc.stderr[-3000:]
        warnings = [line for line in proc.stderr.splitlines() if "landfuse: warning:" in line]
        assert any(re.search(WARNING_TEXT[case.warning], w) for w in warnings), proc.stderr
        summary = json.loads(proc.stdout)["summary"]
        assert case.warning in {w["code"] for w in summary["warnings"]}
        assert sha256_tree(run.protected()) == before
    assert not (tmp_path / "weights" / "PAYLOAD_RAN").exists()
