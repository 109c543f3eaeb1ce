"""Tests of the ResNet encoders (models/resnet.py, NETWORKS.md §1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from landfuse.models.errors import ModelConfigError, WeightsMismatchError
from landfuse.models.resnet import (
    adapt_conv1_weight,
    build_resnet,
    load_torchvision_state_dict,
    resnet18,
    resnet34,
    resnet50,
    set_bn_momentum,
)
from landfuse.models.weights import load_state_dict_checked

pytestmark = pytest.mark.unit

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference"


def _reference_keys(filename: str, prefix: str) -> list[tuple[str, list[int]]]:
    path = REFERENCE / filename
    if not path.is_file():
        pytest.skip(f"reference key list {path} is absent")
    entries = json.loads(path.read_text())["keys"]
    return [(e["key"][len(prefix) :], e["shape"]) for e in entries if e["key"].startswith(prefix)]


def _random_state_dict(keys: list[tuple[str, list[int]]], seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key, shape in keys:
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(7, dtype=torch.int64)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            out[key] = torch.randn(shape, generator=gen)
    return out


def _bn(x: torch.Tensor, bn: torch.nn.BatchNorm2d) -> torch.Tensor:
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def test_parameter_counts_equal_torchvision_without_fc() -> None:
    # torchvision totals (11,689,512 / 21,797,672 / 25,557,032) minus the 1000-class fc.
    expected = {"resnet18": 11_176_512, "resnet34": 21_284_672, "resnet50": 23_508_032}
    for name, total in expected.items():
        model = build_resnet(name)
        assert sum(p.numel() for p in model.parameters()) == total, name
        assert not any(k.startswith(("fc.", "avgpool")) for k in model.state_dict())


def test_resnet50_keys_equal_the_published_amm_fusenet_backbone() -> None:
    keys = _reference_keys("amm_fusenet_hunan_os16_state_dict.json", "backbone1.")
    model = resnet50(in_channels=13, replace_stride_with_dilation=(False, False, True))
    assert [(k, list(v.shape)) for k, v in model.state_dict().items()] == keys


def test_resnet34_keys_equal_the_published_amfnet_encoder() -> None:
    keys = _reference_keys("amfnet_state_dict.json", "net.net.")
    model = resnet34(in_channels=3)
    assert [(k, list(v.shape)) for k, v in model.state_dict().items()] == keys


def test_resnet50_state_dict_with_published_names_loads_strictly() -> None:
    keys = _reference_keys("amm_fusenet_hunan_os16_state_dict.json", "backbone2.")
    state = _random_state_dict(keys, seed=0)
    model = resnet50(in_channels=2, replace_stride_with_dilation=(False, False, True))
    load_state_dict_checked(model, state)
    for key, value in state.items():
        assert torch.equal(model.state_dict()[key], value), key
    broken = dict(state)
    del broken["layer3.2.bn2.running_var"]
    broken["layer9.weight"] = torch.zeros(1)
    with pytest.raises(WeightsMismatchError) as info:
        load_state_dict_checked(resnet50(in_channels=2), broken)
    assert info.value.missing == ("layer3.2.bn2.running_var",)
    assert info.value.unexpected == ("layer9.weight",)


def test_stage_shapes_and_output_stride() -> None:
    x = torch.rand(1, 4, 64, 64)
    cases = {
        (False, False, False): [(16, 16), (8, 8), (4, 4), (2, 2)],
        (False, False, True): [(16, 16), (8, 8), (4, 4), (4, 4)],
        (False, True, True): [(16, 16), (8, 8), (8, 8), (8, 8)],
    }
    for dilation, sizes in cases.items():
        for name in ("resnet18", "resnet50"):
            model = build_resnet(name, 4, dilation).eval()
            with torch.no_grad():
                feats = model(x)
            assert [tuple(f.shape[-2:]) for f in feats] == sizes
            assert [f.shape[1] for f in feats] == list(model.out_channels)
            assert model.output_stride == 32 // (2 ** sum(dilation))


def test_replace_stride_with_dilation_follows_torchvision() -> None:
    os16 = resnet50(replace_stride_with_dilation=(False, False, True))
    assert os16.layer4[0].conv2.stride == (1, 1)
    assert os16.layer4[0].conv2.dilation == (1, 1)  # first block keeps the previous dilation
    assert os16.layer4[1].conv2.dilation == (2, 2)
    assert os16.layer4[0].downsample[0].stride == (1, 1)
    assert os16.layer3[0].conv2.stride == (2, 2)
    os8 = resnet50(replace_stride_with_dilation=(False, True, True))
    assert os8.layer3[0].conv2.dilation == (1, 1)
    assert os8.layer3[1].conv2.dilation == (2, 2)
    assert os8.layer4[0].conv2.dilation == (2, 2)
    assert os8.layer4[2].conv2.dilation == (4, 4)
    assert os8.layer4[2].conv2.padding == (4, 4)
    light = resnet18(replace_stride_with_dilation=(False, False, True))
    assert light.layer4[1].conv1.dilation == (2, 2) and light.layer4[1].conv2.dilation == (2, 2)


def test_bottleneck_matches_functional_recomputation() -> None:
    torch.manual_seed(0)
    model = resnet50(in_channels=3).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    block = model.layer2[0]
    x = torch.rand(2, 256, 16, 16)
    out = F.relu(_bn(F.conv2d(x, block.conv1.weight), block.bn1))
    out = F.relu(_bn(F.conv2d(out, block.conv2.weight, stride=2, padding=1), block.bn2))
    out = _bn(F.conv2d(out, block.conv3.weight), block.bn3)
    identity = _bn(F.conv2d(x, block.downsample[0].weight, stride=2), block.downsample[1])
    expected = F.relu(out + identity)
    with torch.no_grad():
        assert torch.allclose(block(x), expected, atol=1e-5)
    basic = resnet18().eval().layer1[0]
    y = torch.rand(1, 64, 8, 8)
    ref = F.relu(_bn(F.conv2d(y, basic.conv1.weight, padding=1), basic.bn1))
    ref = F.relu(_bn(F.conv2d(ref, basic.conv2.weight, padding=1), basic.bn2) + y)
    with torch.no_grad():
        assert torch.allclose(basic(y), ref, atol=1e-5)


def test_adapt_conv1_weight_rule() -> None:
    torch.manual_seed(0)
    rgb = torch.randn(64, 3, 7, 7)
    for bands in (1, 2, 13):
        adapted = adapt_conv1_weight(rgb, bands)
        assert adapted.shape == (64, bands, 7, 7)
        expected = rgb.mean(dim=1, keepdim=True) * (3.0 / bands)
        for b in range(bands):
            assert torch.allclose(adapted[:, b : b + 1], expected)
        # A grey input gives the same response as the RGB filter on the grey image.
        grey = torch.rand(1, 1, 16, 16)
        out_rgb = F.conv2d(grey.expand(1, 3, 16, 16), rgb, padding=3)
        out_new = F.conv2d(grey.expand(1, bands, 16, 16), adapted, padding=3)
        assert torch.allclose(out_rgb, out_new, atol=1e-4)
    assert torch.equal(adapt_conv1_weight(rgb, 3), rgb)
    with pytest.raises(ModelConfigError):
        adapt_conv1_weight(rgb, 0)


def test_load_torchvision_state_dict_drops_fc_and_adapts_conv1() -> None:
    torch.manual_seed(0)
    source = resnet18(in_channels=3)
    state = dict(source.state_dict())
    state["fc.weight"] = torch.randn(1000, 512)
    state["fc.bias"] = torch.randn(1000)
    target = resnet18(in_channels=13)
    load_torchvision_state_dict(target, state)
    loaded = target.state_dict()
    assert torch.allclose(loaded["conv1.weight"], adapt_conv1_weight(state["conv1.weight"], 13))
    assert torch.equal(loaded["layer4.1.bn2.running_var"], state["layer4.1.bn2.running_var"])
    same = resnet18(in_channels=3)
    load_torchvision_state_dict(same, state)
    assert torch.equal(same.state_dict()["conv1.weight"], state["conv1.weight"])
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    with pytest.raises(WeightsMismatchError, match=r"layer5\.0\.conv1\.weight"):
        load_torchvision_state_dict(resnet18(in_channels=3), state)


def test_bad_configurations_raise() -> None:
    with pytest.raises(ModelConfigError, match="resnet18"):
        build_resnet("resnet101")
    with pytest.raises(ModelConfigError, match="three booleans"):
        build_resnet("resnet18", 3, (False, True))
    with pytest.raises(ModelConfigError):
        build_resnet("resnet18", 0)


def test_set_bn_momentum() -> None:
    model = resnet18()
    set_bn_momentum(model, 0.01)
    momenta = {m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert momenta == {0.01}


def _basic_resnet_params(layers: tuple[int, ...], in_channels: int, width: int) -> int:
    """Parameter count of a BasicBlock trunk, summed layer by layer (independent of the code)."""

    def conv(i: int, o: int, k: int) -> int:
        return i * o * k * k

    def bn(c: int) -> int:
        return 2 * c

    total = conv(in_channels, width, 7) + bn(width)
    inplanes = width
    for stage, blocks in enumerate(layers):
        planes = width * 2**stage
        for b in range(blocks):
            total += conv(inplanes, planes, 3) + bn(planes) + conv(planes, planes, 3) + bn(planes)
            if b == 0 and inplanes != planes:
                total += conv(inplanes, planes, 1) + bn(planes)
            inplanes = planes
    return total


def test_lite_width_scales_every_stage_and_keeps_the_names() -> None:
    assert _basic_resnet_params((2, 2, 2, 2), 3, 64) == 11_176_512  # the formula is right
    full = resnet18(13)
    for width in (8, 16, 32):
        lite = resnet18(13, width=width)
        assert lite.width == width
        assert lite.out_channels == (width, 2 * width, 4 * width, 8 * width)
        params = sum(p.numel() for p in lite.parameters())
        assert params == _basic_resnet_params((2, 2, 2, 2), 13, width)
        assert list(lite.state_dict()) == list(full.state_dict())
        assert lite.layer3[0].downsample[0].weight.shape == (4 * width, 2 * width, 1, 1)
        with torch.no_grad():
            feats = lite.eval()(torch.rand(2, 13, 64, 64))
        assert [tuple(f.shape) for f in feats] == [
            (2, width, 16, 16),
            (2, 2 * width, 8, 8),
            (2, 4 * width, 4, 4),
            (2, 8 * width, 2, 2),
        ]
    bottleneck = build_resnet("resnet50", 4, (False, False, True), width=16)
    assert bottleneck.out_channels == (64, 128, 256, 512)
    assert bottleneck.layer4[1].conv2.dilation == (2, 2)


def test_lite_trunk_trains() -> None:
    torch.manual_seed(0)
    model = resnet34(2, width=16).train()
    loss = sum(f.mean() for f in model(torch.rand(2, 2, 32, 32)))
    loss.backward()
    grads = [p.grad for p in (model.conv1.weight, model.layer4[2].conv2.weight)]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_default_width_is_torchvision_and_bad_widths_raise() -> None:
    assert resnet18().width == 64 and resnet18().conv1.weight.shape == (64, 3, 7, 7)
    with pytest.raises(ModelConfigError, match="width"):
        resnet18(width=0)
