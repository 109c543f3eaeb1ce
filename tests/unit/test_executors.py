"""Runs split into jobs: a local process pool and Dask give the in-process maps byte for byte.

Real networks (random weights, both tasks) on scenes whose sizes are multiples of neither the
tile step, the job nor the stripe; Dask ``LocalCluster``s of 1, 2 and 4 worker processes; a
worker killed in the middle of a run; an interrupted run resumed. Every process computes with
one torch thread: the CPU's kernels may round the last bit differently with another thread
count (measured: one confidence pixel of 30 000 changed), which is why ``threads`` is a run
option.
"""

import hashlib
import os
import signal
import socket
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from stubmodels import random_weights

from landfuse.core import engine
from landfuse.core.engine import fanout, jobs, plan
from landfuse.core.errors import CancelledError, RequestError
from landfuse.core.executor_spec import check_scheduler, parse_executor
from landfuse.core.requests import ChangeRequest, LandCoverRequest, ModalityInput
from landfuse.core.tiling import plan_tiles

pytestmark = [
    pytest.mark.unit,
    pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning"),
]

ORIGIN = (500000.0, 4000000.0)
HEIGHT, WIDTH = 166, 178  # 4 rows of 64 px tiles, 2 stripes of 128 px


def write(path, data, transform, crs="EPSG:32631"):
    profile = {"driver": "GTiff", "count": data.shape[0], "height": data.shape[1],
               "width": data.shape[2], "dtype": str(data.dtype), "transform": transform,
               "crs": crs}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return str(path)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenes")
    rng = np.random.default_rng(3)
    s2 = rng.integers(0, 5000, (13, HEIGHT, WIDTH)).astype(np.uint16)
    s2[:, :20, :30] = 0  # nodata in a corner: a skipped tile and a partly valid one
    s1 = rng.normal(-15, 3, (2, HEIGHT // 2 + 1, WIDTH // 2 + 1)).astype(np.float32)
    return {
        "s2": write(folder / "s2.tif", s2, from_origin(*ORIGIN, 10, 10)),
        "s1": write(folder / "s1.tif", s1, from_origin(*ORIGIN, 20, 20)),
        "before": write(
            folder / "before.tif",
            rng.integers(0, 255, (3, HEIGHT, WIDTH)).astype(np.uint8),
            from_origin(*ORIGIN, 0.5, 0.5),
        ),
        "after": write(
            folder / "after.tif",
            rng.integers(0, 255, (3, HEIGHT, WIDTH)).astype(np.uint8),
            from_origin(*ORIGIN, 0.5, 0.5),
        ),
        "hunan": random_weights("amm_fusenet_s2_s1_hunan", folder / "hunan.pt"),
        "levir": random_weights("amfnet_rgb_levir", folder / "levir.pt"),
    }


@pytest.fixture(autouse=True)
def narrow_stripes(monkeypatch):
    """Two vertical stripes: the jobs' layout (made by the driver) carries them to workers."""
    monkeypatch.setattr(plan, "STRIPE_WIDTH", 128)


def landcover(scenes, out, **kwargs):
    return LandCoverRequest(
        inputs=(ModalityInput("s2", scenes["s2"]), ModalityInput("s1", scenes["s1"])),
        model="amm_fusenet_s2_s1_hunan", weights=scenes["hunan"], output_dir=str(out),
        tile=64, overlap=24, batch=3, precision="fp32", device="cpu", threads=1, **kwargs,
    )  # fmt: skip


def change(scenes, out, **kwargs):
    return ChangeRequest(
        before=scenes["before"], after=scenes["after"], model="amfnet_rgb_levir",
        weights=scenes["levir"], output_dir=str(out), tile=64, overlap=16, batch=2,
        precision="fp32", device="cpu", threads=1, **kwargs,
    )  # fmt: skip


def digests(result):
    """sha256 of every raster file a run published (the COGs, byte for byte)."""
    return {
        key: hashlib.sha256(Path(path).read_bytes()).hexdigest()
        for key, path in result.outputs.items()
        if str(path).endswith(".tif")
    }


@pytest.fixture(scope="module")
def in_process(scenes, tmp_path_factory):
    out = tmp_path_factory.mktemp("in-process")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plan, "STRIPE_WIDTH", 128)
        results = {
            "landcover": engine.run(landcover(scenes, out / "landcover")),
            "change": engine.run(change(scenes, out / "change")),
        }
    layout = plan_tiles(HEIGHT, WIDTH, 64, 24, 16, stripe_width=128)
    assert layout.stripes == 2 and len(layout.row_starts) == 4  # what the tests rely on
    return {task: (digests(r), r) for task, r in results.items()}


# --- the options ----------------------------------------------------------------------------


def test_executor_forms_and_errors():
    assert parse_executor("").kind == parse_executor("in-process").kind == "in-process"
    assert parse_executor("process:3") == parse_executor("processes:3")
    assert parse_executor("process:3").workers == 3
    assert parse_executor("local:4").kind == "dask-local"
    assert parse_executor("local").workers == 0
    assert parse_executor("dask://10.0.0.5").address == "tcp://10.0.0.5:8786"
    assert parse_executor("tls://sched.example.org:9000").address == "tls://sched.example.org:9000"
    for bad in ("process:0", "dask://", "spark://x:1", "local:two"):
        with pytest.raises(RequestError, match="dask://HOST:PORT"):
            parse_executor(bad)
    with pytest.raises(RequestError, match="not understood"):
        LandCoverRequest(inputs=(ModalityInput("s2", "a.tif"),), model="m", weights="w.pt",
                         output_dir="o", executor="yarn")  # fmt: skip


def test_jobs_own_every_output_row_once_and_compute_the_tiles_above_as_halo():
    layout = plan_tiles(1000, 300, 64, 24, 16, stripe_width=128)
    for per_job in (1, 2, 3, 7):
        bounds = [
            (first, min(len(layout.row_starts), first + per_job))
            for first in range(0, len(layout.row_starts), per_job)
        ]
        owned = [jobs.owned_rows(layout, a, b) for a, b in bounds]
        assert owned[0][0] == 0 and owned[-1][1] == 1000
        assert all(owned[i][1] == owned[i + 1][0] for i in range(len(owned) - 1))
        for (first, _), (top, _) in zip(bounds, owned):
            halo = jobs.halo_start(layout, first)
            covering = [r for r in layout.row_starts if r <= top < r + layout.tile_height]
            assert layout.row_starts[halo] == min(covering)  # every tile touching the band


def test_one_worker_per_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(jobs, "WORKER_ORDINAL", 3)
    assert jobs.worker_device("cuda") == "cuda:1"
    assert jobs.worker_device("cuda:0") == "cuda:0"  # a device the user named stays
    assert jobs.worker_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert jobs.worker_device("cuda") == "cuda:0"


def test_without_dask_the_run_says_how_to_get_it(scenes, tmp_path, monkeypatch):
    monkeypatch.setattr(fanout, "dask_available", lambda: False)
    with pytest.raises(RequestError, match=r"pip install .*distributed.*process:N"):
        engine.run(landcover(scenes, tmp_path / "out", executor="local:2"))
    assert not (tmp_path / "out").exists()


# --- byte-identical maps --------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["process:2", "local:1", "local:2", "local:4"])
def test_both_networks_give_the_in_process_maps_byte_for_byte(
    scenes, in_process, tmp_path, executor
):
    for task, make in (("landcover", landcover), ("change", change)):
        result = engine.run(make(scenes, tmp_path / task, executor=executor, job_rows=1))
        assert digests(result) == in_process[task][0], (task, executor)
        section = result.report["executor"]
        assert section["jobs"] == 4 and section["parts_reused"] == 0
        assert section["workers"] == int(executor.split(":")[1])
        areas = {"landcover": "classes", "change": "change"}[task]
        assert result.report[areas] == in_process[task][1].report[areas]
        assert not any(p.name.startswith(".landfuse-parts") for p in (tmp_path / task).iterdir())


@pytest.mark.slow
def test_many_scenes_are_one_submission(scenes, in_process, tmp_path):
    requests = [landcover(scenes, tmp_path / "a"), change(scenes, tmp_path / "b")]
    results = engine.run_batch(requests, "process:2")
    assert [digests(r) for r in results] == [in_process["landcover"][0], in_process["change"][0]]


# --- failures -------------------------------------------------------------------------------


def _kill_a_busy_dask_worker(killed):
    from distributed import default_client

    client = default_client()
    busy = [address for address, keys in client.processing().items() if keys]
    pids = client.run(os.getpid)
    if busy and not killed:
        os.kill(pids[busy[0]], signal.SIGKILL)
        killed.append(pids[busy[0]])


@pytest.mark.slow
def test_a_dask_worker_killed_mid_run_loses_only_its_job(scenes, in_process, tmp_path):
    killed: list[int] = []

    def progress(p):
        if p.tiles_done >= 1:  # a job is done, others are computing: kill a busy worker
            _kill_a_busy_dask_worker(killed)

    result = engine.run(
        landcover(scenes, tmp_path / "out", executor="local:2", job_rows=1), progress=progress
    )
    assert killed, "no worker was busy when the first job came back"
    assert digests(result) == in_process["landcover"][0]


@pytest.mark.slow
def test_a_pool_process_killed_mid_run_is_replaced_and_its_job_retried(
    scenes, in_process, tmp_path
):
    import psutil

    killed: list[int] = []

    def progress(p):
        if p.tiles_done >= 1 and not killed:
            children = [
                c for c in psutil.Process().children()
                if "resource_tracker" not in " ".join(c.cmdline())
            ]  # fmt: skip
            children[0].kill()
            killed.append(children[0].pid)

    result = engine.run(
        change(scenes, tmp_path / "out", executor="process:2", job_rows=1), progress=progress
    )
    assert killed
    assert digests(result) == in_process["change"][0]
    attempts = [j["attempts"] for j in result.report["executor"]["jobs_detail"]]
    assert max(attempts) == 2 and min(attempts) == 1


@pytest.mark.slow
def test_resume_computes_only_the_parts_missing_or_damaged(scenes, in_process, tmp_path):
    done: list[int] = []
    request = landcover(scenes, tmp_path / "out", executor="process:1", job_rows=1)
    with pytest.raises(CancelledError, match="resume"):
        engine.run(
            request,
            progress=lambda p: done.append(p.tiles_done),
            cancel=lambda: max(done, default=0) >= 2,
        )
    assert not list((tmp_path / "out").glob("*.tif"))  # no output under a final name
    parts = next((tmp_path / "out").glob(".landfuse-parts-*"))
    records = sorted(parts.glob("part-*.json"))
    assert 2 <= len(records) < 4  # the job computing at the cancel was stopped, or done
    damaged = parts / "part-00001.classes.tif"
    damaged.write_bytes(damaged.read_bytes()[:-10] + b"0123456789")
    result = engine.run(
        landcover(scenes, tmp_path / "out", executor="process:1", job_rows=1, resume=True)
    )
    detail = result.report["executor"]["jobs_detail"]
    resumed = [j["resumed"] for j in detail]
    assert resumed[:2] == [True, False] and sum(resumed) == len(records) - 1
    assert digests(result) == in_process["landcover"][0]
    assert not parts.exists()


@pytest.mark.slow
def test_the_scheduler_check_counts_the_workers():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp",
                      dashboard_address=None) as cluster:  # fmt: skip
        answer = check_scheduler(cluster.scheduler_address.replace("tcp://", "dask://"))
    assert answer["ok"] and answer["workers"] == 2 and answer["threads"] == 2
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    answer = check_scheduler(f"dask://127.0.0.1:{port}", timeout=2)
    assert not answer["ok"] and "does not answer" in answer["message"]


