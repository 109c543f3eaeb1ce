"""Tests of AMFNet (models/amfnet.py) against NETWORKS.md §3 and the reference keys.

The quirks of the reference (DPFA kernel rule and softmax over the dates, FFM reusing
``conv1_``, raw features in the concatenation branch, align_corners=True, unused modules) are
checked with independent functional re-computations and hooks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from landfuse.models.amfnet import (
    DPFA,
    FFM,
    UNUSED_PREFIXES,
    AMFNet,
    Attention,
    dpfa_kernel_size,
    load_official_state_dict,
    stage_channels,
)
from landfuse.models.errors import InputShapeError, ModelConfigError, WeightsMismatchError

pytestmark = pytest.mark.unit

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference"
AMF_JSON = REFERENCE / "amfnet_state_dict.json"


def _reference() -> dict[str, Any]:
    if not AMF_JSON.is_file():
        pytest.skip(f"reference key list {AMF_JSON} is absent")
    return json.loads(AMF_JSON.read_text())


def _randomise_bn(model: torch.nn.Module, seed: int) -> None:
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


def _cbr(x: torch.Tensor, seq: torch.nn.Sequential) -> torch.Tensor:
    conv = seq[0]
    return F.relu(_bn(F.conv2d(x, conv.weight, conv.bias), seq[1]))


def _dwconv(x: torch.Tensor, seq: torch.nn.Sequential) -> torch.Tensor:
    c = x.shape[1]
    y = F.relu(_bn(F.conv2d(x, seq[0].weight, seq[0].bias, padding=1, groups=c), seq[1]))
    return F.relu(_bn(F.conv2d(y, seq[3].weight, seq[3].bias), seq[4]))


def _dpfa_reference(
    t1: torch.Tensor, t2: torch.Tensor, m: DPFA
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """NETWORKS.md §3 DPFA written out: returns (w1, w2, d1, d2)."""
    k = m.channel_conv1.kernel_size[0]
    pooled = torch.stack(
        [t1.mean(dim=(2, 3)), t1.amax(dim=(2, 3)), t2.mean(dim=(2, 3)), t2.amax(dim=(2, 3))],
        dim=1,
    )  # [B, 4, C]
    a1 = F.conv1d(pooled, m.channel_conv1.weight, m.channel_conv1.bias, padding=k // 2)
    a2 = F.conv1d(pooled, m.channel_conv2.weight, m.channel_conv2.bias, padding=k // 2)
    # softmax over two dates == sigmoid of the difference
    c1 = torch.sigmoid(a1 - a2)[:, 0, :, None, None]
    c2 = torch.sigmoid(a2 - a1)[:, 0, :, None, None]
    maps = torch.cat(
        [
            t1.mean(dim=1, keepdim=True),
            t1.amax(dim=1, keepdim=True),
            t2.mean(dim=1, keepdim=True),
            t2.amax(dim=1, keepdim=True),
        ],
        dim=1,
    )
    s1 = F.conv2d(maps, m.spatial_conv1.weight, m.spatial_conv1.bias, padding=3)
    s2 = F.conv2d(maps, m.spatial_conv2.weight, m.spatial_conv2.bias, padding=3)
    w1 = c1 + torch.sigmoid(s1 - s2) + 1
    w2 = c2 + torch.sigmoid(s2 - s1) + 1
    d1 = _dwconv(_cbr(w1 * t1 + t1, m.conv1), m.dwconv)
    d2 = _dwconv(_cbr(w2 * t2 + t2, m.conv1), m.dwconv)
    return w1, w2, d1, d2


@pytest.fixture(scope="module")
def amf() -> AMFNet:
    torch.manual_seed(0)
    model = AMFNet(3, 2, "resnet34")
    _randomise_bn(model, seed=1)
    return model.eval()


@pytest.fixture(scope="module")
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return torch.rand(2, 3, 64, 64, generator=gen), torch.rand(2, 3, 64, 64, generator=gen)


def test_state_dict_equals_reference_keys_order_and_shapes(amf: AMFNet) -> None:
    ref = _reference()
    expected = [(e["key"], e["shape"]) for e in ref["keys"]]
    assert [(k, list(v.shape)) for k, v in amf.state_dict().items()] == expected
    assert sum(p.numel() for p in amf.parameters()) == ref["meta"]["params"]["total"] == 30_271_536
    assert sum(v.numel() for v in amf.state_dict().values()) == 30_312_046


def test_without_unused_modules() -> None:
    full = AMFNet()
    lean = AMFNet(include_unused=False)
    full_params = dict(full.named_parameters())
    lean_params = dict(lean.named_parameters())
    dropped = [k for k in full_params if k not in lean_params]
    assert len(dropped) == 52
    assert sum(full_params[k].numel() for k in dropped) == 3_721_794
    assert all(k.startswith(UNUSED_PREFIXES) for k in dropped)
    assert not any(k.startswith(UNUSED_PREFIXES) for k in lean.state_dict())


def test_dpfa_kernel_rule() -> None:
    assert [dpfa_kernel_size(c) for c in (64, 128, 256, 512)] == [3, 5, 5, 5]
    assert dpfa_kernel_size(16) == 3 and dpfa_kernel_size(2048) == 7
    model = AMFNet()
    for i, k in zip(range(1, 5), (3, 5, 5, 5)):
        dpfa = getattr(model, f"dpfa{i}")
        assert dpfa.channel_conv1.weight.shape[-1] == k
        assert dpfa.channel_conv1.padding == (k // 2,)


def test_dpfa_matches_hand_written_formula() -> None:
    torch.manual_seed(0)
    for channels in (64, 128):
        dpfa = DPFA(channels)
        _randomise_bn(dpfa, seed=channels)
        dpfa.eval()
        t1 = torch.randn(2, channels, 8, 8)
        t2 = torch.randn(2, channels, 8, 8)
        with torch.no_grad():
            w = dpfa.weights(t1, t2)
            d1, d2 = dpfa(t1, t2)
            w1, w2, r1, r2 = _dpfa_reference(t1, t2, dpfa)
        assert torch.allclose(w[0], w1, atol=1e-5) and torch.allclose(w[1], w2, atol=1e-5)
        # The two dates' weights sum to 2 + 2 (two softmaxes over dates, plus 1 each).
        assert torch.allclose(w[0] + w[1], torch.full_like(w[0], 4.0), atol=1e-5)
        assert torch.allclose(d1, r1, atol=1e-5) and torch.allclose(d2, r2, atol=1e-5)


def test_ffm_reuses_conv1_three_times() -> None:
    torch.manual_seed(0)
    ffm = FFM(128, 64)
    _randomise_bn(ffm, seed=2)
    ffm.eval()
    calls: list[tuple[int, ...]] = []
    hook = ffm.conv1_.register_forward_hook(lambda _m, _i, out: calls.append(tuple(out.shape)))
    cat = torch.randn(2, 128, 8, 8)
    diff = torch.randn(2, 64, 8, 8).abs()
    try:
        with torch.no_grad():
            out = ffm(cat, diff)
    finally:
        hook.remove()
    assert calls == [(2, 64, 1, 1), (2, 64, 8, 8), (2, 64, 8, 8)]
    a = _cbr(cat, ffm.conv1)
    a = a * _cbr(a.mean(dim=(2, 3), keepdim=True), ffm.conv1_)
    b = _dwconv(_cbr(diff, ffm.conv1_), ffm.dwconv)
    expected = _cbr(a + b, ffm.conv1_)
    assert torch.allclose(out, expected, atol=1e-5)


def test_attention_matches_hand_written_formula() -> None:
    torch.manual_seed(0)
    att = Attention(64)
    _randomise_bn(att, seed=3)
    att.eval()
    x = torch.randn(2, 64, 8, 8)
    fc1, fc2 = att.ca.fc1.weight, att.ca.fc2.weight
    avg = F.conv2d(F.relu(F.conv2d(x.mean(dim=(2, 3), keepdim=True), fc1)), fc2)
    mx = F.conv2d(F.relu(F.conv2d(x.amax(dim=(2, 3), keepdim=True), fc1)), fc2)
    ca = torch.sigmoid(avg + mx)
    xc = x * ca
    sa = torch.sigmoid(
        F.conv2d(
            torch.cat([xc.mean(dim=1, keepdim=True), xc.amax(dim=1, keepdim=True)], dim=1),
            att.sa.conv1.weight,
            padding=3,
        )
    )
    gated = torch.sigmoid(x * sa) * sa
    expected = _cbr(torch.cat([gated, x], dim=1), att.conv) + x
    with torch.no_grad():
        assert torch.allclose(att(x), expected, atol=1e-5)
    assert att.ca.fc1.weight.shape == (4, 64, 1, 1)


def test_concatenation_uses_raw_features_and_difference_uses_dpfa(
    amf: AMFNet, pair: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x1, x2 = pair
    seen: dict[str, Any] = {}
    hooks = [
        amf.ffm1.register_forward_pre_hook(lambda _m, args: seen.__setitem__("ffm1", args)),
        amf.dpfa1.register_forward_hook(lambda _m, _i, out: seen.__setitem__("dpfa1", out)),
    ]
    try:
        with torch.no_grad():
            amf(x1, x2)
            raw1 = amf.net.net(x1)[0]
            raw2 = amf.net.net(x2)[0]
    finally:
        for h in hooks:
            h.remove()
    cat, diff = seen["ffm1"]
    assert torch.allclose(cat, torch.cat([raw1, raw2], dim=1), atol=1e-6)
    d1, d2 = seen["dpfa1"]
    assert torch.allclose(diff, (d1 - d2).abs(), atol=1e-6)


def test_outputs_resized_with_align_corners_true(
    amf: AMFNet, pair: tuple[torch.Tensor, torch.Tensor]
) -> None:
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Any:
        return lambda _m, _i, out: seen.__setitem__(name, out.detach().clone())

    hooks = [
        amf.output.register_forward_hook(keep("main")),
        amf.output_aux_1.register_forward_hook(keep("aux1")),
        amf.output_aux_2.register_forward_hook(keep("aux2")),
        amf.output_aux_3.register_forward_hook(keep("aux3")),
    ]
    try:
        with torch.no_grad():
            outs = amf(*pair)
    finally:
        for h in hooks:
            h.remove()
    assert [tuple(seen[n].shape[-2:]) for n in ("main", "aux1", "aux2", "aux3")] == [
        (32, 32),
        (16, 16),
        (8, 8),
        (4, 4),
    ]
    for out, name in zip(outs, ("main", "aux1", "aux2", "aux3")):
        assert out.shape == (2, 2, 64, 64)
        up = F.interpolate(seen[name], size=(64, 64), mode="bilinear", align_corners=True)
        assert torch.allclose(out, up, atol=1e-6), name
        off = F.interpolate(seen[name], size=(64, 64), mode="bilinear", align_corners=False)
        assert not torch.allclose(out, off, atol=1e-4), name


def test_predict_equals_main_output_and_dates_are_not_symmetric(
    amf: AMFNet, pair: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x1, x2 = pair
    with torch.no_grad():
        main = amf.predict(x1, x2)
        full = amf(x1, x2)
        swapped = amf.predict(x2, x1)
    assert torch.equal(main, full[0])
    assert torch.isfinite(main).all()
    assert not torch.allclose(main, swapped, atol=1e-4)


def test_unused_modules_do_not_change_the_output(
    pair: tuple[torch.Tensor, torch.Tensor],
) -> None:
    torch.manual_seed(0)
    model = AMFNet().eval()
    with torch.no_grad():
        before = model.predict(*pair)
        for name, p in model.named_parameters():
            if name.startswith(UNUSED_PREFIXES):
                p.add_(1.0)
        after = model.predict(*pair)
    assert torch.equal(before, after)


def test_training_step_with_deep_supervision() -> None:
    torch.manual_seed(0)
    model = AMFNet(3, 2, "resnet18").train()
    x1, x2 = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    target = F.one_hot(torch.randint(0, 2, (2, 32, 32)), 2).permute(0, 3, 1, 2).float()
    outs = model(x1, x2)
    criterion = torch.nn.BCEWithLogitsLoss()
    loss = sum(w * criterion(o, target) for w, o in zip((1.0, 0.5, 0.4, 0.3), outs))
    loss.backward()
    for p in (model.net.net.conv1.weight, model.dpfa1.channel_conv1.weight, model.output[3].weight):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    assert model.fc.weight.grad is None and model.up_2[0].conv[0].weight.grad is None
    with pytest.raises(ValueError):  # BatchNorm on the FFM's pooled 1×1 map needs batch >= 2
        model(x1[:1], x2[:1])


@pytest.mark.parametrize(
    ("encoder", "bands", "classes"),
    [("resnet18", 3, 2), ("resnet34", 13, 2), ("resnet50", 4, 3)],
)
def test_encoder_band_and_class_variants(encoder: str, bands: int, classes: int) -> None:
    torch.manual_seed(0)
    model = AMFNet(bands, classes, encoder).eval()
    sd = model.state_dict()
    assert sd["net.net.conv1.weight"].shape == (64, bands, 7, 7)
    assert sd["output.3.weight"].shape == (classes, 16, 1, 1)
    assert sd["fc.weight"].shape == (2, 64, 1, 1)  # fixed in the reference
    assert ("net.neck.3.0.weight" in sd) == (encoder == "resnet50")
    with torch.no_grad():
        outs = model(torch.rand(1, bands, 64, 64), torch.rand(1, bands, 64, 64))
    assert all(o.shape == (1, classes, 64, 64) and torch.isfinite(o).all() for o in outs)
    assert model.config == {
        "in_channels": bands,
        "num_classes": classes,
        "encoder": encoder,
        "include_unused": True,
    }


def test_input_and_config_errors(amf: AMFNet) -> None:
    with pytest.raises(InputShapeError, match="64×64"):
        amf(torch.rand(1, 3, 48, 64), torch.rand(1, 3, 48, 64))
    with pytest.raises(InputShapeError, match="same shape"):
        amf(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 32, 32))
    with pytest.raises(InputShapeError, match="band mapping"):
        amf.predict(torch.rand(1, 4, 64, 64), torch.rand(1, 4, 64, 64))
    with pytest.raises(ModelConfigError, match="resnet34"):
        AMFNet(encoder="resnet101")


def test_published_checkpoint_round_trip(
    tmp_path: Path, amf: AMFNet, pair: tuple[torch.Tensor, torch.Tensor]
) -> None:
    path = tmp_path / "F1_0.9079_iou_0.8313_epoch_150.pth"
    torch.save(amf.state_dict(), path)
    torch.manual_seed(7)
    fresh = AMFNet()
    load_official_state_dict(fresh, path)
    fresh.eval()
    with torch.no_grad():
        for a, b in zip(fresh(*pair), amf(*pair)):
            assert torch.equal(a, b)


def test_module_prefix_and_lean_model_load(
    amf: AMFNet, pair: tuple[torch.Tensor, torch.Tensor]
) -> None:
    prefixed = {f"module.{k}": v for k, v in amf.state_dict().items()}
    lean = AMFNet(include_unused=False)
    load_official_state_dict(lean, prefixed)
    lean.eval()
    with torch.no_grad():
        assert torch.equal(lean.predict(*pair), amf.predict(*pair))
    # The documented mapping drops only the unused modules: any other stray key is an error.
    prefixed["module.extra.weight"] = torch.zeros(1)
    with pytest.raises(WeightsMismatchError, match=r"extra\.weight"):
        load_official_state_dict(AMFNet(include_unused=False), prefixed)


def test_mismatched_checkpoint_is_refused(amf: AMFNet) -> None:
    state = dict(amf.state_dict())
    state["net.net.conv1.weight"] = torch.zeros(64, 13, 7, 7)
    del state["att4.conv.1.running_var"]
    with pytest.raises(WeightsMismatchError) as info:
        load_official_state_dict(AMFNet(), state)
    assert info.value.missing == ("att4.conv.1.running_var",)
    assert info.value.mismatched == (("net.net.conv1.weight", (64, 13, 7, 7), (64, 3, 7, 7)),)


@pytest.mark.parametrize("width", [8, 16])
def test_lite_width_scales_every_stage(width: int) -> None:
    torch.manual_seed(0)
    model = AMFNet(13, 2, "resnet18", width=width)
    with torch.device("meta"):  # shapes only: nothing allocated, no slow initialisation
        default = AMFNet(13, 2, "resnet18")
    sd, ref = model.state_dict(), default.state_dict()
    assert list(sd) == list(ref)  # same names, same order: only shapes change
    c1, c2, c3, c4 = stage_channels(width)
    assert (c1, c2, c3, c4) == (width, 2 * width, 4 * width, 8 * width)
    assert stage_channels() == (64, 128, 256, 512)
    assert sd["net.net.conv1.weight"].shape == (width, 13, 7, 7)
    assert sd["dpfa4.conv1.0.weight"].shape == (c4, c4, 1, 1)
    assert sd["ffm3.conv1.0.weight"].shape == (c3, 2 * c3, 1, 1)
    assert sd["att1.ca.fc1.weight"].shape == (max(1, c1 // 16), c1, 1, 1)
    assert sd["up1.0.conv.0.weight"].shape == (c1 // 2, c1, 3, 3)
    assert sd["output.3.weight"].shape == (2, c1 // 4, 1, 1)
    for key, value in sd.items():  # nothing grows
        assert all(n <= r for n, r in zip(value.shape, ref[key].shape)), key
    params = sum(p.numel() for p in model.parameters())
    assert params < sum(p.numel() for p in default.parameters()) / 10
    assert model.config == {
        "in_channels": 13,
        "num_classes": 2,
        "encoder": "resnet18",
        "include_unused": True,
        "width": width,
    }
    model.eval()
    with torch.no_grad():
        outs = model(torch.rand(2, 13, 64, 64), torch.rand(2, 13, 64, 64))
    assert all(o.shape == (2, 2, 64, 64) and torch.isfinite(o).all() for o in outs)


def test_lite_parameter_counts_and_training_step() -> None:
    # Regression values of the two lite sizes (ResNet-18, 13 bands, unused modules kept).
    counts = {8: 328_276, 16: 1_282_440}
    for width, expected in counts.items():
        with torch.device("meta"):
            lean = AMFNet(13, 2, "resnet18", include_unused=False, width=width)
            full = AMFNet(13, 2, "resnet18", width=width)
        assert sum(p.numel() for p in full.parameters()) == expected
        assert sum(p.numel() for p in lean.parameters()) < expected
    torch.manual_seed(0)
    model = AMFNet(13, 2, "resnet18", width=16).train()
    x1, x2 = torch.rand(2, 13, 32, 32), torch.rand(2, 13, 32, 32)
    target = F.one_hot(torch.randint(0, 2, (2, 32, 32)), 2).permute(0, 3, 1, 2).float()
    criterion = torch.nn.BCEWithLogitsLoss()
    loss = sum(w * criterion(o, target) for w, o in zip((1.0, 0.5, 0.4, 0.3), model(x1, x2)))
    loss.backward()
    for p in (model.net.net.conv1.weight, model.att4.ca.fc1.weight, model.output[3].weight):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    with torch.device("meta"):
        assert "width" not in AMFNet().config  # the published configuration is unchanged
    for bad in (0, 4, 12, False):
        with pytest.raises(ModelConfigError, match="multiple of 8"):
            AMFNet(width=bad)
