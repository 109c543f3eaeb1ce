"""Tests of weights files (models/weights.py): format, sha256, safety, corruption, mismatches."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from landfuse.models.amfnet import AMFNet
from landfuse.models.errors import (
    CorruptWeightsError,
    UnknownModelError,
    UnsafeWeightsError,
    WeightsMismatchError,
    WeightsNotFoundError,
)
from landfuse.models.registry import ClassSpec, get_model_spec
from landfuse.models.weights import (
    FORMAT_NAME,
    UNVERIFIED,
    WeightsMetadata,
    check_weights_path,
    file_sha256,
    load_model,
    metadata_sha256,
    read_weights,
    safe_torch_load,
    save_weights,
    sidecar_path,
    tensors_sha256,
    upgrade_weights,
)

pytestmark = pytest.mark.unit

# A small AMFNet keeps the files (about 50 MB) and the tests quick.
SMALL = {"in_channels": 3, "num_classes": 2, "encoder": "resnet18", "include_unused": False}


class _CreatesFile:
    """A pickle payload: unpickling it calls ``open(marker, "w")``, creating the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.marker, "w"))


def _small_model(seed: int = 0) -> AMFNet:
    torch.manual_seed(seed)
    model = AMFNet(**SMALL)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.8, 1.2)
    return model.eval()


def _metadata(model: AMFNet) -> WeightsMetadata:
    return WeightsMetadata.for_spec(
        get_model_spec("amfnet_rgb_levir"),
        config=model.config,
        training={"data": "LEVIR-CD samples", "epochs": 3, "seed": 0, "command": "pytest"},
        metrics={"f1_change": 0.5, "iou_change": 0.33},
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, AMFNet, str]:
    model = _small_model()
    path = tmp_path_factory.mktemp("weights") / "amfnet_small.pt"
    sha = save_weights(path, model, _metadata(model))
    return path, model, sha


@pytest.fixture(scope="module")
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.rand(1, 3, 64, 64, generator=gen), torch.rand(1, 3, 64, 64, generator=gen)


def _copy(src: Path, dst: Path, data: bytes | None = None) -> Path:
    dst.write_bytes(src.read_bytes() if data is None else data)
    return dst


def test_save_writes_file_sidecar_and_returns_sha(saved: tuple[Path, AMFNet, str]) -> None:
    path, model, sha = saved
    assert sha == file_sha256(path)
    assert len(sha) == 64
    side = json.loads(sidecar_path(path).read_text())
    assert side["sha256"] == sha and side["format"] == FORMAT_NAME
    assert side["metadata"]["model_name"] == "amfnet_rgb_levir"
    assert side["metadata"]["config"] == SMALL
    assert not list(path.parent.glob("*.tmp"))
    # The file itself holds only plain data: it loads with weights_only=True.
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT_NAME and isinstance(raw["metadata_json"], str)
    assert raw["tensors_sha256"] == tensors_sha256(model.state_dict())


