"""Tests of AMM-FuseNet (models/amm_fusenet.py) against NETWORKS.md §2 and the reference keys.

The reference code cannot run here, so its quirks are checked with independent functional
re-computations written in this file (ECA, DenseASPP, the head's concatenation order, the final
resize) and with hooks on the real modules.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landfuse.models.amm_fusenet import (
    ECA,
    AMMFuseNet,
    DenseASPP,
    branch_names,
    load_official_state_dict,
)
from landfuse.models.errors import InputShapeError, ModelConfigError, WeightsMismatchError

pytestmark = pytest.mark.unit

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference"
HUNAN_JSON = REFERENCE / "amm_fusenet_hunan_os16_state_dict.json"


def _reference() -> dict[str, Any]:
    if not HUNAN_JSON.is_file():
        pytest.skip(f"reference key list {HUNAN_JSON} is absent")
    return json.loads(HUNAN_JSON.read_text())


def _randomise_bn(model: torch.nn.Module, seed: int) -> None:
    """Give every BatchNorm non-trivial statistics so that eval-mode checks mean something."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
                m.bias.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)


def _bn(x: torch.Tensor, bn: torch.nn.BatchNorm2d) -> torch.Tensor:
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def _eca_reference(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """sigmoid(conv1d over channels of the channel means, kernel 3, zero padding) * x."""
    m = x.mean(dim=(2, 3))  # [B, C]
    p = F.pad(m, (1, 1))
    z = w[0] * p[:, :-2] + w[1] * p[:, 1:-1] + w[2] * p[:, 2:]
    return x * torch.sigmoid(z)[:, :, None, None]


def _dense_aspp_reference(x: torch.Tensor, d: DenseASPP) -> torch.Tensor:
    outs = []
    feature = x
    for k, rate in enumerate((3, 6, 12, 18), start=1):
        mod = getattr(d, f"asppConv_{k}")
        y = _bn(F.conv2d(feature, mod[0].weight, padding=rate, dilation=rate), mod[1])
        y = F.relu(_eca_reference(y, mod[2].conv.weight.view(-1)))
        outs.append(y)
        feature = torch.cat([feature, y], dim=1)
    pooled = x.mean(dim=(2, 3), keepdim=True)
    pooled = F.relu(_bn(F.conv2d(pooled, d.asppPooling[1].weight), d.asppPooling[2]))
    pooled = pooled.expand(-1, -1, x.shape[2], x.shape[3])
    res = torch.cat([x, *outs, pooled], dim=1)
    return F.relu(_bn(F.conv2d(res, d.project[0].weight), d.project[1]))


@pytest.fixture(scope="module")
def hunan() -> AMMFuseNet:
    torch.manual_seed(0)
    model = AMMFuseNet((13, 2), 7, 16, "resnet50")
    _randomise_bn(model, seed=1)
    return model.eval()


@pytest.fixture(scope="module")
def hunan_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    return torch.rand(2, 13, 64, 64, generator=gen), torch.rand(2, 2, 64, 64, generator=gen)


def test_state_dict_equals_reference_keys_order_and_shapes(hunan: AMMFuseNet) -> None:
    ref = _reference()
    expected = [(e["key"], e["shape"]) for e in ref["keys"]]
    assert [(k, list(v.shape)) for k, v in hunan.state_dict().items()] == expected
    params = sum(p.numel() for p in hunan.parameters())
    assert params == ref["meta"]["params"]["total"] == 62_332_663
    assert sum(v.numel() for v in hunan.state_dict().values()) == 62_447_480
    dtypes = {e["key"]: e["dtype"] for e in ref["keys"]}
    for k, v in hunan.state_dict().items():
        assert str(v.dtype).replace("torch.", "") == dtypes[k], k


def test_output_stride_8_has_the_same_state_dict() -> None:
    ref = _reference()
    os8 = AMMFuseNet((13, 2), 7, 8)
    assert [(k, list(v.shape)) for k, v in os8.state_dict().items()] == [
        (e["key"], e["shape"]) for e in ref["keys"]
    ]
    assert os8.backbone1.layer3[1].conv2.dilation == (2, 2)
    assert os8.backbone2.layer4[1].conv2.dilation == (4, 4)


def test_eca_matches_hand_written_formula() -> None:
    torch.manual_seed(0)
    for channels in (5, 48, 256):
        eca = ECA(channels)
        assert eca.conv.weight.shape == (1, 1, 3)  # kernel 3 whatever the channel count
        assert eca.conv.bias is None
        x = torch.randn(2, channels, 6, 7)
        with torch.no_grad():
            assert torch.allclose(eca(x), _eca_reference(x, eca.conv.weight.view(-1)), atol=1e-6)


def test_dense_aspp_matches_functional_recomputation(hunan: AMMFuseNet) -> None:
    d = hunan.classifier.dense_aspp_image
    x = torch.rand(2, 256, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = d(x)
        ref = _dense_aspp_reference(x, d)
    assert out.shape == (2, 256, 16, 16)
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)


def test_dense_aspp_conv1_is_defined_but_unused() -> None:
    torch.manual_seed(0)
    d = DenseASPP(64).eval()
    x = torch.rand(1, 64, 8, 8)
    with torch.no_grad():
        before = d(x)
        d.conv1[0].weight.add_(1.0)
        d.conv1[1].running_mean.add_(3.0)
        after = d(x)
    assert torch.equal(before, after)
    assert "conv1.0.weight" in d.state_dict()


def test_classifier_input_order_and_final_resize(
    hunan: AMMFuseNet, hunan_inputs: tuple[torch.Tensor, torch.Tensor]
) -> None:
    head = hunan.classifier
    captured: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Any:
        def hook(_module: Any, _inputs: Any, output: torch.Tensor) -> None:
            captured[name] = output.detach().clone()

        return hook

    handles = []
    for n in ("image", "dsm"):
        for level in (1, 2, 3, 4):
            handles.append(
                getattr(head, f"eca_net_{level}_{n}").register_forward_hook(keep(f"eca{level}_{n}"))
            )
        handles.append(getattr(head, f"dense_aspp_{n}").register_forward_hook(keep(f"aspp_{n}")))
    handles.append(head.register_forward_hook(keep("head")))
    handles.append(
        head.classifier.register_forward_pre_hook(
            lambda _m, args: captured.__setitem__("cls_in", args[0].detach().clone())
        )
    )
    try:
        with torch.no_grad():
            out = hunan(*hunan_inputs)
    finally:
        for h in handles:
            h.remove()

    def up(t: torch.Tensor, size: torch.Size) -> torch.Tensor:
        return F.interpolate(t, size=size, mode="bilinear", align_corners=False)

    size = captured["eca1_image"].shape[2:]
    assert tuple(size) == (16, 16)
    expected = []
    for n in ("image", "dsm"):
        expected += [
            captured[f"eca1_{n}"],
            up(captured[f"eca2_{n}"], size),
            up(torch.cat([captured[f"eca3_{n}"], captured[f"eca4_{n}"]], dim=1), size),
            captured[f"aspp_{n}"],
        ]
    expected_in = torch.cat(expected, dim=1)
    assert captured["cls_in"].shape == (2, 896, 16, 16)
    assert torch.allclose(captured["cls_in"], expected_in, atol=1e-6)
    # Final resize: bilinear, align_corners=False, to the input size.
    final = F.interpolate(captured["head"], size=(64, 64), mode="bilinear", align_corners=False)
    assert torch.allclose(out, final, atol=1e-6)
    other = F.interpolate(captured["head"], size=(64, 64), mode="bilinear", align_corners=True)
    assert not torch.allclose(out, other, atol=1e-4)


def test_branches_do_not_interact_before_the_head(
    hunan: AMMFuseNet, hunan_inputs: tuple[torch.Tensor, torch.Tensor]
) -> None:
    inputs: list[torch.Tensor] = []
    hook = hunan.classifier.classifier.register_forward_pre_hook(
        lambda _m, args: inputs.append(args[0].detach().clone())
    )
    s2, s1 = hunan_inputs[0][:1], hunan_inputs[1][:1]
    try:
        with torch.no_grad():
            hunan(s2, s1)
            hunan(s2, torch.rand_like(s1))
    finally:
        hook.remove()
    assert torch.equal(inputs[0][:, :448], inputs[1][:, :448])
    assert not torch.allclose(inputs[0][:, 448:], inputs[1][:, 448:])


def test_eval_forward_shapes_and_batch_independence(
    hunan: AMMFuseNet, hunan_inputs: tuple[torch.Tensor, torch.Tensor]
) -> None:
    s2, s1 = hunan_inputs
    with torch.no_grad():
        both = hunan.predict(s2, s1)
        first = hunan.predict(s2[:1], s1[:1])
    assert both.shape == (2, 7, 64, 64) and torch.isfinite(both).all()
    assert torch.allclose(both[:1], first, atol=1e-5)


def test_three_branch_keys_generalise_the_published_ones() -> None:
    ref = _reference()
    model = AMMFuseNet((13, 2, 1), 7)
    keys = list(model.state_dict())
    assert branch_names(3) == ("image", "dsm", "m3")
    published = [e["key"] for e in ref["keys"]]
    assert [k for k in keys if not k.startswith("backbone3.") and "_m3" not in k] == published
    dsm = [k for k in keys if "_dsm" in k]
    m3 = [k for k in keys if "_m3" in k]
    assert [k.replace("_dsm", "_m3") for k in dsm] == m3
    b2 = [k[len("backbone2.") :] for k in keys if k.startswith("backbone2.")]
    b3 = [k[len("backbone3.") :] for k in keys if k.startswith("backbone3.")]
    assert b2 == b3
    assert keys.index("backbone3.conv1.weight") < keys.index("classifier.project_image.0.weight")
    sd = model.state_dict()
    assert sd["backbone3.conv1.weight"].shape == (64, 1, 7, 7)
    assert sd["classifier.classifier.0.weight"].shape == (256, 448 * 3, 3, 3)


def test_three_branch_forward_and_order_of_parts() -> None:
    torch.manual_seed(0)
    model = AMMFuseNet((3, 2, 1), 4, encoder="resnet18").eval()
    x = [torch.rand(1, c, 64, 64) for c in (3, 2, 1)]
    inputs: list[torch.Tensor] = []
    hook = model.classifier.classifier.register_forward_pre_hook(
        lambda _m, args: inputs.append(args[0].detach().clone())
    )
    try:
        with torch.no_grad():
            out = model(*x)
            model(x[0], x[1], torch.rand_like(x[2]))
    finally:
        hook.remove()
    assert out.shape == (1, 4, 64, 64)
    assert torch.equal(inputs[0][:, : 2 * 448], inputs[1][:, : 2 * 448])
    assert not torch.allclose(inputs[0][:, 2 * 448 :], inputs[1][:, 2 * 448 :])


@pytest.mark.parametrize("encoder", ["resnet18", "resnet34"])
@pytest.mark.parametrize("stride", [16, 8])
def test_light_variants(encoder: str, stride: int) -> None:
    torch.manual_seed(0)
    model = AMMFuseNet((13, 1), 5, stride, encoder).eval()
    sd = model.state_dict()
    assert sd["classifier.dense_aspp_image.asppConv_1.0.weight"].shape == (256, 64, 3, 3)
    assert sd["classifier.dense_aspp_dsm.project.0.weight"].shape == (256, 5 * 256 + 64, 1, 1)
    assert sd["classifier.project_block4_image.0.weight"].shape == (48, 512, 1, 1)
    assert sd["classifier.classifier.0.weight"].shape == (256, 896, 3, 3)
    with torch.no_grad():
        out = model(torch.rand(2, 13, 64, 64), torch.rand(2, 1, 64, 64))
    assert out.shape == (2, 5, 64, 64) and torch.isfinite(out).all()
    assert model.config == {
        "in_channels": [13, 1],
        "num_classes": 5,
        "output_stride": stride,
        "encoder": encoder,
    }


def test_training_step_batch_2_and_unused_conv1_gets_no_gradient() -> None:
    torch.manual_seed(0)
    model = AMMFuseNet((4, 1), 3, 16, "resnet18").train()
    x = (torch.rand(2, 4, 32, 32), torch.rand(2, 1, 32, 32))
    target = torch.randint(0, 3, (2, 32, 32))
    loss = F.cross_entropy(model(*x), target)
    loss.backward()
    head = model.classifier
    for p in (model.backbone1.conv1.weight, model.backbone2.conv1.weight, head.classifier[3].bias):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    assert head.dense_aspp_image.conv1[0].weight.grad is None
    with pytest.raises(ValueError):  # BatchNorm after global pooling needs batches >= 2
        model(x[0][:1], x[1][:1])


def test_published_checkpoint_round_trip(tmp_path: Path, hunan: AMMFuseNet) -> None:
    optimiser = torch.optim.SGD(hunan.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    checkpoint = {
        "cur_itrs": 1200,
        "model_state": hunan.state_dict(),
        "optimizer_state": optimiser.state_dict(),
        "scheduler_state": {"last_epoch": 1200, "base_lrs": [0.01, 0.01, 0.01], "power": 0.9},
        # The reference script stores the best mean IoU as a numpy float64.
        "best_score": np.float64(0.6123),
    }
    path = tmp_path / "best_dual_parasingle_nopretrained_hunan_os16.pth"
    torch.save(checkpoint, path)
    torch.manual_seed(123)
    fresh = AMMFuseNet((13, 2), 7, 16)
    load_official_state_dict(fresh, path)
    fresh.eval()
    x = (torch.rand(1, 13, 64, 64), torch.rand(1, 2, 64, 64))
    with torch.no_grad():
        assert torch.equal(fresh(*x), hunan(*x))


def test_module_prefixed_plain_state_dict_loads(hunan: AMMFuseNet) -> None:
    prefixed = {f"module.{k}": v for k, v in hunan.state_dict().items()}
    fresh = AMMFuseNet((13, 2), 7, 16)
    load_official_state_dict(fresh, {"model_state": prefixed})
    for k, v in hunan.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k


def test_mismatched_checkpoint_lists_every_problem(hunan: AMMFuseNet) -> None:
    state = dict(hunan.state_dict())
    state["backbone2.conv1.weight"] = torch.zeros(64, 1, 7, 7)  # a DEM checkpoint
    del state["classifier.eca_net_4_dsm.conv.weight"]
    state["classifier.extra.weight"] = torch.zeros(3)
    with pytest.raises(WeightsMismatchError) as info:
        load_official_state_dict(AMMFuseNet((13, 2), 7), {"model_state": state})
    err = info.value
    assert err.missing == ("classifier.eca_net_4_dsm.conv.weight",)
    assert err.unexpected == ("classifier.extra.weight",)
    assert err.mismatched == (("backbone2.conv1.weight", (64, 1, 7, 7), (64, 2, 7, 7)),)
    for text in ("eca_net_4_dsm", "classifier.extra.weight", "backbone2.conv1.weight"):
        assert text in str(err)


def test_input_and_config_errors(hunan: AMMFuseNet) -> None:
    with pytest.raises(InputShapeError, match="2 tensors"):
        hunan(torch.rand(1, 13, 32, 32))
    with pytest.raises(InputShapeError, match="Modality 2"):
        hunan(torch.rand(1, 13, 32, 32), torch.rand(1, 1, 32, 32))
    with pytest.raises(InputShapeError, match="grid"):
        hunan(torch.rand(1, 13, 32, 32), torch.rand(1, 2, 64, 64))
    with pytest.raises(ModelConfigError, match="two modalities"):
        AMMFuseNet((13,))
    with pytest.raises(ModelConfigError, match="16 or 8"):
        AMMFuseNet((13, 2), output_stride=32)
    with pytest.raises(ModelConfigError, match="resnet50"):
        AMMFuseNet((13, 2), encoder="vgg16")


def _head_params(branches: int, low: int, width: int, classes: int) -> int:
    """Parameter count of the fusion head, from NETWORKS.md §2 with channels scaled by width/64."""
    p, a = 48 * width // 64, 256 * width // 64

    def cbr(i: int, o: int, k: int = 1) -> int:
        return i * o * k * k + 2 * o

    per_branch = (
        cbr(low, p) + cbr(2 * low, p) + cbr(4 * low, p) + cbr(8 * low, p)  # projections
        + 4 * 3  # four ECAs, kernel 3
        + cbr(low, a)  # DenseASPP conv1 (unused, but a parameter)
        + sum(cbr(low + k * a, a, 3) + 3 for k in range(4))  # asppConv_1..4 with their ECA
        + cbr(low, a)  # pooling branch
        + cbr(5 * a + low, a)  # project
    )  # fmt: skip
    classifier = cbr(branches * (4 * p + a), a, 3) + a * classes + classes
    return branches * per_branch + classifier


def _resnet_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_head_formula_reproduces_the_published_count() -> None:
    # Two ResNet-50 encoders (13 and 2 bands) + the published head = 62,332,663 (NETWORKS.md).
    encoders = 2 * 23_508_032 - 64 * 3 * 49 * 2 + 64 * 49 * (13 + 2)
    assert encoders + _head_params(2, 256, 64, 7) == 62_332_663


@pytest.mark.parametrize("width", [8, 16])
def test_lite_width_scales_encoders_and_head(width: int) -> None:
    torch.manual_seed(0)
    model = AMMFuseNet((13, 2, 1), 7, 16, "resnet18", width=width)
    with torch.device("meta"):  # shapes only: nothing allocated, no slow initialisation
        reference = AMMFuseNet((13, 2, 1), 7, 16, "resnet18")
    sd = model.state_dict()
    assert list(sd) == list(reference.state_dict())  # same names, same order
    p, a = 3 * width // 4, 4 * width
    assert sd["backbone3.conv1.weight"].shape == (width, 1, 7, 7)
    assert sd["classifier.project_image.0.weight"].shape == (p, width, 1, 1)
    assert sd["classifier.project_block4_m3.0.weight"].shape == (p, 8 * width, 1, 1)
    assert sd["classifier.dense_aspp_dsm.asppConv_4.0.weight"].shape == (a, width + 3 * a, 3, 3)
    assert sd["classifier.classifier.0.weight"].shape == (a, 3 * (4 * p + a), 3, 3)
    assert sd["classifier.classifier.3.weight"].shape == (7, a, 1, 1)
    encoders = sum(_resnet_params(b) for b in model.backbones)
    assert _resnet_params(model) == encoders + _head_params(3, width, width, 7)
    assert _resnet_params(model) < _resnet_params(reference) / 10
    assert model.config == {
        "in_channels": [13, 2, 1],
        "num_classes": 7,
        "output_stride": 16,
        "encoder": "resnet18",
        "width": width,
    }
    with torch.device("meta"):
        rebuilt = AMMFuseNet(**model.config)
    assert [tuple(v.shape) for v in rebuilt.state_dict().values()] == [
        tuple(v.shape) for v in sd.values()
    ]
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(2, 13, 64, 64), torch.rand(2, 2, 64, 64), torch.rand(2, 1, 64, 64))
    assert out.shape == (2, 7, 64, 64) and torch.isfinite(out).all()


def test_lite_training_step_and_width_validation() -> None:
    torch.manual_seed(0)
    model = AMMFuseNet((13, 2, 1), 7, 16, "resnet18", width=8).train()
    x = (torch.rand(2, 13, 32, 32), torch.rand(2, 2, 32, 32), torch.rand(2, 1, 32, 32))
    loss = F.cross_entropy(model(*x), torch.randint(0, 7, (2, 32, 32)))
    loss.backward()
    for p in (model.backbone3.conv1.weight, model.classifier.dense_aspp_m3.asppConv_4[0].weight):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    with torch.device("meta"):
        assert "width" not in AMMFuseNet((13, 2), 7, 16, "resnet18").config  # unchanged
    for bad in (0, 12, 20, True):
        with pytest.raises(ModelConfigError, match="multiple of 8"):
            AMMFuseNet((13, 2), width=bad)
