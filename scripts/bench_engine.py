"""Benchmark the engine against the raw network, in fp32 and reduced precision (issue 4 item 10).

For each benchmarked network (AMM-FuseNet ``amm_fusenet_s2_s1_hunan``, ResNet-50 at output
stride 16, and AMFNet ``amfnet_s2``, ResNet-34, both as published, with random weights written
by ``models.weights.save_weights``: speed does not depend on the values) one run measures:

* **raw**: the network alone on tiles already in memory, through the engine's own
  ``runner.BatchPredictor`` (same tile, batch, device, precision, channels-last layout,
  ``torch.inference_mode``, softmax and copy back to numpy); measured right before and right
  after each end-to-end run, so that a change of machine load shows up;
* **end-to-end**: ``engine.run()`` on a generated scene of ``--scene`` pixels a side, from the
  request to the published Cloud-Optimised GeoTIFFs and report: validation, weights loading,
  reading 13 Sentinel-2 band files at 10/20/60 m (the 20 and 60 m bands resampled onto the
  10 m grid), Sentinel-1 on a geographic grid (warped across CRSs), normalisation, blending,
  streaming writes, COG and overviews;
* **peak memory**: the process's resident high-water mark (``VmHWM``: GDAL, torch and numpy
  buffers included) of the end-to-end runs at ``--scene`` and at half that side (a quarter of
  the area), each in a fresh process;
* **bf16 agreement**: the share of pixels given the same class in bf16 as in fp32 by the same
  weights on the real samples of ``../shared/realdata`` (TerraMind S2 L1C + S1 for
  AMM-FuseNet, the OSCD Rennes pair for AMFNet). Random weights give degenerate maps there, so
  by default each network is first trained briefly on those samples (``--train-steps``).

Every measurement runs in a fresh subprocess of this script, so numbers are independent; the
parent also measures how much CPU *other* processes used during each case (``/proc/stat``),
because the machine may be shared. Ratios (end-to-end / raw, bf16 / fp32, memory growth) come
from one run. The table is printed and written to ``docs/benchmarks.md`` (``--output``) between
the markers ``<!-- bench:begin -->`` and ``<!-- bench:end -->``, so that the prose around it is
kept.

Usage::

    .venv/bin/python scripts/bench_engine.py                 # full run (~20-25 min, 2 cores)
    .venv/bin/python scripts/bench_engine.py --quick         # smoke run (~3-4 min)
    .venv/bin/python scripts/bench_engine.py --scene 2048 --models amfnet_s2 --no-write
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"
DEFAULT_OUTPUT = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
RESULT_PREFIX = "BENCH-RESULT "

MODELS = ("amm_fusenet_s2_s1_hunan", "amfnet_s2")
#: Default end-to-end scene side per network, so that each case takes a few minutes on two
#: cores (AMFNet is about 6x cheaper per tile than ResNet-50 AMM-FuseNet).
DEFAULT_SCENES = {"amm_fusenet_s2_s1_hunan": 4096, "amfnet_s2": 8192}
QUICK_SCENE = 1024
S2_BANDS = (
    "B01",
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B09",
    "B10",
    "B11",
    "B12",
)
#: Native pixel size of each Sentinel-2 band (m).
S2_RES = {
    "B01": 60,
    "B02": 10,
    "B03": 10,
    "B04": 10,
    "B05": 20,
    "B06": 20,
    "B07": 20,
    "B08": 10,
    "B8A": 20,
    "B09": 60,
    "B10": 60,
    "B11": 20,
    "B12": 20,
}
#: Scene origin: UTM 31N, near Rennes (48.7° N), like the OSCD sample.
UTM_EPSG = 32630
ORIGIN = (560_000.0, 5_400_000.0)
#: Size of the landscape "parcels" (m) the generated scenes are made of.
PARCEL_M = 160.0
#: Sentinel-1 pixel on its geographic grid (degrees, about 10 m x 7 m at 48.7° N).
S1_DEG = 9.0e-5


# --- machine and load ------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """CPU model, cores, flags that matter, torch / GDAL versions."""
    import rasterio
    import torch

    model, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    wanted = ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "gpu": gpu,
        "cpu": model,
        "cores": os.cpu_count(),
        "flags": [f for f in wanted if f in flags],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gdal": rasterio.__gdal_version__,
        "rasterio": rasterio.__version__,
        "python": platform.python_version(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def _cpu_busy_seconds() -> Optional[float]:
    """Seconds of CPU time used by all processes since boot (``/proc/stat``), or None."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[:7])
    steal = int(fields[7]) if len(fields) > 7 else 0
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def other_load(seconds: float = 2.0) -> Optional[float]:
    """CPU cores used by other processes, averaged over ``seconds`` (this one idles)."""
    before = _cpu_busy_seconds()
    time.sleep(seconds)
    after = _cpu_busy_seconds()
    if before is None or after is None:
        return None
    return (after - before) / seconds


