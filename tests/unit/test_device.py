"""Device and precision choice, with CUDA, MPS and the CPU's flags mocked."""

import pytest
import torch

from landfuse.core import device as device_mod
from landfuse.core.device import (
    cpu_supports_bf16,
    resolve_device,
    resolve_precision,
    resolve_target,
)
from landfuse.core.errors import DeviceError, RequestError

pytestmark = pytest.mark.unit


@pytest.fixture
def machine(monkeypatch):
    """Pretend hardware: set cuda / mps / bf16 flags per test."""

    class Machine:
        cuda = False
        gpus = 1
        cuda_bf16 = True
        mps = False
        cpu_bf16 = False

    m = Machine()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: m.cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: m.gpus)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: m.cuda_bf16)
    monkeypatch.setattr(device_mod, "mps_available", lambda: m.mps)
    monkeypatch.setattr(device_mod, "cpu_supports_bf16", lambda *a: m.cpu_bf16)
    return m


def test_auto_prefers_cuda_then_mps_then_cpu(machine):
    assert resolve_device("auto").type == "cpu"
    machine.mps = True
    assert resolve_device("auto").type == "mps"
    machine.cuda = True
    assert resolve_device("auto").type == "cuda"


def test_named_devices_that_are_absent_are_device_errors(machine):
    with pytest.raises(DeviceError, match="--device cpu"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="MPS"):
        resolve_device("mps")
    machine.cuda = True
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(DeviceError, match="only 1 GPU"):
        resolve_device("cuda:3")


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "gpu0"])
def test_unknown_device_names_are_request_errors(machine, name):
    with pytest.raises(RequestError):
        resolve_device(name)


def test_cpu_precision_follows_native_bf16(machine):
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu)[0] == "fp32"
    machine.cpu_bf16 = True
    assert resolve_precision("auto", cpu)[0] == "bf16"
    assert resolve_precision("fp32", cpu)[0] == "fp32"
    with pytest.raises(RequestError, match="bf16"):
        resolve_precision("fp16", cpu)


def test_gpu_precision(machine):
    gpu = torch.device("cuda")
    assert resolve_precision("auto", gpu)[0] == "bf16"
    machine.cuda_bf16 = False
    assert resolve_precision("auto", gpu)[0] == "fp16"
    with pytest.raises(DeviceError, match="fp16"):
        resolve_precision("bf16", gpu)
    assert resolve_precision("auto", torch.device("mps"))[0] == "fp16"
    with pytest.raises(RequestError):
        resolve_precision("int8", gpu)


def test_resolve_target_gives_dtype_and_autocast(machine):
    machine.cpu_bf16 = True
    target = resolve_target("cpu", "auto")
    assert target.device.type == "cpu" and target.dtype == torch.bfloat16 and target.autocast
    plain = resolve_target("cpu", "fp32")
    assert plain.dtype == torch.float32 and not plain.autocast


def test_cpu_flags_read_from_cpuinfo(tmp_path):
    with_bf16 = tmp_path / "with"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile\n\n")
    without = tmp_path / "without"
    without.write_text("processor\t: 0\nflags\t\t: fpu sse avx2\n")
    amx_only = tmp_path / "amx"
    amx_only.write_text("flags : fpu amx_bf16\n")
    assert cpu_supports_bf16(with_bf16) is True
    assert cpu_supports_bf16(without) is False
    assert cpu_supports_bf16(amx_only) is True


def test_cpu_flags_fall_back_to_torch_probes_without_cpuinfo(tmp_path, monkeypatch):
    missing = tmp_path / "no-cpuinfo"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert cpu_supports_bf16(missing) is True
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert cpu_supports_bf16(missing) is False
