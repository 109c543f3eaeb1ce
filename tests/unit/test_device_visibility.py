"""Issue 16: the device a run used is visible: its name, precision and speed in the report and
the message bar, and a batch lowered after running out of GPU memory."""

import pytest
import torch

from landfuse.core import device as device_module
from landfuse.core.device import device_name


def test_device_names_for_cuda_mps_and_cpu(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA GeForce RTX 3060")
    assert device_name(torch.device("cuda:0")) == "NVIDIA GeForce RTX 3060"
    assert device_name(torch.device("mps")) == "Apple MPS"
    monkeypatch.setattr(device_module, "_cpuinfo_model", lambda: "AMD EPYC 7B13")
    assert device_name(torch.device("cpu")) == "AMD EPYC 7B13"


def test_the_cpu_model_is_read_from_cpuinfo(tmp_path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)\n"
    )
    assert device_module._cpuinfo_model(cpuinfo) == "Intel(R) Xeon(R)"


@pytest.mark.qgis
def test_the_message_bar_says_which_device_ran_and_a_lowered_batch() -> None:
    from landfuse.processing.results import summarise

    summary = {
        "areas": [{"name": "water", "pixels": 16, "hectares": 0.16, "percent": 100.0}],
        "timings_s": {"total": 2.0},
        "device": "cuda:0",
        "device_name": "NVIDIA H200",
        "precision": "bf16",
        "throughput_tiles_per_s": 41.25,
        "tiles": {"batch": 16, "final_batch": 4},
    }
    text = summarise({"task": "landcover", "summary": summary}).text
    assert "Ran on cuda:0 (NVIDIA H200), bf16, 41.2 tiles/s." in text
    assert "The GPU ran out of memory: the batch went from 16 to 4 tiles." in text
    summary["tiles"]["final_batch"] = 16
    assert "out of memory" not in summarise({"task": "landcover", "summary": summary}).text


@pytest.mark.qgis
@pytest.mark.parametrize(
    ("fields", "line"),
    [
        (
            {"cuda": ["NVIDIA GeForce RTX 3060"], "cuda_memory_gb": [12.0], "cuda_build": "12.1",
             "target": ["cuda:0", "bf16", "CUDA GPU supports bfloat16"]},
            "Runs on CUDA: NVIDIA GeForce RTX 3060, 12 GB, bf16: CUDA GPU supports bfloat16.",
        ),
        (
            {"nvidia_smi": True, "cuda_build": None, "target": ["cpu", "fp32", "no bf16 CPU"]},
            "Runs on CPU (an NVIDIA driver is installed but this torch is a CPU build: install "
            "the CUDA build of torch), fp32: no bf16 CPU.",
        ),
        (
            {"cuda_build": None, "target": ["cpu", "fp32", ""]},
            "Runs on CPU (no CUDA build of torch installed), fp32.",
        ),
        (
            {"mps": True, "target": ["mps", "fp16", "Apple GPU"]},
            "Runs on Apple MPS, fp16: Apple GPU.",
        ),
    ],
)  # fmt: skip
def test_the_dock_says_which_device_a_run_uses_and_why(fields, line) -> None:
    from landfuse.processing.environment import PythonProbe

    assert PythonProbe("/x/python", torch="2.13.0", **fields).device_line() == line
    assert PythonProbe("/x/python").device_line().startswith("No device: PyTorch is missing")


@pytest.mark.qgis
def test_the_dock_offers_torch_when_missing_too_old_or_a_cpu_build_beside_a_gpu() -> None:
    from landfuse.processing.environment import PythonProbe

    assert PythonProbe("/p").install_offer() == "Install PyTorch for LandFuse…"
    assert "too old" in PythonProbe("/p", torch="1.13.1").install_offer()
    beside = PythonProbe("/p", torch="2.13.0+cpu", nvidia_smi=True, cuda_build=None)
    assert "CUDA build" in beside.install_offer()
    assert (
        PythonProbe("/p", torch="2.13.0", cuda_build="12.8", nvidia_smi=True).install_offer() == ""
    )
    assert PythonProbe("/p", torch="2.13.0+cpu").install_offer() == ""
