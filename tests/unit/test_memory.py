"""core/memory.py: what there is (system, cgroup, ulimit, CUDA and MPS with mocks), what a run
needs, the largest tile that fits, and the engine's refusal at validation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from faultcases import Kit, upscaled_vrt

from landfuse.core import engine, memory
from landfuse.core.errors import NotEnoughMemoryError
from landfuse.core.memory import (
    MemoryBudget,
    RunShape,
    estimate_run_memory,
    format_bytes,
    largest_fitting_tile,
)

pytestmark = pytest.mark.unit


def _shape(tile: int = 256, batch: int = 4, stripe: int = 2048) -> RunShape:
    return RunShape(
        tile_height=tile,
        tile_width=tile,
        batch=batch,
        batches=10,
        bands=16,
        classes=7,
        stripe_width=stripe,
        scene_height=4096,
        shared_columns=32,
        activation_bytes_per_pixel=2043,
        parameter_bytes=100_000_000,
        block_cache_bytes=50_000_000,
    )


def test_cgroup_v2_and_v1_limits(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text("1000000000\n")
    (tmp_path / "memory.current").write_text("250000000\n")
    assert memory._cgroup_free(str(tmp_path)) == 750_000_000
    (tmp_path / "memory.max").write_text("max\n")  # v2 without a limit
    assert memory._cgroup_free(str(tmp_path)) is None
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("2000000000")
    (v1 / "memory" / "memory.usage_in_bytes").write_text("500000000")
    assert memory._cgroup_free(str(v1)) == 1_500_000_000
    (v1 / "memory" / "memory.limit_in_bytes").write_text(str(1 << 62))  # v1's "no limit"
    assert memory._cgroup_free(str(v1)) is None


def test_host_budget_is_the_smallest_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_meminfo", lambda field, path="/proc/meminfo": 20 * 10**9)
    monkeypatch.setattr(memory, "_cgroup_free", lambda root="/sys/fs/cgroup": 3 * 10**9)
    monkeypatch.setattr(memory, "_rlimit_free", lambda: None)
    budget = memory.available_host_memory()
    assert budget == MemoryBudget(3 * 10**9, "the container's memory limit")
    monkeypatch.setattr(memory, "_rlimit_free", lambda: 10**9)
    assert "ulimit" in memory.available_host_memory().source  # type: ignore[union-attr]


def test_cuda_and_mps_budgets_with_mocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (6 * 2**30, 8 * 2**30))
    cuda = memory.available_device_memory(torch.device("cuda:0"))
    assert cuda is not None and cuda.bytes == 6 * 2**30 and "cuda:0" in cuda.source

    def no_driver(device=None):
        raise RuntimeError("no CUDA driver")

    monkeypatch.setattr(torch.cuda, "mem_get_info", no_driver)
    assert memory.available_device_memory(torch.device("cuda")) is None

    class FakeMps:
        @staticmethod
        def recommended_max_memory() -> int:
            return 16 * 2**30

        @staticmethod
        def driver_allocated_memory() -> int:
            return 2**30

    monkeypatch.setattr(torch, "mps", FakeMps, raising=False)
    mps = memory.available_device_memory(torch.device("mps"))
    assert mps is not None and mps.bytes == 15 * 2**30
    assert memory.available_device_memory(torch.device("cpu")) is None


def test_estimate_grows_with_tile_and_batch_and_moves_the_network_to_the_gpu() -> None:
    small, large = estimate_run_memory(_shape(256)), estimate_run_memory(_shape(512))
    assert large.host > small.host > 0
    assert estimate_run_memory(_shape(256, batch=8)).host > small.host
    on_gpu = estimate_run_memory(_shape(256), on_accelerator=True)
    assert on_gpu.device >= on_gpu.parts["network"] and on_gpu.host < small.host
    assert set(small.parts) >= {"input batches", "network", "blending", "block cache"}


def test_largest_fitting_tile_is_the_largest_multiple_that_fits() -> None:
    budget = estimate_run_memory(_shape(1024)).host

    def shape_for(edge: int) -> RunShape:
        return _shape(edge)

    best = largest_fitting_tile(shape_for, 8192, budget, None, 16)
    assert best % 16 == 0 and best >= 1024
    assert estimate_run_memory(_shape(best)).host <= budget
    assert estimate_run_memory(_shape(best + 16)).host > budget
    assert largest_fitting_tile(shape_for, 8192, 1000, None, 16) == 0
    assert format_bytes(2.5e9) == "2.5 GB" and format_bytes(617e9) == "617 GB"


@pytest.fixture(scope="module")
def weights_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("memory_weights")


def test_validation_refuses_with_a_tile_that_then_fits(
    tmp_path: Path, weights_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = Kit(tmp_path, weights_cache)
    inputs = {
        "s2": [upscaled_vrt(kit, kit.s2(), 4096)],
        "s1": [upscaled_vrt(kit, kit.s1(), 2048)],
        "dem": [upscaled_vrt(kit, kit.dem(), 4096)],
    }
    run = kit.landcover(inputs=inputs, tile=4096, batch=4)
    budget = 2 * 10**9
    monkeypatch.setattr(
        engine.budget, "available_host_memory", lambda: MemoryBudget(budget, "test")
    )
    with pytest.raises(NotEnoughMemoryError, match=r"tile of at most \d+ px") as info:
        engine.validate(run.request())  # type: ignore[arg-type]
    found = re.search(r"tile of at most (\d+) px", str(info.value))
    assert found is not None and "only 2.0 GB is free (test)" in str(info.value)
    run.tile = int(found.group(1))
    summary = engine.validate(run.request())  # type: ignore[arg-type]
    assert summary["memory"]["estimate_host_bytes"] <= budget * memory.HEADROOM
    assert not run.out.exists()
    run.tile = 4096
    monkeypatch.setenv("LANDFUSE_SKIP_MEMORY_CHECK", "1")
    assert engine.validate(run.request())["tile"] == 4096  # type: ignore[arg-type]
