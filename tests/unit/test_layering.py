"""DESIGN.md §1: dependencies point down only. The rule is checked here, not trusted."""

import ast
import sys
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "landfuse"
SKIP_DIRS = {".venv", "build", "dist", "tests", "scripts", ".git", "__pycache__", ".ci"}


def python_files(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*.py")):
        if not SKIP_DIRS.intersection(path.relative_to(ROOT).parts):
            yield path


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([PACKAGE, *parts])


def imported_modules(path: Path) -> List[Tuple[int, str]]:
    """Every module ``path`` imports, relative imports resolved to absolute names."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from qgis.utils import iface` and `from qgis import gui`
            found.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names)
    return found


def violations(folder: Path, forbidden) -> List[str]:
    bad = []
    for path in python_files(folder):
        for lineno, name in imported_modules(path):
            reason = forbidden(path, name)
            if reason:
                bad.append(f"{path.relative_to(ROOT)}:{lineno} imports {name}: {reason}")
    return bad


def engine_rule(_path: Path, name: str) -> str:
    top = name.split(".")[0]
    if top in {"qgis", "PyQt5", "PyQt6", "sip", "processing"}:
        return "core/ and models/ must stay QGIS-free (DESIGN.md §1)"
    if name.startswith((f"{PACKAGE}.ui", f"{PACKAGE}.processing", f"{PACKAGE}.plugin")):
        return "core/ and models/ must not depend on the QGIS layers above them"
    return ""


def models_rule(path: Path, name: str) -> str:
    reason = engine_rule(path, name)
    if reason:
        return reason
    top = name.split(".")[0]
    if name.startswith(f"{PACKAGE}.") and not name.startswith(f"{PACKAGE}.models"):
        return "models/ may import only torch and itself"
    if top not in {"torch", PACKAGE, "__future__"} and top not in sys.stdlib_module_names:
        return "models/ may import only torch and the standard library"
    return ""


def gui_rule(path: Path, name: str) -> str:
    rel = path.relative_to(ROOT)
    if rel.parts[0] == "ui" or rel.as_posix() == "plugin.py":
        return ""
    if name == "qgis.gui" or name.startswith("qgis.gui.") or name.endswith(".iface"):
        return "only ui/ and plugin.py may use qgis.gui or iface"
    return ""


def test_core_imports_no_qgis():
    assert violations(ROOT / "core", engine_rule) == []


def test_models_import_torch_only():
    assert violations(ROOT / "models", models_rule) == []


def test_only_ui_and_plugin_use_qgis_gui_or_iface():
    assert violations(ROOT, gui_rule) == []


def test_the_checks_catch_violations(tmp_path, monkeypatch):
    """The rules above must be able to fail: feed them files that break each one."""
    fake = tmp_path / "core"
    fake.mkdir()
    (fake / "bad.py").write_text("import numpy\nfrom qgis.core import QgsProject\n")
    (fake / "worse.py").write_text("from ..ui import dock\n")
    models = tmp_path / "models"
    models.mkdir()
    (models / "net.py").write_text("import torch\nimport numpy as np\nfrom ..core import tiling\n")
    proc = tmp_path / "processing"
    proc.mkdir()
    (proc / "alg.py").write_text("from qgis.utils import iface\nfrom qgis import gui\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    core_bad = violations(fake, engine_rule)
    assert any("qgis.core" in v for v in core_bad)
    assert any("landfuse.ui" in v for v in core_bad)
    assert not any("numpy" in v for v in core_bad)
    models_bad = violations(models, models_rule)
    assert any("numpy" in v for v in models_bad)
    assert any("landfuse.core" in v for v in models_bad)
    assert not any(" torch:" in v for v in models_bad)
    gui_bad = violations(tmp_path, gui_rule)
    assert any("qgis.utils.iface" in v for v in gui_bad)
    assert any("qgis.gui" in v for v in gui_bad)


def test_package_entry_is_lazy():
    """``__init__.py`` defines classFactory only and imports nothing at module level."""
    tree = ast.parse((ROOT / "__init__.py").read_text(encoding="utf-8"))
    top_level_imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert top_level_imports == []
    assert functions == ["classFactory"]


def test_the_qgis_side_imports_without_torch(tmp_path):
    """The plugin, the dock and the Processing provider load in a QGIS whose Python has no
    torch (the dock then says how to get it): nothing they import at module level needs it."""
    import subprocess

    (tmp_path / "torch.py").write_text("raise ImportError('torch is blocked in this test')\n")
    (tmp_path / "landfuse").symlink_to(ROOT)
    code = (
        "import sys; import landfuse.plugin, landfuse.ui.dock, landfuse.processing.algorithms;"
        "import landfuse.processing.provider; assert 'torch' not in sys.modules or "
        "sys.modules['torch'] is None"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "QT_QPA_PLATFORM": "offscreen"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
