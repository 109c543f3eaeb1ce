"""Benchmark the executors (issue 17): overhead of the job path, worker memory, scaling.

On generated scenes (``scripts/bench_engine.py``'s: 13 Sentinel-2 band files at 10/20/60 m,
Sentinel-1 on a geographic grid) and the published AMM-FuseNet (``amm_fusenet_s2_s1_hunan``,
random weights: speed does not depend on the values), fp32 on the CPU, each case a fresh
subprocess of this script:

* **overhead**: ``engine.run()`` in-process against ``local:1`` (a Dask ``LocalCluster`` of
  one worker) and ``process:1``, all with the same torch threads (all the cores), on the
  larger scene. The job path's extra time is split into the halo (tiles computed twice: the
  report's ``tiles_computed_with_halos`` against the in-process ``tiles.computed``) and the
  rest (starting the cluster and the worker, loading the weights there, writing and reading
  the parts);
* **worker memory**: the peak resident memory of the ``local:1`` worker (``ru_maxrss`` at the
  end of each job, in the report) on the scene and on one twice as wide and high (4x the area,
  two stripes, two jobs of the same rows): it must not grow with the scene;
* **scaling**: ``local:1`` with all the cores against ``local:N`` with one thread per worker,
  where N is the number of cores (a 2-core machine shows only what 2 workers give).

Byte-identity is not measured here: ``tests/unit/test_executors.py`` checks it. Results are
printed, and written to ``docs/benchmarks.md`` between ``<!-- executors:begin -->`` and
``<!-- executors:end -->`` unless ``--no-write``.

Usage::

    .venv/bin/python scripts/bench_executors.py                # ~12 min on 2 cores
    .venv/bin/python scripts/bench_executors.py --small 512 --large 1024 --no-write   # smoke
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_engine as base

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- executors:begin -->", "<!-- executors:end -->"
MODEL = "amm_fusenet_s2_s1_hunan"


def case(spec: dict[str, Any]) -> dict[str, Any]:
    """One run in this (fresh) process: wall time and the report's numbers."""
    import time

    from landfuse.core import engine

    request = base._request(
        MODEL, spec["scene"], spec["weights"], spec["out"], "fp32", spec["batch"]
    )
    from dataclasses import replace

    request = replace(request, executor=spec["executor"], threads=spec["threads"])
    started = time.perf_counter()
    result = engine.run(request)
    wall = time.perf_counter() - started
    report = result.report
    section = report.get("executor") or {}
    detail = section.get("jobs_detail") or []
    return {
        "executor": spec["executor"],
        "threads": spec["threads"],
        "side": spec["scene"]["side"],
        "wall_s": round(wall, 2),
        "tiles": report["tiles"]["total"],
        "tiles_computed": section.get("tiles_computed_with_halos", report["tiles"]["computed"]),
        "jobs": section.get("jobs", 0),
        "worker_peak_mib": max((j["worker_peak_rss_mb"] for j in detail), default=None),
        "job_peaks_mib": [j["worker_peak_rss_mb"] for j in detail],
        "driver_peak_mib": round(base.vm_hwm_mib(), 1),
    }


