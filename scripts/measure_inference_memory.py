"""Measure the memory a forward pass needs, per network configuration, on the CPU.

The engine's memory check (``core/memory.py``) estimates a run's peak before any pixel is read.
Its largest term for big tiles is the network's activations, which only a measurement can give:
this script builds each distinct network configuration of the registry (random weights), runs
forward passes in a fresh process per configuration, and reads the process's peak resident
memory (``ru_maxrss``) before and after each tile size:

    .venv/bin/python scripts/measure_inference_memory.py            # prints a table and JSON

For each configuration it prints the peak increase over the loaded network at tiles of 256 and
512 px (batch 1) and at 256 px with batch 2, and the bytes per input pixel and sample that
``core/memory.py`` uses: ``(peak at 512 px - baseline) / 512²``, which includes the fixed
scratch space and so overestimates slightly for larger tiles. Copy the figures into
``core/memory.py``'s ``ACTIVATION_BYTES_PER_PIXEL`` when a network changes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, resource, sys
import torch
torch.set_num_threads(1)
from landfuse.models.registry import get_model_spec
spec = get_model_spec(sys.argv[1])
net = spec.build().eval()
from landfuse.core.tasks import get_task
bands = [len(m.bands) for m in get_task(spec.task).input_modalities(spec)]

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

def forward(tile, batch):
    xs = [torch.rand(batch, b, tile, tile) for b in bands]
    with torch.inference_mode():
        net(*xs)

forward(64, 1)  # libraries, allocator pools and kernels loaded
base = peak()
out = {"baseline_rss": base}
for tile, batch in ((256, 1), (256, 2), (512, 1)):
    forward(tile, batch)
    out[f"{tile}x{batch}"] = peak() - base
print(json.dumps(out))
"""


def _configs() -> dict[str, str]:
    """One registry model per distinct (architecture, config without class/band counts)."""
    from landfuse.core.memory import config_key
    from landfuse.models.registry import list_model_specs

    seen: dict[str, str] = {}
    for spec in list_model_specs():
        seen.setdefault(config_key(spec.architecture, spec.model_config()), spec.name)
    return seen


def main() -> int:
    results = {}
    for key, name in _configs().items():
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, name], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            print(f"{key}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            return 1
        data = json.loads(proc.stdout.strip().splitlines()[-1])
        per_pixel = data["512x1"] / 512**2
        results[key] = {"model": name, **data, "bytes_per_pixel": round(per_pixel)}
        print(
            f"{key:40s} {name:32s} +{data['256x1'] / 2**20:7.0f} MiB @256  "
            f"+{data['256x2'] / 2**20:7.0f} MiB @256x2  +{data['512x1'] / 2**20:7.0f} MiB @512  "
            f"-> {per_pixel:6.0f} B/px"
        )
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