def wait_for_quiet(limit: float, max_wait: float) -> Optional[float]:
    """Wait (at most ``max_wait`` s) until other processes use under ``limit`` cores."""
    deadline = time.monotonic() + max_wait
    load = other_load()
    while load is not None and load > limit and time.monotonic() < deadline:
        print(f"  (machine busy: other processes use {load:.2f} cores; waiting)", flush=True)
        time.sleep(20)
        load = other_load()
    return load


def vm_hwm_mib() -> float:
    """Peak resident memory of this process (MiB): ``VmHWM``, else ``ru_maxrss``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --- generated scenes ------------------------------------------------------------------------


def _write(
    path: Path, data: np.ndarray, transform: Any, crs: str, nodata: Any, names: Sequence[str]
):
    import rasterio

    profile = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": str(data.dtype),
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "predictor": 2,
        "zlevel": 1,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for index, name in enumerate(names, start=1):
            dst.set_band_description(index, name)


def _parcels(rng: np.random.Generator, side_m: float, classes: int) -> np.ndarray:
    cells = math.ceil(side_m / PARCEL_M) + 1
    return rng.integers(0, classes, size=(cells, cells))


def _sample(parcels: np.ndarray, count: int, res: float) -> np.ndarray:
    """Parcel class under the centre of each of ``count`` x ``count`` pixels of size ``res``."""
    index = ((np.arange(count) + 0.5) * res / PARCEL_M).astype(int)
    index = np.minimum(index, parcels.shape[0] - 1)
    return parcels[np.ix_(index, index)]


def write_s2_bands(
    folder: Path, side: int, seed: int, changed: Optional[np.ndarray] = None
) -> list[str]:
    """Thirteen single-band uint16 GeoTIFFs at their native 10/20/60 m, like an L1C tile."""
    from rasterio.transform import from_origin

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    parcels = _parcels(np.random.default_rng(1000), side * 10.0, 7)
    if changed is not None:
        parcels = np.where(changed, (parcels + 3) % 7, parcels)
    signatures = rng.uniform(300, 4000, size=(len(S2_BANDS), 7))
    paths = []
    for index, band in enumerate(S2_BANDS):
        res = S2_RES[band]
        count = math.ceil(side * 10.0 / res)
        classes = _sample(parcels, count, res)
        noise = rng.normal(0.0, 60.0, size=classes.shape)
        values = np.clip(signatures[index][classes] + noise, 1, 10_000).astype(np.uint16)
        path = folder / f"T30UWU_{band}.tif"
        transform = from_origin(ORIGIN[0], ORIGIN[1], res, res)
        _write(path, values[None], transform, f"EPSG:{UTM_EPSG}", 0, [band])
        paths.append(str(path))
    return paths


def write_s1(path: Path, side: int, seed: int) -> str:
    """VV/VH backscatter (dB, float32) on a geographic grid that covers the S2 tile."""
    from rasterio.transform import from_origin
    from rasterio.warp import transform_bounds

    west, south, east, north = transform_bounds(
        f"EPSG:{UTM_EPSG}",
        "EPSG:4326",
        ORIGIN[0],
        ORIGIN[1] - side * 10.0,
        ORIGIN[0] + side * 10.0,
        ORIGIN[1],
        densify_pts=21,
    )
    margin = 20 * S1_DEG
    west, north = west - margin, north + margin
    width = math.ceil((east + margin - west) / S1_DEG)
    height = math.ceil((north - (south - margin)) / S1_DEG)
    rng = np.random.default_rng(seed)
    field = rng.normal(-12.0, 3.0, size=(height // 16 + 1, width // 16 + 1)).astype(np.float32)
    base = np.repeat(np.repeat(field, 16, axis=0), 16, axis=1)[:height, :width]
    speckle = 10.0 * np.log10(rng.gamma(4.0, 0.25, size=(height, width)).astype(np.float32))
    data = np.stack([base + speckle, base - 7.0 + speckle]).astype(np.float32)
    transform = from_origin(west, north, S1_DEG, S1_DEG)
    _write(path, data, transform, "EPSG:4326", float("nan"), ["VV", "VH"])
    return str(path)


def make_scene(model: str, side: int, root: Path) -> dict[str, Any]:
    """Generate (once, cached in ``root``) the inputs of ``model`` for a ``side`` px scene."""
    folder = root / f"{model}_{side}"
    index = folder / "scene.json"
    if index.exists():
        return json.loads(index.read_text())
    if folder.exists():
        shutil.rmtree(folder)
    started = time.perf_counter()
    if model.startswith("amfnet"):
        rng = np.random.default_rng(7)
        cells = math.ceil(side * 10.0 / PARCEL_M) + 1
        changed = rng.random((cells, cells)) < 0.05
        scene = {
            "before": write_s2_bands(folder / "before", side, 1),
            "after": write_s2_bands(folder / "after", side, 2, changed),
        }
    else:
        scene = {
            "s2": write_s2_bands(folder / "s2", side, 1),
            "s1": write_s1(folder / "s1_vv_vh_epsg4326.tif", side, 3),
        }
    scene["side"] = side
    index.write_text(json.dumps(scene))
    print(f"  generated {folder.name} in {time.perf_counter() - started:.0f} s", flush=True)
    return scene


def make_weights(model: str, root: Path) -> str:
    """Random (seeded) weights for ``model`` in the project's weights format."""
    path = root / f"{model}_random.pt"
    if path.exists():
        return str(path)
    import torch

    from landfuse.models.registry import get_model_spec
    from landfuse.models.weights import WeightsMetadata, save_weights

    spec = get_model_spec(model)
    torch.manual_seed(0)
    network = spec.build()
    metadata = WeightsMetadata.for_spec(spec, config=getattr(network, "config", None))
    save_weights(path, network, metadata)
    return str(path)