def test_read_weights_round_trip(saved: tuple[Path, AMFNet, str]) -> None:
    path, model, sha = saved
    state, meta, read_sha = read_weights(path)
    assert read_sha == sha
    assert meta == _metadata(model)
    assert meta.modalities[0].band_names == ("R", "G", "B")
    assert meta.classes[1] == ClassSpec(1, "change", (255, 255, 255))
    assert meta.training["epochs"] == 3 and meta.metrics["f1_change"] == 0.5
    assert list(state) == list(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(state[k], v), k


def test_load_model_rebuilds_in_eval_mode_with_identical_outputs(
    saved: tuple[Path, AMFNet, str], pair: tuple[torch.Tensor, torch.Tensor]
) -> None:
    path, model, sha = saved
    loaded, meta, read_sha = load_model(path)
    assert read_sha == sha and meta.model_name == "amfnet_rgb_levir"
    assert isinstance(loaded, AMFNet) and not loaded.training
    assert loaded.config == SMALL
    with torch.no_grad():
        assert torch.equal(loaded.predict(*pair), model.predict(*pair))
    again, _, _ = load_model(path, model_name="amfnet_rgb_levir")
    assert isinstance(again, AMFNet)


def test_wrong_model_name_is_refused(saved: tuple[Path, AMFNet, str]) -> None:
    path, _, _ = saved
    with pytest.raises(WeightsMismatchError, match="amfnet_rgb_levir"):
        load_model(path, model_name="amm_fusenet_s2_s1_hunan")


def test_file_whose_tensors_do_not_fit_its_model_is_refused(
    tmp_path: Path, saved: tuple[Path, AMFNet, str]
) -> None:
    path, _, _ = saved
    raw = torch.load(path, weights_only=True)
    meta = json.loads(raw["metadata_json"])
    meta["config"]["in_channels"] = 13  # another model's configuration
    raw["metadata_json"] = json.dumps(meta)
    raw["metadata_sha256"] = metadata_sha256(raw["metadata_json"])  # a well-formed file
    bad = tmp_path / "bad.pt"
    torch.save(raw, bad)
    with pytest.raises(WeightsMismatchError, match=r"net\.net\.conv1\.weight"):
        load_model(bad)


def test_published_plain_state_dict_needs_a_model_name(
    tmp_path: Path, pair: tuple[torch.Tensor, torch.Tensor]
) -> None:
    torch.manual_seed(3)
    reference = AMFNet().eval()  # the published configuration: ResNet-34, unused modules kept
    path = tmp_path / "levir_best.pth"
    torch.save({f"module.{k}": v for k, v in reference.state_dict().items()}, path)
    with pytest.raises(WeightsMismatchError, match="model_name"):
        load_model(path)
    with pytest.raises(WeightsMismatchError, match="not a LandFuse weights file"):
        read_weights(path)
    with pytest.raises(UnknownModelError):
        load_model(path, model_name="amfnet_nope")
    model, meta, sha = load_model(path, model_name="amfnet_rgb_levir")
    assert sha == file_sha256(path) and meta.model_name == "amfnet_rgb_levir"
    assert meta.training["source"] == "published reference checkpoint"
    assert not model.training
    with torch.no_grad():
        assert torch.equal(model.predict(*pair), reference.predict(*pair))
    with pytest.raises(WeightsMismatchError):
        load_model(path, model_name="amfnet_s2")  # 13-band model: conv1 does not fit


def test_published_amm_fusenet_checkpoint_through_load_model(tmp_path: Path) -> None:
    spec = get_model_spec("amm_fusenet_s2_dem_hunan")
    torch.manual_seed(4)
    reference = spec.build().eval()
    path = tmp_path / "best_dual_parasingle_hunan2_os16.pth"
    torch.save(
        {
            "cur_itrs": 10,
            "model_state": reference.state_dict(),
            "optimizer_state": {"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]},
            "scheduler_state": {"last_epoch": 10},
            "best_score": np.float64(0.42),
        },
        path,
    )
    model, meta, _ = load_model(path, model_name=spec.name)
    assert meta.modalities == spec.modalities
    x = (torch.rand(1, 13, 32, 32), torch.rand(1, 1, 32, 32))
    with torch.no_grad():
        assert torch.equal(model.predict(*x), reference.predict(*x))


def test_numpy_scalars_load_as_plain_numbers(tmp_path: Path) -> None:
    path = tmp_path / "scalars.pth"
    torch.save(
        {
            "best_score": np.float64(0.625),
            "f32": np.float32(1.5),
            "itrs": np.int64(-7),
            "flag": np.bool_(True),
            "w": torch.ones(2),
        },
        path,
    )
    loaded = safe_torch_load(path)
    assert loaded["best_score"] == 0.625 and isinstance(loaded["best_score"], float)
    assert loaded["f32"] == 1.5 and loaded["itrs"] == -7 and loaded["flag"] is True
    assert torch.equal(loaded["w"], torch.ones(2))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    # Control: the payload is live; loading it the unsafe way creates its marker file.
    control = tmp_path / "control_marker"
    with (tmp_path / "control.pt").open("wb") as fh:
        torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _CreatesFile(control)}, fh)
    handle = torch.load(tmp_path / "control.pt", weights_only=False)["x"]
    handle.close()
    assert control.exists()

    marker = tmp_path / "payload_ran"
    torch_file = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _CreatesFile(marker)}, torch_file)
    raw_pickle = tmp_path / "evil.pkl"
    raw_pickle.write_bytes(pickle.dumps({"w": _CreatesFile(marker)}, protocol=2))
    # Hand-written protocol-0 payloads: GLOBAL + REDUCE, and the INST opcode.
    target = str(marker).encode()
    global_reduce = b"cbuiltins\nopen\n(S'" + target + b"'\nS'w'\ntR."
    inst = b"(S'" + target + b"'\nS'w'\nibuiltins\nopen\n."
    for payload in (global_reduce, inst):  # control: both are live payloads
        other = tmp_path / "control_marker_2"
        pickle.loads(payload.replace(target, str(other).encode())).close()
        assert other.exists()
        other.unlink()
    proto0_global = tmp_path / "evil_global.pt"
    proto0_global.write_bytes(global_reduce)
    proto0_inst = tmp_path / "evil_inst.pt"
    proto0_inst.write_bytes(inst)
    amm = get_model_spec("amm_fusenet_s2_s1_hunan")
    for path in (torch_file, raw_pickle, proto0_global, proto0_inst):
        with pytest.raises(UnsafeWeightsError, match="could run code"):
            read_weights(path)
        with pytest.raises(UnsafeWeightsError):
            load_model(path, model_name="amfnet_rgb_levir")
        with pytest.raises(UnsafeWeightsError):
            safe_torch_load(path)
        assert not marker.exists()
    from landfuse.models.amm_fusenet import load_official_state_dict

    with pytest.raises(UnsafeWeightsError):
        load_official_state_dict(amm.build(), torch_file)
    assert not marker.exists()


