"""Tests of the model registry (models/registry.py): entries, lookups, build, forward, backward."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from landfuse.models import registry
from landfuse.models.errors import LandFuseError, ModelConfigError, UnknownModelError
from landfuse.models.registry import (
    BandSpec,
    ClassSpec,
    ModalitySpec,
    NormalisationSpec,
    get_model_spec,
    list_model_specs,
)

pytestmark = pytest.mark.unit

REQUIRED = (
    "amm_fusenet_s2_s1_hunan",
    "amm_fusenet_s2_dem_hunan",
    "amm_fusenet_s2_s1_dem",
    "amfnet_rgb_levir",
    "amfnet_s2",
)
ALL_NAMES = registry.model_names()
HUNAN_COLOURS = [
    (197, 90, 17),
    (51, 130, 88),
    (178, 206, 61),
    (229, 84, 96),
    (91, 155, 215),
    (240, 160, 2),
    (226, 175, 110),
]
S2_NAMES = (
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


def _inputs(spec: registry.ModelSpec, batch: int, size: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    if spec.task == "change":
        c = spec.band_count(0)
        return [torch.rand(batch, c, size, size, generator=gen) for _ in range(2)]
    return [torch.rand(batch, c, size, size, generator=gen) for c in spec.in_channels]


def test_required_entries_exist_in_order_of_the_contract() -> None:
    for name in REQUIRED:
        assert name in ALL_NAMES
    assert len(set(ALL_NAMES)) == len(ALL_NAMES)


def test_hunan_s2_s1_entry_matches_the_published_configuration() -> None:
    spec = get_model_spec("amm_fusenet_s2_s1_hunan")
    assert spec.task == "landcover" and spec.architecture == "amm_fusenet"
    assert spec.in_channels == (13, 2)
    assert spec.modalities[0].band_names == S2_NAMES
    assert spec.modalities[1].band_names == ("VV", "VH")
    assert all(m.normalisation.mode == "minmax_per_tile" for m in spec.modalities)
    assert [c.name for c in spec.classes][:2] == ["cropland", "forest"]
    assert [c.color for c in spec.classes] == HUNAN_COLOURS
    assert (spec.output_stride, spec.tile_size, spec.encoder) == (16, 256, "resnet50")
    assert spec.num_classes == 7


def test_hunan_s2_dem_entry_uses_fixed_dem_bounds() -> None:
    spec = get_model_spec("amm_fusenet_s2_dem_hunan")
    dem = spec.modalities[1]
    assert spec.in_channels == (13, 1)
    assert dem.normalisation.mode == "fixed_bounds"
    assert (dem.normalisation.lower, dem.normalisation.upper) == ((18.0,), (1892.0,))
    assert dem.bands[0].unit == "m"
    assert spec.modalities[0].normalisation.mode == "minmax_per_tile"


def test_three_branch_entry_and_change_entries() -> None:
    three = get_model_spec("amm_fusenet_s2_s1_dem")
    assert three.in_channels == (13, 2, 1)
    assert [c.color for c in three.classes] == HUNAN_COLOURS
    levir = get_model_spec("amfnet_rgb_levir")
    assert levir.task == "change" and levir.in_channels == (3,)
    assert levir.modalities[0].normalisation.mode == "scale"
    assert levir.modalities[0].normalisation.factor == pytest.approx(1 / 255)
    assert [c.name for c in levir.classes] == ["no change", "change"]
    assert levir.output_stride == 32 and levir.encoder == "resnet34"
    s2 = get_model_spec("amfnet_s2")
    norm = s2.modalities[0].normalisation
    assert s2.in_channels == (13,) and norm.mode == "fixed_stats"
    assert len(norm.mean) == len(norm.std) == 13 and min(norm.std) > 0


def test_every_entry_is_consistent() -> None:
    for spec in list_model_specs():
        assert spec.tile_size % 32 == 0
        assert spec.tile_size % spec.output_stride == 0
        assert [c.value for c in spec.classes] == list(range(spec.num_classes))
        for c in spec.classes:
            assert len(c.color) == 3 and all(0 <= v <= 255 for v in c.color)
        for m in spec.modalities:
            assert all(b.unit for b in m.bands)
            count = m.normalisation.per_band_count()
            assert count is None or count == len(m.bands)
        assert isinstance(spec.modalities, tuple) and isinstance(spec.classes, tuple)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(UnknownModelError) as info:
        get_model_spec("amm_fusenet_nope")
    assert isinstance(info.value, KeyError) and isinstance(info.value, LandFuseError)
    message = str(info.value)
    assert "amm_fusenet_nope" in message
    for name in ALL_NAMES:
        assert name in message


def test_list_by_task() -> None:
    change = list_model_specs("change")
    landcover = list_model_specs("landcover")
    assert {s.name for s in change} == {"amfnet_rgb_levir", "amfnet_s2", "amfnet_lite_s2"}
    assert all(s.task == "landcover" for s in landcover)
    assert len(change) + len(landcover) == len(list_model_specs())
    with pytest.raises(ModelConfigError, match="landcover"):
        list_model_specs("segmentation")


def test_entries_are_read_only() -> None:
    spec = get_model_spec("amfnet_rgb_levir")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.tile_size = 512  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.modalities[0].normalisation.factor = 2.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        registry._REGISTRY["x"] = spec  # type: ignore[index]


def test_band_count_and_model_config() -> None:
    spec = get_model_spec("amm_fusenet_s2_s1_dem")
    assert [spec.band_count(i) for i in range(3)] == [13, 2, 1]
    with pytest.raises(ModelConfigError):
        spec.band_count(3)
    assert spec.model_config() == {
        "num_classes": 7,
        "encoder": "resnet50",
        "in_channels": [13, 2, 1],
        "output_stride": 16,
    }
    assert get_model_spec("amfnet_s2").model_config(num_classes=3)["num_classes"] == 3
    assert get_model_spec("amfnet_s2").model_config()["in_channels"] == 13


def test_build_with_num_classes_override() -> None:
    model = get_model_spec("amfnet_rgb_levir").build(num_classes=5)
    assert model.output[3].weight.shape[0] == 5
    assert model.config["num_classes"] == 5


def test_normalisation_and_modality_validation() -> None:
    with pytest.raises(ModelConfigError, match="mode"):
        NormalisationSpec("zscore")
    with pytest.raises(ModelConfigError):
        NormalisationSpec("fixed_bounds", lower=(0.0,), upper=(0.0,))
    with pytest.raises(ModelConfigError):
        NormalisationSpec("fixed_stats", mean=(1.0, 2.0), std=(1.0,))
    with pytest.raises(ModelConfigError):
        NormalisationSpec("fixed_stats", mean=(1.0,), std=(0.0,))
    band = BandSpec("X", "x", "m")
    with pytest.raises(ModelConfigError, match="2 bands"):
        ModalitySpec("x", "x", (band, band), NormalisationSpec("fixed_bounds", (0.0,), (1.0,)))
    with pytest.raises(ModelConfigError):
        ModalitySpec("x", "x", (band,), NormalisationSpec("scale"), resampling="cubic")


def test_specs_round_trip_through_dicts() -> None:
    for spec in list_model_specs():
        for m in spec.modalities:
            assert ModalitySpec.from_dict(m.to_dict()) == m
        for c in spec.classes:
            assert ClassSpec.from_dict(c.to_dict()) == c


def test_registry_imports_without_torch(tmp_path: Path) -> None:
    """The QGIS side reads registry metadata in a Python that may lack torch."""
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
        "from landfuse.models import registry, errors\n"
        "spec = registry.get_model_spec('amm_fusenet_s2_s1_hunan')\n"
        "assert spec.in_channels == (13, 2)\n"
        "try:\n"
        "    spec.build()\n"
        "except ImportError:\n"
        "    print('build-needs-torch')\n"
    )
    env = dict(os.environ)
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(tmp_path),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "build-needs-torch" in result.stdout


@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_entry_forward_and_training_step(name: str) -> None:
    """Eval forward at 64×64 with batch 1 and 2, then one training step with batch 2."""
    spec = get_model_spec(name)
    torch.manual_seed(0)
    model = spec.build().eval()
    with torch.inference_mode():
        for batch in (1, 2):
            inputs = _inputs(spec, batch, 64, seed=batch)
            out = model.predict(*inputs)
            assert out.shape == (batch, spec.num_classes, 64, 64)
            assert out.dtype == torch.float32
            assert torch.isfinite(out).all()
            if spec.task == "change":
                full = model(*inputs)
                assert len(full) == 4
                assert all(o.shape == out.shape for o in full)
                assert torch.equal(full[0], out)

    model.train()
    inputs = _inputs(spec, 2, 32, seed=3)
    gen = torch.Generator().manual_seed(4)
    target = torch.randint(0, spec.num_classes, (2, 32, 32), generator=gen)
    out = model(*inputs)
    if isinstance(out, tuple):  # AMFNet deep supervision, published weights
        loss = sum(w * F.cross_entropy(o, target) for w, o in zip((1.0, 0.5, 0.4, 0.3), out))
    else:
        loss = F.cross_entropy(out, target)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    before = first_conv.weight.detach().clone()
    loss.backward()
    assert torch.isfinite(loss)
    grad = first_conv.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    optimiser.step()
    assert not torch.equal(first_conv.weight.detach(), before)


LITE = ("amm_fusenet_lite_s2_s1_dem", "amfnet_lite_s2")


def test_lite_entries_are_landfuse_variants_after_the_papers_entries() -> None:
    names = list(ALL_NAMES)
    # Appended: the Processing enums keep the indices of the published entries.
    assert names[-2:] == list(LITE)
    assert all(get_model_spec(n).width == registry.PUBLISHED_WIDTH for n in names[:-2])
    for name in LITE:
        spec = get_model_spec(name)
        assert "LandFuse lite CPU variant" in spec.title and "not the paper's model" in spec.title
        assert "synthetic" in spec.weights_note and spec.encoder == "resnet18"
        assert spec.width < registry.PUBLISHED_WIDTH
        assert spec.model_config()["width"] == spec.width
        assert all(m.normalisation.mode != "minmax_per_tile" for m in spec.modalities)
    with pytest.raises(ModelConfigError, match="multiple of 8"):
        dataclasses.replace(get_model_spec("amfnet_s2"), width=12)


def test_lite_land_cover_entry_matches_the_three_branch_one() -> None:
    lite = get_model_spec("amm_fusenet_lite_s2_s1_dem")
    full = get_model_spec("amm_fusenet_s2_s1_dem")
    assert lite.in_channels == (13, 2, 1) and lite.task == "landcover"
    assert lite.modalities == full.modalities  # the same fixed normalisation
    assert [c.color for c in lite.classes] == HUNAN_COLOURS
    assert lite.model_config() == {
        "num_classes": 7,
        "encoder": "resnet18",
        "in_channels": [13, 2, 1],
        "output_stride": 16,
        "width": 8,
    }
    change = get_model_spec("amfnet_lite_s2")
    assert change.in_channels == (13,) and [c.name for c in change.classes] == [
        "no change",
        "change",
    ]
    assert change.modalities == get_model_spec("amfnet_s2").modalities


@pytest.mark.parametrize("name", LITE)
def test_lite_networks_are_small(name: str) -> None:
    spec = get_model_spec(name)
    model = spec.build()
    assert model.config == {**model.config, **spec.model_config()}
    params = sum(p.numel() for p in model.parameters())
    # Both lite networks together stay well under the 20 MB budget of committed weights.
    assert params * 4 < 6e6
