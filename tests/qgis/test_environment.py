"""Which Python runs the worker, what it offers, and how to get torch when it is missing."""

import sys

import pytest

from landfuse.processing import environment

pytestmark = pytest.mark.qgis


def test_default_python_is_qgis_own_not_the_first_on_path(monkeypatch, tmp_path):
    shim = tmp_path / "python3"
    shim.write_text("#!/bin/sh\n")
    shim.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(shim))  # what QGIS reports under pyenv/conda
    chosen = environment.default_python()
    assert chosen != str(shim)
    assert chosen.startswith(sys.exec_prefix) or chosen.startswith(sys.prefix)


def test_probe_of_this_python_finds_torch():
    probe = environment.probe_python(sys.executable)
    assert probe.has_torch and probe.error == ""
    assert probe.device_labels()[2].startswith("CUDA")


def test_probe_reports_a_python_without_torch(tmp_path):
    fake = tmp_path / "python"
    fake.write_text(
        '#!/bin/sh\necho \'{"python": "3.11", "torch": null, "error": "No module named torch"}\'\n'
    )
    fake.chmod(0o755)
    probe = environment.probe_python(str(fake))
    assert not probe.has_torch and "torch" in probe.error
    missing = environment.probe_python(str(tmp_path / "nothing"))
    assert not missing.has_torch and "cannot run" in missing.error


def test_install_help_names_this_interpreter():
    text = environment.torch_install_help("/opt/qgis/bin/python3")
    assert "/opt/qgis/bin/python3 -m pip install torch" in text