def test_truncated_garbage_and_empty_files_are_corrupt(
    tmp_path: Path, saved: tuple[Path, AMFNet, str]
) -> None:
    path, _, _ = saved
    data = path.read_bytes()
    cases = {
        "truncated.pt": data[: len(data) // 2],
        "tail_cut.pt": data[:-100],
        "garbage.pt": bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
        "empty.pt": b"",
    }
    for name, content in cases.items():
        bad = _copy(path, tmp_path / name, content)
        with pytest.raises(CorruptWeightsError):
            read_weights(bad)
        with pytest.raises(CorruptWeightsError):
            load_model(bad, model_name="amfnet_rgb_levir")


def _flip_inside_tensor_data(data: bytes) -> bytes:
    # The largest tensor sits in the middle of the archive; flip one byte well inside it.
    buf = bytearray(data)
    buf[len(buf) // 2] ^= 0xFF
    return bytes(buf)


def test_damaged_bytes_are_caught_by_sidecar_sha(
    tmp_path: Path, saved: tuple[Path, AMFNet, str]
) -> None:
    path, _, _ = saved
    bad = _copy(path, tmp_path / "flipped.pt", _flip_inside_tensor_data(path.read_bytes()))
    sidecar_path(bad).write_text(sidecar_path(path).read_text())
    with pytest.raises(CorruptWeightsError, match="sidecar"):
        read_weights(bad)
    with pytest.raises(CorruptWeightsError):
        load_model(bad)


def test_damaged_bytes_without_sidecar_are_still_caught(
    tmp_path: Path, saved: tuple[Path, AMFNet, str]
) -> None:
    path, _, _ = saved
    bad = _copy(path, tmp_path / "flipped_alone.pt", _flip_inside_tensor_data(path.read_bytes()))
    with pytest.raises(CorruptWeightsError):
        read_weights(bad)


def test_unreadable_sidecar_and_missing_file(
    tmp_path: Path, saved: tuple[Path, AMFNet, str]
) -> None:
    path, _, _ = saved
    copy = _copy(path, tmp_path / "copy.pt")
    sidecar_path(copy).write_text("{not json")
    with pytest.raises(CorruptWeightsError, match="sidecar"):
        read_weights(copy)
    with pytest.raises(WeightsNotFoundError):
        read_weights(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nope.pt")


def test_newer_format_version_is_refused(tmp_path: Path, saved: tuple[Path, AMFNet, str]) -> None:
    path, _, _ = saved
    raw = torch.load(path, weights_only=True)
    raw["format_version"] = 99
    future = tmp_path / "future.pt"
    torch.save(raw, future)
    with pytest.raises(WeightsMismatchError, match="Update LandFuse"):
        read_weights(future)


def test_save_refuses_metadata_that_does_not_describe_the_model(tmp_path: Path) -> None:
    model = _small_model()
    wrong_config = WeightsMetadata.for_spec(get_model_spec("amfnet_rgb_levir"))  # ResNet-34
    with pytest.raises(WeightsMismatchError, match="config"):
        save_weights(tmp_path / "a.pt", model, wrong_config)
    wrong_classes = WeightsMetadata.for_spec(
        get_model_spec("amfnet_rgb_levir"),
        config=model.config,
        classes=(ClassSpec(0, "only", (0, 0, 0)),),
    )
    with pytest.raises(WeightsMismatchError, match="classes"):
        save_weights(tmp_path / "b.pt", model, wrong_classes)
    assert not (tmp_path / "a.pt").exists() and not (tmp_path / "b.pt").exists()


def test_tensor_digest_is_sensitive_to_values_and_names() -> None:
    state = {"a": torch.arange(6, dtype=torch.float32), "n": torch.tensor(3)}
    digest = tensors_sha256(state)
    assert digest == tensors_sha256(dict(reversed(list(state.items()))))
    changed = dict(state, a=state["a"].clone().index_fill_(0, torch.tensor([2]), 9.0))
    assert tensors_sha256(changed) != digest
    assert tensors_sha256({"b": state["a"], "n": state["n"]}) != digest
    assert tensors_sha256({"a": state["a"].to(torch.bfloat16), "n": state["n"]}) != digest


# --------------------------------------------------------------------------------------------
# Issue 11: metadata covered by a digest, sidecar disagreements, unverifiable old files, paths
# that are not weights files, checkpoints that hold no state_dict, and the unsafe/damaged split
# decided by parsing the pickle rather than by torch's wording.
# --------------------------------------------------------------------------------------------


def _edited_metadata_file(path: Path, dest: Path, rename: str) -> Path:
    raw = torch.load(path, weights_only=True)
    meta = json.loads(raw["metadata_json"])
    meta["classes"][1]["name"] = rename
    raw["metadata_json"] = json.dumps(meta, sort_keys=True)
    torch.save(raw, dest)
    return dest


def test_edited_class_name_inside_the_file_is_refused_without_a_sidecar(
    tmp_path: Path, saved: tuple[Path, AMFNet, str]
) -> None:
    path, _, _ = saved
    edited = _edited_metadata_file(path, tmp_path / "edited.pt", "Swimming pool")
    assert not sidecar_path(edited).exists()
    for load in (read_weights, load_model):
        with pytest.raises(CorruptWeightsError, match=r"metadata inside edited\.pt.*edited"):
            load(edited)


def test_sidecar_whose_metadata_was_edited_is_reported_by_field(
    tmp_path: Path, saved: tuple[Path, AMFNet, str]
) -> None:
    path, _, _ = saved
    copy = _copy(path, tmp_path / "pair.pt")
    side = json.loads(sidecar_path(path).read_text())
    side["metadata"]["classes"][1]["name"] = "Edited"
    side["metadata"]["modalities"][0]["normalisation"] = "none"
    sidecar_path(copy).write_text(json.dumps(side))
    with pytest.raises(CorruptWeightsError, match=r"classes\[1\]\.name") as info:
        read_weights(copy)
    assert "modalities[0].normalisation" in str(info.value)
    assert "delete the sidecar" in str(info.value)
    # A sidecar from other weights (same sha256 field edited to match) is caught on tensors.
    side = json.loads(sidecar_path(path).read_text())
    side["tensors_sha256"] = "0" * 64
    sidecar_path(copy).write_text(json.dumps(side))
    with pytest.raises(CorruptWeightsError, match="tensors_sha256"):
        load_model(copy)


def _as_format_1(path: Path, dest: Path) -> Path:
    raw = torch.load(path, weights_only=True)
    raw["format_version"] = 1
    del raw["metadata_sha256"]
    torch.save(raw, dest)
    return dest


def test_format_1_file_without_sidecar_loads_with_a_warning(
    tmp_path: Path, saved: tuple[Path, AMFNet, str]
) -> None:
    path, model, _ = saved
    old = _as_format_1(path, tmp_path / "old.pt")
    seen: list[tuple[str, str]] = []
    state, _, _ = read_weights(old, warn=lambda code, msg: seen.append((code, msg)))
    assert torch.equal(state["net.net.conv1.weight"], model.state_dict()["net.net.conv1.weight"])
    assert [c for c, _ in seen] == [UNVERIFIED]
    assert "no checksum" in seen[0][1] and "sidecar" in seen[0][1]
    # With a sidecar that records its sha256 the file is verified: no warning.
    sidecar = json.loads(sidecar_path(path).read_text())
    sidecar["sha256"] = file_sha256(old)
    sidecar_path(old).write_text(json.dumps(sidecar))
    seen.clear()
    load_model(old, warn=lambda code, msg: seen.append((code, msg)))
    assert seen == []


def test_upgrade_rewrites_an_old_file_as_format_2_with_the_same_tensors(
    tmp_path: Path, saved: tuple[Path, AMFNet, str]
) -> None:
    path, _, _ = saved
    old = _as_format_1(path, tmp_path / "old.pt")
    new = tmp_path / "new.pt"
    sha = upgrade_weights(old, new)
    raw = torch.load(new, weights_only=True)
    assert raw["format_version"] == 2
    assert raw["metadata_sha256"] == metadata_sha256(raw["metadata_json"])
    assert raw["tensors_sha256"] == tensors_sha256(
        torch.load(path, weights_only=True)["state_dict"]
    )
    assert json.loads(sidecar_path(new).read_text())["sha256"] == sha == file_sha256(new)
    seen: list[str] = []
    read_weights(new, warn=lambda code, msg: seen.append(code))
    assert seen == []


def test_folder_and_sidecar_given_as_weights_say_which_file_to_give(
    tmp_path: Path, saved: tuple[Path, AMFNet, str]
) -> None:
    path, _, _ = saved
    folder = tmp_path / "weights_folder"
    folder.mkdir()
    _copy(path, folder / "mine.pt")
    with pytest.raises(WeightsNotFoundError, match=r"is a folder.*mine\.pt"):
        load_model(folder)
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    with pytest.raises(WeightsNotFoundError, match=r"holds no \.pt"):
        read_weights(empty)
    with pytest.raises(WeightsNotFoundError, match=r"sidecar of the weights file amfnet_small\.pt"):
        load_model(sidecar_path(path))
    # A stray sidecar whose weights file is gone is still recognised by its content.
    stray = tmp_path / "gone.pt.json"
    stray.write_text(sidecar_path(path).read_text())
    with pytest.raises(WeightsNotFoundError, match="sidecar"):
        check_weights_path(stray)


@pytest.mark.parametrize(
    "content",
    [torch.zeros(3, 3), [torch.zeros(2), torch.ones(2)], {"epoch": 3}],
    ids=["bare_tensor", "list_of_tensors", "dict_without_tensors"],
)
def test_checkpoint_without_a_state_dict_is_a_mismatch_not_a_traceback(
    tmp_path: Path, content: Any
) -> None:
    bad = tmp_path / "odd.pt"
    torch.save(content, bad)
    for name in ("amfnet_rgb_levir", "amm_fusenet_s2_s1_hunan"):
        with pytest.raises(WeightsMismatchError, match="state_dict"):
            load_model(bad, model_name=name)


def test_unsafe_or_damaged_is_decided_by_the_pickle_not_by_the_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, saved: tuple[Path, AMFNet, str]
) -> None:
    marker = tmp_path / "payload_ran"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _CreatesFile(marker)}, evil)
    legacy = tmp_path / "evil_legacy.pt"
    torch.save({"x": _CreatesFile(marker)}, legacy, _use_new_zipfile_serialization=False)
    garbage = _copy(saved[0], tmp_path / "garbage.pt", b"\x00\xffnot a pickle at all" * 20)
    real_load = torch.load

    def reworded(*args: Any, **kwargs: Any) -> Any:
        try:
            return real_load(*args, **kwargs)
        except pickle.UnpicklingError:  # a future torch that words every refusal differently
            raise pickle.UnpicklingError("Weights only load failed. Some other wording.") from None

    monkeypatch.setattr(torch, "load", reworded)
    for path in (evil, legacy):
        with pytest.raises(UnsafeWeightsError, match=r"builtins\.open|io\.open"):
            safe_torch_load(path)
    with pytest.raises(CorruptWeightsError, match="damaged"):
        safe_torch_load(garbage)
    assert not marker.exists()