#: TerraMind's remapped Esri classes (PROVENANCE.md B1) onto the Hunan classes of the model:
#: water, trees, flooded vegetation, crops, built area, bare ground, rangeland; no data, snow
#: and clouds are not learnt.
TERRAMIND_TO_HUNAN = {0: 255, 1: 4, 2: 1, 3: 3, 4: 0, 5: 6, 6: 5, 7: 255, 8: 255, 9: 2}


def _oscd_label(workdir: Path) -> Optional[str]:
    """The Rennes change map (1 no change, 2 change) with the B02 grid it lacks (PROVENANCE)."""
    import rasterio
    import rasterio.errors

    pair = _oscd_pair()
    labels = REALDATA / "oscd" / "Onera Satellite Change Detection dataset - Train Labels"
    source = labels / "rennes" / "cm" / "rennes-cm.tif"
    if pair is None or not source.exists():
        return None
    target = workdir / "rennes-cm-georeferenced.tif"
    if not target.exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            cm_data = _read_first_band(source)
        with rasterio.open(pair[0][1]) as b02:
            height, width = cm_data.shape
            profile = {"driver": "GTiff", "width": width, "height": height, "count": 1}
            profile.update(dtype="uint8", crs=b02.crs, transform=b02.transform)
            with rasterio.open(target, "w", **profile) as dst:
                dst.write(cm_data.astype(np.uint8), 1)
    return str(target)


