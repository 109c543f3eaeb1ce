"""ResNet-18/34/50 encoders with torchvision's parameter names, in torch only (NETWORKS.md §1).

The modules are registered under the names torchvision uses (``conv1, bn1, layer1..layer4``,
blocks ``conv1, bn1, conv2, bn2[, conv3, bn3], downsample.0, downsample.1``), so torchvision's
ImageNet state_dicts load after their ``fc.*`` entries are dropped (see
:func:`load_torchvision_state_dict`). There is no ``fc`` and no ``avgpool``: ``forward`` returns
the four stage outputs.

``replace_stride_with_dilation`` follows torchvision: entry ``i`` replaces the stride 2 of
``layer{i+2}`` by a dilation, the first block of a dilated stage keeps the previous dilation in
its 3×3 convolution and the following blocks use the new one. torchvision refuses dilation in
BasicBlock; here a dilated BasicBlock dilates both of its 3×3 convolutions (padding = dilation),
which changes no parameter shape. This is what the light AMM-FuseNet variants (ResNet-18/34 at
output stride 16 or 8) use; it is a LandFuse extension, not torchvision behaviour.

``width`` (LandFuse, not torchvision) is the channel count of the stem and of ``layer1``'s
blocks; ``layer2..layer4`` are 2×, 4× and 8× as wide (times the Bottleneck expansion), exactly as
torchvision's 64 / 128 / 256 / 512. The default 64 is torchvision's network, with its parameter
names and shapes. Smaller widths (8 to 32) make the "lite" trunks of the CPU demo models: the
same depth and names with every channel count scaled, about ``(width / 64)²`` of the parameters.
"""

from __future__ import annotations

import logging
from typing import Mapping, Sequence, Union

import torch
from torch import nn

from .errors import ModelConfigError
from .state_dicts import load_state_dict_checked

__all__ = [
    "DEFAULT_WIDTH",
    "RESNET_NAMES",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "adapt_conv1_weight",
    "build_resnet",
    "load_torchvision_state_dict",
    "resnet18",
    "resnet34",
    "resnet50",
    "set_bn_momentum",
]

logger = logging.getLogger(__name__)

RESNET_NAMES: tuple[str, ...] = ("resnet18", "resnet34", "resnet50")
#: torchvision's stem / layer1 channel count; other widths are LandFuse's lite trunks.
DEFAULT_WIDTH = 64


