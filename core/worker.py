"""The worker process: runs one request and streams JSON lines (DESIGN.md §3).

Usage::

    python -m landfuse.core.worker request.json        # or: ... < request.json, or "-"
    python -m landfuse.core.worker --cancel-file STOP request.json

The request is a JSON object as :func:`landfuse.core.requests.request_to_dict` writes it (with
``"task": "landcover"`` or ``"change"``). Standard output carries only protocol lines, one JSON
object per line, flushed at once:

``{"type": "started", "pid": 1234, "task": "landcover"}``
    first line, once the request is read and valid as a dataclass.
``{"type": "progress", "stage": "infer", "fraction": 0.42, "tiles_done": 21, "tiles_total": 50,
"eta_seconds": 12.3, "message": "21/50 tiles"}``
    after validation, after every batch, while finishing.
``{"type": "warning", "code": "bands_by_position", "message": "...", "input": "s2"}``
    before the tiles are computed, one per finding the user must read (bands matched by
    position, input values unlike the model's: :mod:`landfuse.core.run_warnings`).
``{"type": "result", "task": ..., "outputs": {"classes": path, ..., "report": path},
"summary": {...}}``
    last line of a successful run; exit status 0.
``{"type": "error", "error": "NoOverlapError", "message": "...", "exit_code": 2}``

A training request (``"kind": "train"``, :class:`landfuse.core.train_requests.TrainRequest`)
trains instead: progress lines carry ``"stage": "train"`` with the epoch, the loss and, after
each epoch, its validation ``metrics``; the result holds the weights and the assessment.

With ``--validate`` the worker checks the request as a run would and stops: its warnings, then
``{"type": "result", "task": ..., "validated": true, "summary": {...}}`` (nothing written).
    last line of a failed run; exit status 2 (a problem the user can fix), 3 (cancelled) or 1
    (unexpected: the traceback goes to standard error).

Logging goes to standard error. Cancelling: SIGTERM or SIGINT stop the run at once (the signal
interrupts the current batch; :mod:`landfuse.core.signals`) and remove its temporary files;
the ``--cancel-file`` appearing stops it before the next batch, which works on every platform.
SIGKILL cannot be caught: the next run in the same output folder removes the temporary folder
it left (POSIX).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from typing import Any, Callable, Optional, Sequence, TextIO

from .errors import EXIT_OK, RequestError, exit_code_for
from .signals import StopOnSignal

logger = logging.getLogger(__name__)

__all__ = ["Emitter", "main"]


class Emitter:
    """Writes protocol lines to a text stream (one JSON object per line, flushed)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, kind: str, **fields: Any) -> None:
        """Emit ``{"type": kind, **fields}``."""
        line = json.dumps({"type": kind, **fields}, default=str)
        self.stream.write(line + "\n")
        self.stream.flush()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m landfuse.core.worker",
        description="Run one LandFuse request and stream JSON progress lines on stdout.",
    )
    parser.add_argument(
        "request",
        nargs="?",
        default="-",
        help="request JSON file, or - (default) to read it from standard input",
    )
    parser.add_argument(
        "--cancel-file",
        help="stop the run (cleanly) before the next batch once this file exists",
    )
    parser.add_argument(
        "--validate",
        action="store_true",
        help="check the request as a run would (inputs, values, weights, memory) and stop: "
        "the warnings, then a result line with the check's summary",
    )
    parser.add_argument("--log-level", default="INFO", help="log level on standard error")
    return parser


def _read_request(source: str) -> dict[str, Any]:
    try:
        if source == "-":
            text = sys.stdin.read()
        else:
            with open(source, encoding="utf-8") as handle:
                text = handle.read()
    except OSError as error:
        raise RequestError(f"Cannot read the request {source}: {error}.") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise RequestError(f"The request is not valid JSON ({error}).") from None
    if not isinstance(data, dict):
        raise RequestError("The request must be a JSON object.")
    return data


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the worker.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status (0 ok, 2 bad input, 3 cancelled, 1 unexpected).
    """
    args = _parser().parse_args(argv)
    # Only protocol lines may reach stdout: anything else printed by a library goes to stderr.
    emit = Emitter(sys.stdout)
    sys.stdout = sys.stderr
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler = StopOnSignal()
    try:
        handler.install()
        from . import engine
        from .requests import request_from_dict

        cancel_file = args.cancel_file

        def cancelled() -> bool:
            return handler.cancelled or bool(cancel_file and os.path.exists(cancel_file))

        data = _read_request(args.request)
        if data.get("kind") == "train":
            return _train(data, emit, cancelled)
        request = request_from_dict(data)
        emit("started", pid=os.getpid(), task=request.task)

        if args.validate:
            summary = engine.validate(request, warn=lambda w: emit("warning", **w.to_dict()))
            emit("result", task=request.task, validated=True, summary=summary)
            return EXIT_OK
        result = engine.run(
            request,
            progress=lambda p: emit("progress", **p.to_dict()),
            cancel=cancelled,
            warn=lambda w: emit("warning", **w.to_dict()),
        )
        emit("result", **result.to_dict())
        return EXIT_OK
    except BaseException as error:  # every failure becomes one protocol line and an exit code
        code = exit_code_for(error)
        if isinstance(error, SystemExit):
            raise
        if code == 1:
            traceback.print_exc(file=sys.stderr)
        message = str(error) or type(error).__name__
        if isinstance(error, KeyboardInterrupt):
            message = "The run was cancelled; no output was written."
        emit("error", error=type(error).__name__, message=message, exit_code=code)
        return code
    finally:
        sys.stdout = emit.stream


def _train(data: dict[str, Any], emit: Emitter, cancelled: Callable[[], bool]) -> int:
    """A training session (``"kind": "train"``): progress per step and epoch, then the result
    with the weights and the assessment (:func:`landfuse.core.training.session.run_session`)."""
    from .train_requests import train_request_from_dict
    from .training.session import run_session

    request = train_request_from_dict(data)
    emit("started", pid=os.getpid(), task=request.task, mode="train")
    result = run_session(
        request,
        progress=lambda event: emit("progress", **event),
        cancel=cancelled,
        warn=lambda warning: emit("warning", **warning.to_dict()),
    )
    emit("result", **result)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