def test_workers_start_with_python_even_inside_the_qgis_application(monkeypatch):
    import multiprocessing

    chosen = []
    monkeypatch.setattr(multiprocessing, "set_executable", chosen.append)
    monkeypatch.setattr(fanout.sys, "executable", "/usr/bin/qgis")
    python = fanout.python_for_children()
    assert Path(python).name.startswith("python") and chosen == [python]


def test_batches_are_fixed_by_the_tile_grid_so_a_job_batches_like_the_whole_scene():
    from dataclasses import replace

    from landfuse.core.tiling import batch_groups

    layout = plan_tiles(700, 500, 64, 16, 16, stripe_width=200)
    whole = batch_groups(layout, 3)
    members: dict = {}
    for tile in layout:
        members.setdefault(whole(tile), []).append((tile.row, tile.col))
    assert max(len(m) for m in members.values()) == 3
    assert all(len({row for row, _ in m}) == 1 for m in members.values())  # one row of tiles
    job = jobs.Job(
        "key", 1, 3, (4, 9), (0, 0), None, "m", "w", "", (), None, None, (0, 0, 0, 0),
        layout, 2, (), "cpu", "fp32", 1, "",
    )  # fmt: skip
    band = job.band_layout()
    top = layout.row_starts[4]
    in_band = batch_groups(band, 3)
    grouped: dict = {}
    for tile in band:
        grouped.setdefault(in_band(tile), []).append((tile.row + top, tile.col))
    assert sorted(grouped.values()) == sorted(
        m for m in members.values() if top <= m[0][0] <= layout.row_starts[8]
    )
    assert replace(band, height=layout.height).col_starts == layout.col_starts


