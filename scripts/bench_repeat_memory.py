"""Does memory stay flat when one process maps the same scene again and again? (issue 11)

QGIS keeps its Python process for a whole session, and Processing runs the engine inside it, so
a run that leaves memory behind grows QGIS a little with every map. This script runs the same
land-cover prediction ``--runs`` times (10 by default) in one process and prints the process's
resident memory (``VmRSS``) after each run, and how far its high-water mark (``VmHWM``) rose
above the memory held before the first run, next to the engine's own estimate of a run's peak
(``report["memory"]``, core/memory.py): the ratio shows whether the estimate is on the safe
side (below 1) or not.

The scene: the real TerraMind Sentinel-2 L1C, Sentinel-1 RTC and DEM sample ``282D_485L_3_3``
of ``../shared/realdata`` (264 px a side), enlarged to ``--scene`` px through VRTs (no pixels
are stored); the weights: the demo land-cover weights (``amm_fusenet_lite_s2_s1_dem``).

By default the script calls ``engine.keep_memory_flat()`` first, as the Processing algorithms
do in QGIS; ``--no-tuning`` leaves glibc's malloc as it is (the command line's case, one run
per process). ``--arena-max N`` runs the measurement in a child process started with
``MALLOC_ARENA_MAX=N`` (glibc reads it only at start): the dock's worker is started so
(``MALLOC_ARENA_MAX=2``); the command line and QGIS itself are not.

The goal: after the first two runs (allocator pools, GDAL's cache and torch's kernels settle
there), the resident memory after each later run stays within a 5 % band (largest over
smallest of runs 3 to N), so that it neither grows nor swings. The script prints PASS or FAIL
and exits with 1 on FAIL; it also prints the change from run 3 to the last run (a leak shows
as a steady rise there)::

    .venv/bin/python scripts/bench_repeat_memory.py                # 10 runs, 1536 px scene
    .venv/bin/python scripts/bench_repeat_memory.py --runs 4 --scene 1024 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "realdata" / "terramind_examples"
TILE_ID = "282D_485L_3_3"
WEIGHTS = REPO / "demo" / "weights" / "landcover_demo.pt"
TOLERANCE = 0.05


def _status(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _enlarged(folder: Path, modality: str, size: int) -> Path:
    source = SAMPLE / modality / f"{TILE_ID}.tif"
    if not source.is_file():
        raise SystemExit(f"real sample not found: {source} (see ../shared/realdata)")
    vrt = folder / f"{modality}.vrt"
    subprocess.run(
        ["gdal_translate", "-q", "-of", "VRT", "-outsize", str(size), str(size), str(source),
         str(vrt)],
        check=True,
    )  # fmt: skip
    return vrt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--scene", type=int, default=1536, help="scene edge in pixels")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--arena-max", type=int, default=0, help="MALLOC_ARENA_MAX for a child")
    parser.add_argument(
        "--no-tuning",
        action="store_true",
        help="leave glibc's malloc as it is (default: engine.keep_memory_flat(), as Processing)",
    )
    args = parser.parse_args(argv)
    if args.arena_max > 0 and os.environ.get("MALLOC_ARENA_MAX") != str(args.arena_max):
        env = {**os.environ, "MALLOC_ARENA_MAX": str(args.arena_max)}
        return subprocess.call([sys.executable, __file__, *(argv or sys.argv[1:])], env=env)
    print(f"MALLOC_ARENA_MAX={os.environ.get('MALLOC_ARENA_MAX', '(glibc default)')}")

    import torch

    from landfuse.core import engine
    from landfuse.core.memory import format_bytes
    from landfuse.core.requests import LandCoverRequest, ModalityInput, RasterSource

    torch.set_num_threads(args.threads)
    if not args.no_tuning:
        engine.keep_memory_flat()
    print("malloc:", "glibc default" if args.no_tuning else "engine.keep_memory_flat()")
    with tempfile.TemporaryDirectory(prefix="landfuse-repeat-") as tmp:
        folder = Path(tmp)
        inputs = tuple(
            ModalityInput(key, (RasterSource(str(_enlarged(folder, modality, args.scene))),))
            for key, modality in (("s2", "S2L1C"), ("s1", "S1RTC"), ("dem", "DEM"))
        )
        request = LandCoverRequest(
            inputs=inputs,
            model="amm_fusenet_lite_s2_s1_dem",
            weights=str(WEIGHTS),
            output_dir=str(folder / "out"),
            name="repeat",
            overwrite=True,
            device="cpu",
        )
        baseline = _status("VmRSS")
        print(
            f"{args.runs} runs of a {args.scene} px scene, {args.threads} torch thread(s); "
            f"{format_bytes(baseline)} resident before the first run"
        )
        print(f"{'run':>4} {'seconds':>8} {'VmRSS':>10} {'vs run 2':>9} {'peak rise':>10} "
              f"{'estimate':>10} {'rise/estimate':>13}")  # fmt: skip
        rss: list[int] = []
        for index in range(1, args.runs + 1):
            started = time.perf_counter()
            result = engine.run(request, warn=lambda w: None)
            seconds = time.perf_counter() - started
            rss.append(_status("VmRSS"))
            rise = _status("VmHWM") - baseline
            estimate = int(result.report.get("memory", {}).get("estimate_host_bytes") or 0)
            versus = f"{(rss[-1] / rss[1] - 1) * 100:+8.1f}%" if index >= 2 else f"{'':>9}"
            ratio = f"{rise / estimate:13.2f}" if estimate else f"{'-':>13}"
            print(
                f"{index:>4} {seconds:8.1f} {format_bytes(rss[-1]):>10} {versus} "
                f"{format_bytes(rise):>10} {format_bytes(estimate):>10} {ratio}"
            )
        later = rss[2:] or rss[-1:]
        worst = max(later) / min(later) - 1
        verdict = "PASS" if worst <= TOLERANCE else "FAIL"
        print(
            f"{verdict}: after the first two runs, resident memory stays in a band of "
            f"{worst * 100:.1f} % (goal: {TOLERANCE * 100:.0f} %); run 3 to run {len(rss)}: "
            f"{(rss[-1] / later[0] - 1) * 100:+.1f} %"
        )
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"rss_after_each_run": rss, "band": worst, "peak_kb": peak_kb}))
        return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
