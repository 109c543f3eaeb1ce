"""The Python that runs LandFuse's worker: which one, whether it has torch, which devices.

QGIS embeds Python; its ``sys.executable`` is often the QGIS binary itself, so the interpreter
for the worker process is looked up here. The probe runs in that interpreter (a subprocess), so
QGIS never imports torch just to fill the dock.
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from qgis.core import QgsSettings

SETTINGS_WORKER_PYTHON = "LandFuse/worker_python"
TORCH_REQUIREMENT = "torch"
#: The oldest torch LandFuse runs on (weights_only loading, autocast on the CPU).
MINIMUM_TORCH = (2, 0)
# The package as QGIS loaded it: its folder name is its import name (normally "landfuse").
PACKAGE_DIR = Path(__file__).absolute().parents[1]
PACKAGE_NAME = __name__.split(".")[0]
PLUGIN_PARENT = str(PACKAGE_DIR.parent)
WORKER_MODULE = f"{PACKAGE_NAME}.core.worker"


def default_python() -> str:
    """The Python interpreter QGIS itself runs on (the worker's default interpreter).

    Looked up under ``sys.prefix`` first: inside QGIS ``sys.executable`` is whatever
    ``python3`` comes first on ``PATH`` (a pyenv shim, a conda env…), which may lack QGIS's
    packages (numpy, GDAL, rasterio built for QGIS's Python).
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates: List[str] = []
    for prefix in dict.fromkeys((sys.exec_prefix, sys.prefix, sys.base_exec_prefix)):
        base = Path(prefix)
        candidates += [
            str(base / "bin" / f"python{version}"),
            str(base / "bin" / "python3"),
            str(base / "python.exe"),
            str(base / "python3.exe"),
        ]
    if Path(sys.executable).name.lower().startswith("python"):
        candidates.append(sys.executable)
    candidates.append(shutil.which("python3") or "")
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return "python3"


def worker_python() -> str:
    """The configured worker interpreter (Advanced ▸ Worker Python), else :func:`default_python`."""
    configured = QgsSettings().value(SETTINGS_WORKER_PYTHON, "", type=str)
    return configured or default_python()


def worker_environment() -> dict:
    """Environment for the worker: this plugin's parent folder first on ``PYTHONPATH`` so that
    ``python -m landfuse.core.worker`` imports this very copy of the plugin."""
    env = dict(os.environ)
    existing = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    # Only when the folder name is the import name (a plugin install); a development checkout
    # is found through the editable install instead.
    first = [PLUGIN_PARENT] if PACKAGE_DIR.name == PACKAGE_NAME else []
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([*first, *existing]))
    env["PYTHONUNBUFFERED"] = "1"
    # Two malloc arenas: the resident size then stays flat from run to run instead of swinging
    # by up to 7 % (scripts/bench_repeat_memory.py, docs/benchmarks.md); glibc reads it at start.
    env.setdefault("MALLOC_ARENA_MAX", "2")
    return env


_PROBE = """
import json, platform, shutil
info = {"python": platform.python_version(), "nvidia_smi": bool(shutil.which("nvidia-smi"))}
try:
    import torch
except Exception as error:
    info["torch"] = None
    info["error"] = f"{type(error).__name__}: {error}"
else:
    info["torch"] = torch.__version__
    info["cuda_build"] = torch.version.cuda
    info["cuda"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
        if torch.cuda.is_available() else []
    info["cuda_memory_gb"] = [
        round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)
        for i in range(torch.cuda.device_count())
    ] if torch.cuda.is_available() else []
    mps = getattr(torch.backends, "mps", None)
    info["mps"] = bool(mps and mps.is_available())
    try:
        from landfuse.core.device import resolve_target
        target = resolve_target("auto", "auto")
        info["target"] = [str(target.device), target.precision, target.reason]
    except Exception as error:
        info["target_error"] = f"{type(error).__name__}: {error}"
print(json.dumps(info))
"""


@dataclass
class PythonProbe:
    """What the worker interpreter offers."""

    python: str
    version: str = ""
    torch: Optional[str] = None
    cuda: List[str] = field(default_factory=list)
    mps: bool = False
    error: str = ""
    #: ``torch.version.cuda`` (None: a CPU build of torch).
    cuda_build: Optional[str] = None
    cuda_memory_gb: List[float] = field(default_factory=list)
    #: ``nvidia-smi`` is on the PATH: an NVIDIA driver is installed.
    nvidia_smi: bool = False
    #: What an automatic run would use: (device, precision, why).
    target: Optional[List[str]] = None

    @property
    def has_torch(self) -> bool:
        return bool(self.torch)

    def install_offer(self) -> str:
        """Why the dock should offer to install torch ("" when it should not): missing, too
        old for LandFuse, or a CPU build on a machine with an NVIDIA driver."""
        if not self.has_torch:
            return "Install PyTorch for LandFuse…"
        try:
            major, minor = (int(p) for p in str(self.torch).split("+")[0].split(".")[:2])
        except ValueError:
            major, minor = 0, 0
        if (major, minor) < MINIMUM_TORCH:
            return f"torch {self.torch} is too old: install PyTorch for LandFuse…"
        if self.nvidia_smi and not self.cuda_build:
            return "Install the CUDA build of PyTorch for LandFuse (an NVIDIA GPU is present)…"
        return ""

    def device_line(self) -> str:
        """Which device and precision an automatic run uses, and why, in one line."""
        if not self.has_torch:
            return "No device: PyTorch is missing for the worker."
        if self.target:
            device, precision, reason = [*self.target, "", "", ""][:3]
        else:
            device, precision, reason = ("cuda" if self.cuda else "cpu"), "", ""
        if device.startswith("cuda") and self.cuda:
            memory = f", {self.cuda_memory_gb[0]:g} GB" if self.cuda_memory_gb else ""
            where = f"CUDA: {self.cuda[0]}{memory}"
        elif device == "mps":
            where = "Apple MPS"
        else:
            why = (
                "an NVIDIA driver is installed but this torch is a CPU build: install the CUDA "
                "build of torch"
                if self.nvidia_smi and not self.cuda_build
                else "no CUDA build of torch installed"
                if not self.cuda_build
                else "torch finds no usable GPU"
            )
            where = f"CPU ({why})"
        text = f"Runs on {where}" + (f", {precision}" if precision else "")
        return text + (f": {reason}" if reason else "") + "."

    def device_labels(self) -> List[str]:
        """Device choices with what is present, e.g. "CUDA – not found"."""
        cuda = f"CUDA ({', '.join(self.cuda)})" if self.cuda else "CUDA – no NVIDIA GPU found"
        mps = "Apple MPS" if self.mps else "Apple MPS – not available"
        return ["Automatic (best present)", "CPU", cuda, mps]


def probe_command(python: str) -> List[str]:
    """The command line of the probe (run it with :func:`worker_environment`)."""
    return [python, "-c", _PROBE]


def parse_probe(python: str, returncode: int, stdout: str, stderr: str) -> PythonProbe:
    """Read the probe's output; a failed probe is reported in ``error``."""
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if returncode != 0 or not lines:
        return PythonProbe(python, error=(stderr or stdout).strip()[-500:] or "no output")
    try:
        data = json.loads(lines[-1])
    except ValueError:
        return PythonProbe(python, error=f"unreadable probe output: {lines[-1][:200]}")
    return PythonProbe(
        python,
        version=data.get("python", ""),
        torch=data.get("torch"),
        cuda=list(data.get("cuda") or []),
        mps=bool(data.get("mps")),
        error=data.get("error", ""),
        cuda_build=data.get("cuda_build"),
        cuda_memory_gb=list(data.get("cuda_memory_gb") or []),
        nvidia_smi=bool(data.get("nvidia_smi")),
        target=list(data["target"]) if data.get("target") else None,
    )


def probe_python(python: str, timeout: float = 60.0) -> PythonProbe:
    """Run the probe in ``python`` and wait; never raises (a failure is in ``error``)."""
    try:
        proc = subprocess.run(
            probe_command(python),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=worker_environment(),
        )
    except (OSError, subprocess.SubprocessError) as error:
        return PythonProbe(python, error=f"cannot run {python}: {error}")
    return parse_probe(python, proc.returncode, proc.stdout, proc.stderr)


def externally_managed(python: str) -> bool:
    """True when ``python`` refuses plain ``pip install`` (PEP 668, e.g. Debian's python3)."""
    if os.path.realpath(python) == os.path.realpath(sys.executable) or python == default_python():
        stdlib = sysconfig.get_paths().get("stdlib", "")
        return bool(stdlib) and os.path.exists(os.path.join(stdlib, "EXTERNALLY-MANAGED"))
    return False


def torch_install_help(python: str) -> str:
    """Exact commands that give the worker torch, for this interpreter."""
    quoted = shlex.quote(python) if os.name != "nt" else f'"{python}"'
    if os.name == "nt":
        return (
            "Open the OSGeo4W Shell (or the shell of your QGIS installation) and run:\n"
            f"  {quoted} -m pip install {TORCH_REQUIREMENT}\n"
            "then restart QGIS."
        )
    if externally_managed(python):
        env = "~/.local/share/landfuse/venv"
        return (
            f"This Python ({python}) is managed by the system, so install torch into a separate "
            "environment that still sees QGIS's packages:\n"
            f"  {quoted} -m venv --system-site-packages {env}\n"
            f"  {env}/bin/python -m pip install {TORCH_REQUIREMENT}\n"
            f"then set LandFuse ▸ Advanced ▸ Worker Python to {env}/bin/python."
        )
    return f"Run:\n  {quoted} -m pip install {TORCH_REQUIREMENT}\nthen restart QGIS."