@pytest.mark.slow
def test_predict_batch_maps_a_folder_of_dates(scenes, in_process, tmp_path, capsys):
    from landfuse.core import cli

    for date in ("2024-06-01", "2024-07-01"):
        folder = tmp_path / "dates" / date
        folder.mkdir(parents=True)
        (folder / "S2_stack.tif").symlink_to(scenes["s2"])
        (folder / "s1_vv_vh.tif").symlink_to(scenes["s1"])
        (folder / "notes.txt").write_text("not a raster")
    code = cli.main(
        ["predict-batch", "landcover", "--scenes", str(tmp_path / "dates"),
         "--weights", scenes["hunan"], "--out", str(tmp_path / "maps"), "--executor",
         "process:2", "--tile", "64", "--overlap", "24", "--batch", "3", "--precision", "fp32",
         "--device", "cpu", "--threads", "1", "-q"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    for date in ("2024-06-01", "2024-07-01"):
        assert f"{date}: " in printed
        made = {
            "classes": tmp_path / "maps" / date / "landcover_classes.tif",
            "confidence": tmp_path / "maps" / date / "landcover_confidence.tif",
        }
        assert {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in made.items()} == (
            in_process["landcover"][0]
        )


def test_a_scene_list_with_an_unknown_column_is_refused(scenes, tmp_path):
    from landfuse.core.batch_cli import read_scenes
    from landfuse.core.tasks import get_task

    listing = tmp_path / "scenes.csv"
    listing.write_text(f"name,s2,s3\na,{scenes['s2']},x.tif\n")
    with pytest.raises(RequestError, match=r"unknown column.*s3"):
        read_scenes(str(listing), get_task("landcover"))
    listing.write_text(f"name,s2,s1\na,{scenes['s2']},missing.tif\n")
    with pytest.raises(RequestError, match=r"Scene 'a', s1: .*missing\.tif does not exist"):
        read_scenes(str(listing), get_task("landcover"))
    listing.write_text(f"name,s2,s1\na,{scenes['s2']},{scenes['s1']}\n")
    found = read_scenes(str(listing), get_task("landcover"))
    assert [s.path for s in found["a"]["s1"]] == [scenes["s1"]]
