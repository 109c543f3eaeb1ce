"""Where a run's tiles are computed: the ``executor`` option, parsed and checked.

=====================  ==========================================================================
``in-process``         the calling process, tile after tile (the default)
``process:N``          a pool of N local processes (standard library; no Dask needed)
``local:N``            a Dask ``LocalCluster`` of N worker processes on this machine
``local``              the same with one worker per GPU (CUDA), else half the cores
``dask://HOST:PORT``   a running Dask scheduler (``tcp://`` and ``tls://`` addresses too)
=====================  ==========================================================================

Every executor but ``in-process`` splits the run into jobs (:mod:`landfuse.core.engine.jobs`)
whose parts are put together into the same outputs, byte for byte. Dask is optional:
:func:`dask_missing_message` says how to get it. Standard library only, so that QGIS's own
Python checks an address without torch; ``python -m landfuse.core.executor_spec ADDRESS``
prints what a scheduler answers as JSON (the dock's check runs it in the worker Python).
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Optional

from .errors import RequestError

IN_PROCESS = "in-process"
#: The pins of requirements/distributed.txt, for the message that says how to install Dask.
DASK_PINS = '"dask==2024.12.1" "distributed==2024.12.1" "numpy<1.25"'
EXAMPLES = "in-process, process:4, local:4, local, dask://scheduler.example.org:8786"

_COUNTED = re.compile(r"^(process|processes|local):(\d+)$")
_ADDRESS = re.compile(r"^(dask|tcp|tls)://([^\s/:]+)(?::(\d+))?/?$")


@dataclass(frozen=True)
class ExecutorSpec:
    """A parsed executor.

    Attributes:
        kind: ``in-process``, ``processes``, ``dask-local`` or ``dask``.
        workers: Worker processes asked for (0: decided by the machine).
        address: The scheduler's address (``tcp://host:port``) for ``dask``.
    """

    kind: str
    workers: int = 0
    address: str = ""

    @property
    def uses_jobs(self) -> bool:
        """Whether the run is split into jobs (every executor but in-process)."""
        return self.kind != IN_PROCESS

    @property
    def needs_dask(self) -> bool:
        return self.kind in ("dask", "dask-local")

    def describe(self) -> str:
        if self.kind == "processes":
            return f"a pool of {self.workers} local processes"
        if self.kind == "dask-local":
            count = f"{self.workers} workers" if self.workers else "one worker per GPU or core"
            return f"a Dask LocalCluster ({count})"
        if self.kind == "dask":
            return f"the Dask scheduler at {self.address}"
        return "this process"


def parse_executor(text: Optional[str]) -> ExecutorSpec:
    """Parse an ``executor`` option (see the module's table).

    Raises:
        RequestError: for anything else, with the accepted forms.
    """
    value = (text or "").strip()
    if value.lower() in ("", IN_PROCESS, "inprocess", "none"):
        return ExecutorSpec(IN_PROCESS)
    if value.lower() == "local":
        return ExecutorSpec("dask-local", 0)
    counted = _COUNTED.match(value.lower())
    if counted:
        kind, number = counted.groups()
        workers = int(number)
        if workers < 1:
            raise RequestError(
                f"The executor {value!r} needs at least one worker ({EXAMPLES}; dask://HOST:PORT "
                "for a running scheduler)."
            )
        return ExecutorSpec("dask-local" if kind == "local" else "processes", workers)
    address = _ADDRESS.match(value)
    if address:
        scheme, host, port = address.groups()
        scheme = "tcp" if scheme == "dask" else scheme
        return ExecutorSpec("dask", 0, f"{scheme}://{host}:{port or 8786}")
    raise RequestError(
        f"The executor {value!r} is not understood; give one of: {EXAMPLES} "
        "(in-process: this process; process:N: N local processes; local:N: a Dask cluster of "
        "N workers on this machine; dask://HOST:PORT: a running Dask scheduler)."
    )


def dask_available() -> bool:
    """Whether Dask distributed imports in this Python."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


def dask_missing_message(python: str = "") -> str:
    """What to do when Dask is missing in the Python that runs the network."""
    python = python or sys.executable
    return (
        f"Dask distributed is not installed in {python}, which runs the network; install it "
        f"with: {python} -m pip install {DASK_PINS} (or use the executor 'process:N', which "
        "needs nothing more)."
    )


def check_scheduler(address: str, timeout: float = 10.0) -> dict[str, Any]:
    """Connect to a Dask scheduler and say how many workers (and threads, GPUs) it has.

    Returns:
        ``{"ok", "address", "workers", "threads", "memory_gb", "message"}``; ``ok`` False with
        the reason when Dask is missing or the scheduler does not answer.
    """
    spec = parse_executor(address)
    if spec.kind != "dask":
        return {
            "ok": False,
            "address": address,
            "workers": 0,
            "threads": 0,
            "message": f"{address!r} is not a scheduler address (dask://HOST:PORT).",
        }
    if not dask_available():
        return {
            "ok": False,
            "address": spec.address,
            "workers": 0,
            "threads": 0,
            "message": dask_missing_message(),
        }
    from distributed import Client

    try:
        with Client(spec.address, timeout=f"{timeout}s") as client:
            workers = client.scheduler_info().get("workers", {})
    except (OSError, TimeoutError) as error:
        return {
            "ok": False,
            "address": spec.address,
            "workers": 0,
            "threads": 0,
            "message": f"The scheduler at {spec.address} does not answer ({error}).",
        }
    threads = sum(int(w.get("nthreads", 0)) for w in workers.values())
    memory = sum(int(w.get("memory_limit", 0) or 0) for w in workers.values()) / 1e9
    return {
        "ok": True,
        "address": spec.address,
        "workers": len(workers),
        "threads": threads,
        "memory_gb": round(memory, 1),
        "message": f"{spec.address} answers: {len(workers)} worker(s), {threads} thread(s), "
        f"{memory:.1f} GB.",
    }


def check_local(spec: ExecutorSpec) -> dict[str, Any]:
    """What this machine offers a local executor: its cores, and Dask where it is needed."""
    cores = os.cpu_count() or 1
    workers = spec.workers or default_local_workers()
    answer = {"ok": True, "address": spec.kind, "workers": workers, "threads": cores}
    if spec.needs_dask and not dask_available():
        return {**answer, "ok": False, "message": dask_missing_message()}
    if spec.kind == "in-process":
        return {**answer, "workers": 1, "message": "Tiles are computed in the worker process."}
    share = max(1, cores // workers)
    return {
        **answer,
        "message": f"{spec.describe()} on this machine's {cores} cores: {share} thread(s) each"
        + (" (more workers than cores: slower, not faster)." if workers > cores else "."),
    }


def default_local_workers(gpus: int = 0) -> int:
    """Workers of ``local`` without a number: one per GPU, else half the cores (at least 1)."""
    if gpus > 0:
        return gpus
    return max(1, (os.cpu_count() or 2) // 2)


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m landfuse.core.executor_spec ADDRESS``: the scheduler's answer as JSON."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m landfuse.core.executor_spec dask://HOST:PORT\n")
        return 2
    try:
        spec = parse_executor(args[0])
        answer = check_scheduler(args[0]) if spec.kind == "dask" else check_local(spec)
    except RequestError as error:
        answer = {
            "ok": False,
            "address": args[0],
            "workers": 0,
            "threads": 0,
            "message": str(error),
        }
    sys.stdout.write(json.dumps(answer) + "\n")
    return 0 if answer["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
