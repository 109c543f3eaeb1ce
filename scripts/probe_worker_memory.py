"""Peak memory of one pool process, job after job, at two scene sizes (issue 17).

The lite change network (``amfnet_lite_s2``, random weights) on ``bench_engine.py``'s generated
Sentinel-2 pairs of 2048² and 4096² px, through ``--executor process:1`` with 4 rows of tiles
per job and one torch thread; prints each job's peak resident memory of the worker (the
report's ``worker_peak_rss_mb``). It writes new scenes each run. Quick (a few minutes on 2
cores); what it found is in docs/benchmarks.md §9 (the worker's memory on fresh scenes).

Usage::

    .venv/bin/python scripts/probe_worker_memory.py
    MALLOC_ARENA_MAX=2 .venv/bin/python scripts/probe_worker_memory.py   # glibc's arenas capped
"""

import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_engine as base

MODEL = "amfnet_lite_s2"


def main() -> int:
    from landfuse.core import engine

    root = Path(tempfile.mkdtemp(prefix="landfuse-probe-memory-"))
    weights = base.make_weights(MODEL, root)
    for side in (2048, 4096):
        scene = base.make_scene(MODEL, side, root)
        request = base._request(MODEL, scene, weights, str(root / f"out{side}"), "fp32", 4)
        request = replace(request, executor="process:1", threads=1, job_rows=4, tile=256)
        report = engine.run(request).report
        peaks = [j["worker_peak_rss_mb"] for j in report["executor"]["jobs_detail"]]
        print(f"{side}² px: {len(peaks)} jobs, worker peak after each (MiB): {peaks}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