def run_case(spec: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--case", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"case {spec['executor']} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {result}", flush=True)
    return result


def render(rows: list[dict[str, Any]], meta: dict[str, Any], args: argparse.Namespace) -> str:
    by = {(r["executor"], r["side"], r["threads"]): r for r in rows}
    cores = meta["cores"]
    large, small = args.large, args.small
    inproc = by[("in-process", small, cores)]
    lines = [
        f"Measured {meta['date']} with `.venv/bin/python scripts/bench_executors.py` on "
        f"{meta['cpu']} ({cores} cores, {meta['memory_gib']} GiB), torch {meta['torch']}, "
        f"{MODEL} (published width, random weights), fp32, tile 256, batch {args.batch}; other "
        f"processes used {meta['load']} cores before the runs.",
        "",
        "| run | scene (px) | torch threads per process | jobs | tiles computed "
        "(of the scene's) | wall (s) | vs in-process |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = row["wall_s"] / inproc["wall_s"] if row["side"] == small else None
        lines.append(
            f"| {row['executor']} | {row['side']}² | {row['threads']} | {row['jobs'] or '–'} | "
            f"{row['tiles_computed']} ({row['tiles']}) | {row['wall_s']:.1f} | "
            + (f"{ratio:.3f}" if ratio else "–")
            + " |"
        )
    one = by[("local:1", small, cores)]
    pool = by[("process:1", small, cores)]
    halo = one["tiles_computed"] / inproc["tiles_computed"] - 1.0
    overhead = one["wall_s"] / inproc["wall_s"] - 1.0
    memory_small = one["worker_peak_mib"]
    memory_large = by[("local:1", large, cores)]["worker_peak_mib"]
    lines += [
        "",
        f"- **Overhead of the Dask path** (local:1 against in-process, same threads): "
        f"{100 * overhead:+.1f} % (target ≤ 10 %); of it, {100 * halo:.1f} % more tiles "
        "computed for the halos, the rest starting the cluster, loading the weights in the "
        "worker, and writing and reading the parts. The process pool (process:1): "
        f"{100 * (pool['wall_s'] / inproc['wall_s'] - 1.0):+.1f} %.",
        f"- **Worker peak memory**: {memory_small} MiB at {small}², {memory_large} MiB at "
        f"{large}² ({(large / small) ** 2:.0f}x the area, jobs of the same rows: "
        f"{100 * (memory_large / memory_small - 1):+.1f} %; target: independent of the scene). "
        "The peak after each job of that worker, in order: "
        + ", ".join(f"{p} MiB" for p in by[("local:1", large, cores)]["job_peaks_mib"])
        + " (a worker's peak is over every job it computed).",
    ]
    scaled = by.get((f"local:{cores}", small, 1))
    if scaled:
        lines.append(
            f"- **Scaling**: local:{cores} with one thread per worker took "
            f"{scaled['wall_s']:.1f} s against {one['wall_s']:.1f} s for local:1 with "
            f"{cores} threads ({one['wall_s'] / scaled['wall_s']:.2f}x). On {cores} cores "
            "this shows worker against thread parallelism, not a cluster's scaling."
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--small", type=int, default=2048, help="scene side (px) of every case")
    parser.add_argument(
        "--large", type=int, default=4096, help="side of the second scene of the memory case"
    )
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--no-write", action="store_true", help="only print the table")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(case(json.loads(args.case))))
        return 0
    cores = os.cpu_count() or 1
    meta = base.machine()
    meta["date"] = dt.date.today().isoformat()
    meta["load"] = round(base.wait_for_quiet(0.3, 300) or 0.0, 2)
    root = Path(tempfile.mkdtemp(prefix="landfuse-bench-executors-"))
    weights = base.make_weights(MODEL, root)
    scenes = {side: base.make_scene(MODEL, side, root) for side in (args.small, args.large)}
    plan = [
        ("in-process", args.small, cores),
        ("local:1", args.small, cores),
        ("process:1", args.small, cores),
    ]
    if cores > 1:
        plan.append((f"local:{cores}", args.small, 1))
    plan.append(("local:1", args.large, cores))
    rows = []
    for executor, side, threads in plan:
        out = root / f"out-{executor.replace(':', '_')}-{side}-{threads}"
        spec = {"executor": executor, "threads": threads, "scene": scenes[side],
                "weights": weights, "out": str(out), "batch": args.batch}  # fmt: skip
        rows.append(run_case(spec))
    table = render(rows, meta, args)
    print(table)
    if not args.no_write:
        text = args.output.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            text = head + BEGIN + "\n" + table + "\n" + END + rest.split(END, 1)[1]
        else:
            text += f"\n{BEGIN}\n{table}\n{END}\n"
        args.output.write_text(text)
        print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