def _conv3x3(inplanes: int, planes: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(
        inplanes,
        planes,
        kernel_size=3,
        stride=stride,
        padding=dilation,
        dilation=dilation,
        bias=False,
    )


def _conv1x1(inplanes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes, 1, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """1×1 → 3×3 (carries the stride: ResNet v1.5) → 1×1 with a residual connection (ResNet-50)."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        width = planes
        self.conv1 = _conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride, dilation)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + identity
        return self.relu(out)


_Block = Union[type[BasicBlock], type[Bottleneck]]


class ResNet(nn.Module):
    """A ResNet trunk without ``avgpool`` and ``fc``; ``forward`` returns the four stages.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: number of blocks per stage.
        in_channels: number of input bands (``conv1`` input channels).
        replace_stride_with_dilation: three booleans for layer2..layer4, as in torchvision.
        width: channels of the stem and ``layer1`` (torchvision: 64); the stages are
            ``width × (1, 2, 4, 8)`` (times 4 for Bottleneck outputs).

    Raises:
        ModelConfigError: for a bad band count, dilation list or width.
    """

    def __init__(
        self,
        block: _Block,
        layers: Sequence[int],
        in_channels: int = 3,
        replace_stride_with_dilation: Sequence[bool] | None = None,
        width: int = DEFAULT_WIDTH,
    ) -> None:
        super().__init__()
        if int(width) < 1:
            raise ModelConfigError(f"A ResNet width must be at least 1 channel, got {width}.")
        if int(in_channels) < 1:
            raise ModelConfigError(f"A ResNet needs at least one input band, got {in_channels}.")
        if replace_stride_with_dilation is None:
            replace_stride_with_dilation = (False, False, False)
        if len(replace_stride_with_dilation) != 3:
            raise ModelConfigError(
                "replace_stride_with_dilation needs three booleans (layer2, layer3, layer4), "
                f"got {list(replace_stride_with_dilation)}."
            )
        self.in_channels = int(in_channels)
        self.replace_stride_with_dilation = tuple(bool(v) for v in replace_stride_with_dilation)
        self.width = int(width)
        w = self.width
        self._inplanes = w
        self._dilation = 1
        self.conv1 = nn.Conv2d(self.in_channels, w, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, w, layers[0])
        self.layer2 = self._make_layer(block, 2 * w, layers[1], 2, replace_stride_with_dilation[0])
        self.layer3 = self._make_layer(block, 4 * w, layers[2], 2, replace_stride_with_dilation[1])
        self.layer4 = self._make_layer(block, 8 * w, layers[3], 2, replace_stride_with_dilation[2])
        self.out_channels: tuple[int, int, int, int] = (
            w * block.expansion,
            2 * w * block.expansion,
            4 * w * block.expansion,
            8 * w * block.expansion,
        )
        stride = 32
        for dilated in self.replace_stride_with_dilation:
            if dilated:
                stride //= 2
        self.output_stride = stride
        # torchvision's initialisation.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(
        self, block: _Block, planes: int, blocks: int, stride: int = 1, dilate: bool = False
    ) -> nn.Sequential:
        previous_dilation = self._dilation
        if dilate:
            self._dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self._inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self._inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers: list[nn.Module] = [
            block(self._inplanes, planes, stride, downsample, previous_dilation)
        ]
        self._inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self._inplanes, planes, dilation=self._dilation))
        return nn.Sequential(*layers)

    def forward(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the trunk.

        Args:
            x: ``[B, in_channels, H, W]``.

        Returns:
            ``(layer1, layer2, layer3, layer4)`` outputs (strides 4, 8, 16, 32 without dilation).
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c1 = self.layer1(x)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return c1, c2, c3, c4


_SPECS: dict[str, tuple[_Block, tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


def build_resnet(
    name: str,
    in_channels: int = 3,
    replace_stride_with_dilation: Sequence[bool] | None = None,
    width: int = DEFAULT_WIDTH,
) -> ResNet:
    """Build a ResNet trunk by name.

    Args:
        name: "resnet18", "resnet34" or "resnet50".
        in_channels: number of input bands.
        replace_stride_with_dilation: three booleans for layer2..layer4 (torchvision meaning).
        width: stem / ``layer1`` channels; 64 is torchvision's network, 8 to 32 a lite trunk.

    Returns:
        The randomly initialised trunk.

    Raises:
        ModelConfigError: for an unknown name or a width below 1.
    """
    if name not in _SPECS:
        raise ModelConfigError(f"Unknown encoder {name!r}; use one of {', '.join(RESNET_NAMES)}.")
    block, layers = _SPECS[name]
    return ResNet(block, layers, in_channels, replace_stride_with_dilation, width)


def resnet18(
    in_channels: int = 3,
    replace_stride_with_dilation: Sequence[bool] | None = None,
    width: int = DEFAULT_WIDTH,
) -> ResNet:
    """ResNet-18 trunk (see :func:`build_resnet`)."""
    return build_resnet("resnet18", in_channels, replace_stride_with_dilation, width)


def resnet34(
    in_channels: int = 3,
    replace_stride_with_dilation: Sequence[bool] | None = None,
    width: int = DEFAULT_WIDTH,
) -> ResNet:
    """ResNet-34 trunk (see :func:`build_resnet`)."""
    return build_resnet("resnet34", in_channels, replace_stride_with_dilation, width)


def resnet50(
    in_channels: int = 3,
    replace_stride_with_dilation: Sequence[bool] | None = None,
    width: int = DEFAULT_WIDTH,
) -> ResNet:
    """ResNet-50 trunk (see :func:`build_resnet`)."""
    return build_resnet("resnet50", in_channels, replace_stride_with_dilation, width)


def adapt_conv1_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt an ImageNet (RGB) first-convolution weight to another number of bands.

    Rule: every new input channel gets the mean of the RGB filters, scaled by ``3 / in_channels``
    so that an input whose bands all equal the same grey value gives the same response as the
    RGB network on that grey image (the summed filter mass is kept). With ``in_channels == 3``
    the weight is returned unchanged (a copy).

    Args:
        weight: ``[64, 3, 7, 7]`` (any ``[out, c, kh, kw]`` works).
        in_channels: the new band count.

    Returns:
        ``[out, in_channels, kh, kw]``.

    Raises:
        ModelConfigError: for ``in_channels < 1`` or a weight that is not 4-D.
    """
    if in_channels < 1:
        raise ModelConfigError(f"in_channels must be at least 1, got {in_channels}.")
    if weight.dim() != 4:
        raise ModelConfigError(f"Expected a 4-D conv weight, got shape {tuple(weight.shape)}.")
    if weight.shape[1] == in_channels:
        return weight.detach().clone()
    mean = weight.detach().mean(dim=1, keepdim=True)
    scale = weight.shape[1] / float(in_channels)
    return (mean * scale).repeat(1, in_channels, 1, 1).contiguous()


def load_torchvision_state_dict(model: ResNet, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load a torchvision ImageNet ResNet state_dict into a :class:`ResNet`, strictly.

    ``fc.*`` entries are dropped (the trunk has no classifier); when the trunk takes another
    number of bands than the checkpoint, ``conv1.weight`` is adapted by
    :func:`adapt_conv1_weight`. Every other key must match exactly.

    Args:
        model: the trunk to fill.
        state_dict: e.g. ``torch.load("resnet34-b627a593.pth", weights_only=True)``.

    Raises:
        WeightsMismatchError: listing missing, unexpected or mis-shaped keys.
    """
    sd = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    conv1 = sd.get("conv1.weight")
    if conv1 is not None and conv1.dim() == 4 and conv1.shape[1] != model.in_channels:
        logger.info(
            "Adapting conv1 from %d to %d input bands (mean filter x %.3f).",
            conv1.shape[1],
            model.in_channels,
            conv1.shape[1] / model.in_channels,
        )
        sd["conv1.weight"] = adapt_conv1_weight(conv1, model.in_channels)

    load_state_dict_checked(model, sd, what="torchvision ResNet checkpoint")


def set_bn_momentum(module: nn.Module, momentum: float) -> None:
    """Set the momentum of every BatchNorm layer in a module.

    The published AMM-FuseNet recipe uses 0.01 in both encoders (NETWORKS.md §2, training).

    Args:
        module: e.g. ``model.backbone1``.
        momentum: the new momentum.
    """
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum
