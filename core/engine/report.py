"""The run report (the JSON written beside the rasters) and the result of a run."""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from typing import Any

from ...models.weights_info import is_demo_training
from ..device import device_name
from ..requests import request_to_dict
from ..tasks import get_task
from ..writers import AreaTally
from .plan import Plan


@dataclass(frozen=True)
class RunResult:
    """The outcome of a successful run.

    Attributes:
        task: ``"landcover"`` or ``"change"``.
        outputs: Final path of each product (``classes``, ``confidence``, ``change``,
            ``probability``) and of the ``report``.
        report: The run report (the same content as the JSON file).
    """

    task: str
    outputs: dict[str, str]
    report: dict[str, Any]

    @property
    def report_path(self) -> str:
        """Path of the JSON report."""
        return self.outputs["report"]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible summary (the worker's result line)."""
        keys = (
            "device",
            "device_name",
            "precision",
            "precision_reason",
            "throughput_tiles_per_s",
            "tiles",
            "timings_s",
            "warnings",
        )
        summary = {k: self.report.get(k) for k in keys}
        summary["areas"] = get_task(self.task).areas(self.report)
        summary["demo_weights"] = is_demo_training((self.report.get("model") or {}).get("training"))
        return {"task": self.task, "outputs": dict(self.outputs), "summary": summary}


def input_report(plan: Plan) -> list[dict[str, Any]]:
    """One entry per input file: where it came from, which bands, how they were matched."""
    entries = []
    for group in plan.groups:
        sources = group.stack.sources if group.stack is not None else ()
        warped = {s.path: s.warped for s in sources}
        for info, bands in zip(group.infos, group.bands):
            entries.append(
                {
                    "input": group.label,
                    "modality": group.modality.key,
                    "path": os.path.abspath(info.path),
                    "bands": list(bands),
                    "size": [info.width, info.height],
                    "crs": None if info.crs is None else info.crs.to_string(),
                    "pixel_size": [abs(info.transform.a), abs(info.transform.e)],
                    "resampled": bool(warped.get(info.path, False)),
                    "normalisation": group.modality.normalisation.mode,
                    "band_matching": group.matched,
                    "harmonised": (
                        None
                        if group.harmonisation is None
                        else {
                            "kind": group.harmonisation.kind,
                            "value": group.harmonisation.value,
                            "source": group.harmonisation.source,
                            "evidence": group.harmonisation.evidence,
                        }
                    ),
                }
            )
    return entries


def version() -> str:
    """The installed LandFuse version ("unknown" when run from a checkout)."""
    try:
        from importlib.metadata import version as _version

        return _version("landfuse")
    except Exception:
        return "unknown"


def build_report(
    plan: Plan, stats: Any, tally: AreaTally, started_at: str, total_seconds: float
) -> dict[str, Any]:
    """The run report: request, inputs, model, device, grid, tiles, timings, areas."""
    request = plan.request
    report: dict[str, Any] = {
        "landfuse_version": version(),
        "task": request.task,
        "started": started_at,
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "request": request_to_dict(request),
        "inputs": input_report(plan),
        "model": {
            "name": plan.spec.name,
            "title": plan.spec.title,
            "weights": os.path.abspath(request.weights),
            "weights_sha256": plan.weights_sha256,
            "training": plan.weights_metadata.get("training"),
            "classes": [
                {"value": c.value, "name": c.name, "color": list(c.color)}
                for c in plan.spec.classes
            ],
        },
        "device": str(plan.target.device),
        "precision": plan.target.precision,
        "precision_reason": plan.target.reason,
        "test_time_flips": plan.request.flips == "flips",
        "grid": plan.grid.describe(),
        "tiles": {
            "size": plan.layout.tile,
            "overlap": plan.layout.overlap,
            "network_input": [plan.layout.padded_height, plan.layout.padded_width],
            "total": stats.tiles_total,
            "computed": stats.tiles_computed,
            "skipped": stats.tiles_skipped,
            "batch": plan.request.batch,
            "final_batch": stats.final_batch_size,
            "batches": stats.batches,
        },
        "timings_s": {k: round(v, 3) for k, v in plan.timings.items()},
        "warnings": [w.to_dict() for w in plan.warnings],
        "memory": plan.memory,
    }
    report["timings_s"].update(
        {
            "tiles_loop": round(stats.seconds_total, 3),
            "network": round(stats.seconds_computing, 3),
            "waiting_for_data": round(stats.seconds_waiting_for_data, 3),
            "total": round(total_seconds, 3),
        }
    )
    report["device_name"] = device_name(plan.target.device)
    report["throughput_tiles_per_s"] = (
        round(stats.tiles_computed / stats.seconds_total, 2) if stats.seconds_total > 0 else None
    )
    summary = tally.summary([c.name for c in plan.spec.classes])
    report.update(plan.task.report_section(request, summary))
    return report