def _read_first_band(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        return src.read(1)


class _ChangeRich:
    """Chips of a change dataset, those with 10 % change or more repeated (a training view).

    Rennes has 2.6 % changed pixels: trained briefly on its chips as they come, AMFNet learns to
    say "no change" everywhere, which makes the bf16 comparison meaningless (a network that
    predicts one class agrees with itself at any precision). Repeating the chips that hold
    change until they are about half of the epoch makes the short training produce changed
    pixels and probabilities on both sides of the threshold.
    """

    def __init__(self, chips: Any) -> None:
        self.chips = chips
        self.ignore_index = chips.ignore_index
        changed = []
        for i in range(len(chips)):
            label = chips.read(i).label
            labelled = np.count_nonzero(label != self.ignore_index)
            if np.count_nonzero(label == 1) >= 0.1 * max(1, labelled):
                changed.append(i)
        repeat = max(1, (len(chips) - len(changed)) // max(1, len(changed)))
        self.order = list(range(len(chips))) + [i for i in changed for _ in range(repeat - 1)]
        self.changed_chips = len(changed)

    def __len__(self) -> int:
        return len(self.order)

    def read(self, index: int) -> Any:
        return self.chips.read(self.order[index])

    def __getitem__(self, index: int) -> Any:
        return self.read(index)

    @property
    def names(self) -> list[str]:
        names = self.chips.names
        return [names[i] for i in self.order]


def make_trained_weights(model: str, root: Path, steps: int) -> Optional[str]:
    """Weights trained for ``steps`` steps on the real samples (cached), or None without them.

    Random weights give degenerate outputs for the bf16 comparison: AMM-FuseNet puts almost
    every pixel in one class, AMFNet leaves nearly every change probability within 0.01 of
    the 0.5 threshold, where any rounding flips the class. A short training on the same real
    samples (with :mod:`landfuse.core.training`, the published recipe shortened) gives class
    margins of the kind a trained model has. This is for the numerics only: the weights are
    scored on their own training samples and say nothing about accuracy.
    """
    from landfuse.core import datasets, training

    change = model.startswith("amfnet")
    out = root / f"{model}_trained_{steps}{'_change_rich' if change else ''}"
    weights = out / "trained.pt"
    if weights.exists():
        return str(weights)
    if change:
        pair, label = _oscd_pair(), _oscd_label(root)
        if pair is None or label is None:
            return None
        scenes = [
            datasets.RasterScene(inputs=(tuple(pair[0]), tuple(pair[1])), label=label,
                                 label_map={0: 255, 1: 0, 2: 1}, name="rennes")
        ]  # fmt: skip
        recipe = training.recipe_for(
            model, epochs=None, max_iterations=steps, batch_size=4, learning_rate=1e-3
        )
    else:
        folder = REALDATA / "terramind_examples"
        stems = sorted(p.name for p in (folder / "S2L1C").glob("*.tif"))
        if not stems:
            return None
        scenes = [
            datasets.RasterScene(
                inputs=(str(folder / "S2L1C" / stem), str(folder / "S1RTC" / stem)),
                label=str(folder / "LULC" / stem),
                label_map=TERRAMIND_TO_HUNAN,
            )
            for stem in stems
        ]
        recipe = training.recipe_for(model, max_iterations=steps, batch_size=4)
    started = time.perf_counter()
    chips: Any = datasets.RasterChipDataset(scenes, 64, 32, min_labelled_fraction=0.5, preload=True)
    if change:
        chips = _ChangeRich(chips)
        print(f"  {chips.changed_chips} chips hold >= 10 % change; {len(chips)} chips in all")
    config = training.TrainingConfig(
        model=model,
        output_dir=str(out),
        recipe=recipe,
        seed=0,
        device="cpu",
        weights_name="trained.pt",
        data_description=f"benchmark only: {steps} steps on the real samples it is compared on",
    )
    result = training.train(config, chips)
    print(f"  trained {model} for {steps} steps in {time.perf_counter() - started:.0f} s")
    return str(result.weights_path)


# --- cases (each runs in a fresh subprocess) --------------------------------------------------


def _request(
    model: str,
    scene: dict[str, Any],
    weights: str,
    out: str,
    precision: str,
    batch: int,
    device: str = "cpu",
):
    from landfuse.core.requests import ChangeRequest, LandCoverRequest, ModalityInput, RasterSource

    common = {
        "model": model,
        "weights": weights,
        "output_dir": out,
        "device": device,
        "precision": precision,
        "batch": batch,
        "overwrite": True,
    }
    if "before" in scene:
        return ChangeRequest(
            before=tuple(RasterSource(p) for p in scene["before"]),
            after=tuple(RasterSource(p) for p in scene["after"]),
            **common,
        )
    return LandCoverRequest(
        inputs=(
            ModalityInput("s2", tuple(RasterSource(p) for p in scene["s2"])),
            ModalityInput("s1", scene["s1"]),
        ),
        **common,
    )


def case_raw(spec: dict[str, Any]) -> dict[str, Any]:
    """Raw throughput: BatchPredictor on pre-loaded channels-last tiles."""

    from landfuse.core import engine
    from landfuse.core.device import resolve_target
    from landfuse.core.runner import BatchPredictor

    info = engine.model_info(spec["model"])
    target = resolve_target(spec.get("device", "cpu"), spec["precision"])
    network, info, _, _ = engine.load_network(info, spec["weights"], target.device)
    predictor = BatchPredictor(network, target, spec["batch"])
    from landfuse.core.tasks import get_task

    bands = [len(m.band_names) for m in get_task(info.task).input_modalities(info)]
    rng = np.random.default_rng(0)
    tile, batch = spec["tile"], spec["batch"]
    arrays = []
    for count in bands:
        nhwc = rng.random((batch, tile, tile, count), dtype=np.float32)
        arrays.append(nhwc.transpose(0, 3, 1, 2))  # channels-last, as the engine's reader builds
    predictor.predict(arrays)  # warm-up: oneDNN picks and caches its kernels
    cpu0, started = time.process_time(), time.perf_counter()
    for _ in range(spec["batches"]):
        predictor.predict(arrays)
    seconds = time.perf_counter() - started
    tiles = spec["batches"] * batch
    return {
        "tiles": tiles,
        "seconds": seconds,
        "tiles_per_s": tiles / seconds,
        "cpu_per_wall": (time.process_time() - cpu0) / seconds,
        "peak_rss_mib": vm_hwm_mib(),
    }


def case_engine(spec: dict[str, Any]) -> dict[str, Any]:
    """End-to-end: engine.run() on a generated scene, then the process's peak memory."""
    from landfuse.core import engine

    out = tempfile.mkdtemp(prefix="landfuse-bench-")
    try:
        request = _request(
            spec["model"],
            spec["scene"],
            spec["weights"],
            out,
            spec["precision"],
            spec["batch"],
            spec.get("device", "cpu"),
        )
        baseline = vm_hwm_mib()
        cpu0, started = time.process_time(), time.perf_counter()
        result = engine.run(request)
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu0
        report = result.report
        tiles = int(report["tiles"]["computed"])
        return {
            "tiles": tiles,
            "seconds": seconds,
            "tiles_per_s": tiles / seconds,
            "megapixels_per_s": report["grid"]["width"] * report["grid"]["height"] / seconds / 1e6,
            "cpu_per_wall": cpu / seconds,
            "grid": [report["grid"]["width"], report["grid"]["height"]],
            "timings": report["timings_s"],
            "precision": report["precision"],
            "rss_before_run_mib": baseline,
            "peak_rss_mib": vm_hwm_mib(),
        }
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _oscd_pair() -> Optional[tuple[list[str], list[str]]]:
    city = REALDATA / "oscd" / "Onera Satellite Change Detection dataset - Images" / "rennes"
    if not city.is_dir():
        return None

    def bands(folder: str) -> list[str]:
        files = {p.stem.rsplit("_", 1)[1]: str(p) for p in (city / folder).glob("*_B*.tif")}
        return [files[b] for b in S2_BANDS]

    return bands("imgs_1"), bands("imgs_2")


def real_samples(model: str) -> list[tuple[str, dict[str, Any]]]:
    """The real samples used for the bf16/fp32 agreement of ``model`` (may be empty)."""
    if model.startswith("amfnet"):
        pair = _oscd_pair()
        return [] if pair is None else [("OSCD Rennes", {"before": pair[0], "after": pair[1]})]
    folder = REALDATA / "terramind_examples"
    return [
        (f"TerraMind {p.stem}", {"s2": [str(p)], "s1": str(folder / "S1RTC" / p.name)})
        for p in sorted((folder / "S2L1C").glob("*.tif"))
    ]


def case_agreement(spec: dict[str, Any]) -> dict[str, Any]:
    """Run fp32 and the reduced precision on the real samples; compare classes and probabilities."""
    import rasterio

    from landfuse.core import engine

    samples = []
    same = total = 0
    for name, scene in real_samples(spec["model"]):
        maps, probs = {}, {}
        for precision in ("fp32", spec["precision"]):
            out = tempfile.mkdtemp(prefix="landfuse-bench-")
            try:
                request = _request(
                    spec["model"],
                    scene,
                    spec["weights"],
                    out,
                    precision,
                    spec["batch"],
                    spec.get("device", "cpu"),
                )
                outputs = engine.run(request).outputs
                key, extra = (
                    ("change", "probability")
                    if "before" in scene
                    else (
                        "classes",
                        "confidence",
                    )
                )
                with rasterio.open(outputs[key]) as src:
                    maps[precision] = src.read(1)
                with rasterio.open(outputs[extra]) as src:
                    probs[precision] = src.read(1).astype(np.float64)
            finally:
                shutil.rmtree(out, ignore_errors=True)
        a, b = maps["fp32"], maps[spec["precision"]]
        valid = (a != 255) & (b != 255)
        agree = int((a[valid] == b[valid]).sum())
        counts = np.bincount(a[valid].ravel(), minlength=2)
        near = changed = None
        if "before" in scene:
            changed = float(counts[1] / max(1, counts.sum()))
            # Random weights leave many change probabilities near the 0.5 threshold, where
            # any rounding flips the class: say how many.
            near = float((np.abs(probs["fp32"][valid] - 0.5) < 0.01).mean())
        samples.append(
            {
                "sample": name,
                "pixels": int(valid.sum()),
                "agreement": agree / max(1, int(valid.sum())),
                "largest_class": float(counts.max() / max(1, counts.sum())),
                "classes_present": int((counts > 0).sum()),
                "near_boundary": near,
                "changed_fp32": changed,
                "mean_abs_diff_second_output": float(
                    np.abs(probs["fp32"] - probs[spec["precision"]])[valid].mean()
                ),
            }
        )
        same += agree
        total += int(valid.sum())
    return {"samples": samples, "agreement": same / total if total else None, "pixels": total}


CASES = {"raw": case_raw, "engine": case_engine, "agreement": case_agreement}


def run_case_here(text: str) -> None:
    """Subprocess entry: run one case and print its result as one JSON line."""
    spec = json.loads(text)
    if spec.get("threads"):
        import torch

        torch.set_num_threads(int(spec["threads"]))
    result = CASES[spec["kind"]](spec)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def run_case(spec: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Run one case in a fresh subprocess; add the wall time and the load of other processes."""
    quiet = wait_for_quiet(args.max_other_load, args.max_wait) if args.max_wait > 0 else None
    import resource

    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, wall0 = _cpu_busy_seconds(), time.perf_counter()
    child = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--case", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - wall0
    busy1 = _cpu_busy_seconds()
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [ln for ln in child.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if child.returncode != 0 or not lines:
        raise RuntimeError(
            f"Case {spec['kind']} {spec.get('model')} {spec.get('precision')} failed:\n"
            f"{child.stdout[-3000:]}\n{child.stderr[-3000:]}"
        )
    result = json.loads(lines[-1][len(RESULT_PREFIX) :])
    result["load_before"] = quiet
    if busy0 is not None and busy1 is not None:
        # All CPU time used during the case minus the child's own: what other processes took.
        own = (children1.ru_utime - children0.ru_utime) + (children1.ru_stime - children0.ru_stime)
        result["other_load"] = max(0.0, (busy1 - busy0 - own) / wall)
    return result


# --- the run ----------------------------------------------------------------------------------


def scene_side(model: str, args: argparse.Namespace) -> int:
    """The end-to-end scene side for ``model`` (``--scene``, else its default)."""
    if args.scene:
        return int(args.scene)
    return QUICK_SCENE if args.quick else DEFAULT_SCENES.get(model, 4096)


def configure(args: argparse.Namespace) -> None:
    if args.train_steps is None:
        args.train_steps = 30 if args.quick else 150
    if not args.raw_batches:
        args.raw_batches = 2 if args.quick else 8
    for model in args.models:
        side = scene_side(model, args)
        if side % 2 or side < 512:
            raise SystemExit(f"--scene must be even and >= 512 (got {side} for {model}).")


def bench_model(model: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    side = scene_side(model, args)
    weights = make_weights(model, root)
    big = make_scene(model, side, root)
    small = make_scene(model, side // 2, root)
    base = {
        "model": model,
        "weights": weights,
        "batch": args.batch,
        "threads": args.threads,
        "device": args.device,
    }
    raw_spec = {"kind": "raw", "tile": 256, "batches": args.raw_batches}
    rows: dict[str, Any] = {}
    for precision in ("fp32", args.precision):
        spec = {**base, "precision": precision}
        print(f"{model} {precision}: raw network", flush=True)
        raw_before = run_case({**spec, **raw_spec}, args)
        print(f"{model} {precision}: end to end, {side} px", flush=True)
        end = run_case({**spec, "kind": "engine", "scene": big}, args)
        print(f"{model} {precision}: raw network again", flush=True)
        raw_after = run_case({**spec, **raw_spec}, args)
        print(f"{model} {precision}: end to end, {side // 2} px (memory)", flush=True)
        small_run = run_case({**spec, "kind": "engine", "scene": small}, args)
        raw = 0.5 * (raw_before["tiles_per_s"] + raw_after["tiles_per_s"])
        rows[precision] = {
            "raw_before": raw_before,
            "raw_after": raw_after,
            "raw_tiles_per_s": raw,
            "engine": end,
            "engine_small": small_run,
            "engine_over_raw": end["tiles_per_s"] / raw,
            "memory_growth": end["peak_rss_mib"] / small_run["peak_rss_mib"] - 1.0,
        }
    agreement = None
    if real_samples(model):
        trained = None
        if args.train_steps:
            print(f"{model}: {args.train_steps} training steps on the real samples", flush=True)
            trained = make_trained_weights(model, root, args.train_steps)
        print(f"{model}: {args.precision} vs fp32 on real samples", flush=True)
        agreement = run_case(
            {
                **base,
                "weights": trained or weights,
                "kind": "agreement",
                "precision": args.precision,
            },
            args,
        )
        agreement["weights"] = f"trained {args.train_steps} steps" if trained else "random (seeded)"
    return {"model": model, "scene": side, "rows": rows, "agreement": agreement}


def _fmt(value: Optional[float], digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _check(ok: bool) -> str:
    return "yes" if ok else "**no**"


def render(results: list[dict[str, Any]], args: argparse.Namespace, meta: dict[str, Any]) -> str:
    """Markdown tables of one run."""
    reduced = args.precision
    machine_info = meta["machine"]
    lines = [
        f"Run of {meta['date']} on {machine_info['cpu']}, {machine_info['cores']} cores "
        f"({', '.join(machine_info['flags'])}), {machine_info['memory_gib']} GiB; torch "
        f"{machine_info['torch']} ({args.threads or machine_info['torch_threads']} threads), "
        f"GDAL {machine_info['gdal']}, rasterio {machine_info['rasterio']}, Python "
        f"{machine_info['python']}.",
        "",
        f"Command: `{meta['command']}` ({meta['minutes']:.1f} min). Load average (1, 5, 15 min) "
        f"before / after: {meta['load_before']} / {meta['load_after']}.",
        "",
        f"Tile 256 px, overlap 32 px (the engine's defaults), batch {args.batch}, device "
        f"{args.device}{' (' + machine_info['gpu'] + ')' if machine_info.get('gpu') else ''}, "
        "channels-last, `torch.inference_mode`, random weights (speed does not depend on them).",
        "",
        "### Throughput (tiles of 256 x 256 px per second)",
        "",
        "| network | precision | raw before / after | raw (mean) | end-to-end | Mpx/s "
        "| end-to-end / raw | >= 90 % | other load (cores) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for item in results:
        for precision, row in item["rows"].items():
            end = row["engine"]
            cases = [row["raw_before"], end, row["raw_after"]]
            load = max((c.get("other_load") or 0.0) for c in cases)
            lines.append(
                f"| {item['model']} | {precision} | {_fmt(row['raw_before']['tiles_per_s'])} / "
                f"{_fmt(row['raw_after']['tiles_per_s'])} | {_fmt(row['raw_tiles_per_s'])} | "
                f"{_fmt(end['tiles_per_s'])} ({item['scene']} px, {end['tiles']} tiles, "
                f"{end['seconds']:.0f} s) | {_fmt(end['megapixels_per_s'], 3)} | "
                f"{100 * row['engine_over_raw']:.1f} % | "
                f"{_check(row['engine_over_raw'] >= 0.9)} | {_fmt(load)} |"
            )
    lines += [
        "",
        f"### Reduced precision ({reduced}) against fp32",
        "",
        "| network | raw speed-up | end-to-end speed-up | >= 1.8x | same class on real samples "
        "| >= 99 % | weights | per sample |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for item in results:
        rows = item["rows"]
        if reduced not in rows or "fp32" not in rows:
            continue
        raw_gain = rows[reduced]["raw_tiles_per_s"] / rows["fp32"]["raw_tiles_per_s"]
        end_gain = rows[reduced]["engine"]["tiles_per_s"] / rows["fp32"]["engine"]["tiles_per_s"]
        agreement = item["agreement"] or {}
        share = agreement.get("agreement")
        details = []
        for sample in agreement.get("samples", []):
            text = (
                f"{sample['sample']}: {100 * sample['agreement']:.2f} % of {sample['pixels']} px, "
                f"{sample['classes_present']} classes (largest {100 * sample['largest_class']:.0f}"
                " %)"
            )
            if sample.get("changed_fp32") is not None:
                text += f", {100 * sample['changed_fp32']:.1f} % changed in fp32"
            if sample.get("near_boundary") is not None:
                text += f", {100 * sample['near_boundary']:.1f} % within 0.01 of p = 0.5"
            details.append(text)
        lines.append(
            f"| {item['model']} | {raw_gain:.2f}x | {end_gain:.2f}x | "
            f"{_check(min(raw_gain, end_gain) >= 1.8)} | "
            f"{'n/a' if share is None else f'{100 * share:.2f} %'} | "
            f"{'n/a' if share is None else _check(share >= 0.99)} | "
            f"{agreement.get('weights', 'n/a')} | {'; '.join(details) or 'no real sample found'} |"
        )
    lines += [
        "",
        "### Peak memory (process resident high-water mark, MiB), scene side S/2 vs S "
        "(4x the area)",
        "",
        "| network | precision | S/2 | S | growth | < 10 % |",
        "|---|---|---|---|---|---|",
    ]
    for item in results:
        side = item["scene"]
        for precision, row in item["rows"].items():
            lines.append(
                f"| {item['model']} | {precision} | {row['engine_small']['peak_rss_mib']:.0f} "
                f"({side // 2} px) | {row['engine']['peak_rss_mib']:.0f} ({side} px) | "
                f"{100 * row['memory_growth']:+.1f} % | {_check(row['memory_growth'] < 0.10)} |"
            )
    lines += [
        "",
        "### Where the end-to-end time goes (engine report, seconds)",
        "",
        "| network | precision | total | validate + weights + open | tile loop | network in "
        "the loop | waiting for data | finish (COG, styles) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for item in results:
        for precision, row in item["rows"].items():
            t = row["engine"]["timings"]
            setup = sum(t.get(k, 0.0) for k in ("validate_inputs", "load_weights", "open_inputs"))
            lines.append(
                f"| {item['model']} | {precision} | {t.get('total', 0):.1f} | {setup:.1f} | "
                f"{t.get('tiles_loop', 0):.1f} | {t.get('network', 0):.1f} | "
                f"{t.get('waiting_for_data', 0):.1f} | {t.get('finish', 0):.1f} |"
            )
    return "\n".join(lines) + "\n"


def write_doc(path: Path, table: str) -> None:
    """Replace the text between the markers of ``path`` (or create a minimal page)."""
    block = f"{BEGIN}\n{table}{END}"
    if path.exists():
        text = path.read_text(encoding="utf-8")
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            tail = rest.split(END, 1)[1]
            path.write_text(head + block + tail, encoding="utf-8")
            return
        path.write_text(text.rstrip() + "\n\n" + block + "\n", encoding="utf-8")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# Engine benchmarks\n\n{block}\n", encoding="utf-8")


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Raw network vs end-to-end engine throughput, bf16 vs fp32, peak memory.",
    )
    parser.add_argument(
        "--scene",
        type=int,
        default=None,
        help="end-to-end scene side in pixels for every network (default: AMM-FuseNet 4096, "
        "AMFNet 8192); peak memory is also measured at half the side",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1024 px scenes")
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="registry names")
    parser.add_argument("--precision", default="bf16", help="reduced precision to compare")
    parser.add_argument("--batch", type=int, default=4, help="tiles per forward pass (4)")
    parser.add_argument(
        "--device", default="cpu", help="device of every case: cpu (default), cuda, mps"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    parser.add_argument("--raw-batches", type=int, default=0, help="timed raw batches (8)")
    parser.add_argument(
        "--train-steps",
        type=int,
        default=None,
        help="training steps on the real samples for the bf16 agreement weights (default 150, "
        "--quick 30; 0: random weights)",
    )
    parser.add_argument("--workdir", type=Path, help="keep scenes and weights here for reuse")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="markdown file")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--json", type=Path, help="also save every raw measurement here")
    parser.add_argument(
        "--max-other-load",
        type=float,
        default=0.3,
        help="before each case wait until other processes use fewer cores than this (0.3)",
    )
    parser.add_argument(
        "--max-wait", type=float, default=180.0, help="longest wait per case, s (180; 0: never)"
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.case:
        run_case_here(args.case)
        return 0
    configure(args)
    started = time.perf_counter()
    command = "python scripts/bench_engine.py " + " ".join(
        sys.argv[1:] if argv is None else list(argv)
    )
    meta = {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine(),
        "command": command.strip(),
        "load_before": " ".join(f"{v:.2f}" for v in os.getloadavg()),
    }
    root = args.workdir or Path(tempfile.mkdtemp(prefix="landfuse-bench-data-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        results = [bench_model(model, args, root) for model in args.models]
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    meta["load_after"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    meta["minutes"] = (time.perf_counter() - started) / 60.0
    table = render(results, args, meta)
    print()
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    if not args.no_write:
        write_doc(args.output, table)
        print(f"Written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
