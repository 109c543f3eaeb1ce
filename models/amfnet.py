"""AMFNet (Zhan et al., Remote Sensing 2024, 16(10), 1765): Siamese change detection.

Contract: NETWORKS.md §3. The module tree, state_dict keys (in order) and arithmetic are those
of the reference code (ZisenZhan/AFMNet, ``ablation_models/xiaorong_aux.py``, class ``MY_NET``,
with ``DPFA`` from ``dpcd_parts.py``):

- ``net.net``: one ResNet-34 shared by both dates (no dilation); stages c1..c4 with 64, 128,
  256, 512 channels at strides 4, 8, 16, 32.
- ``dpfa1..4``: double-pooling fuse attention of the pair; ``ffm1..4``: fusion of the
  concatenation of the **raw** encoder features and ``|d1 - d2|`` of the DPFA outputs.
- ``att1..4`` (channel + spatial attention), ``up4..up1`` (two CBR 3×3 then ×2 bilinear),
  ``output`` (main head) and ``output_aux_{3,2,1}`` (deep supervision).
- Every bilinear resize uses ``align_corners=True``.
- ``up_2, up_3, up_4, layer{1..4}_1x1, fc1..fc4, fc`` are defined but never used by the
  reference; they are in every checkpoint, so they are kept by default
  (``include_unused=True``) and a reference checkpoint loads strictly. With
  ``include_unused=False`` they are left out, and :func:`load_official_state_dict` drops exactly
  those keys (:data:`UNUSED_PREFIXES`) from a reference checkpoint, nothing else.

Beyond the paper (LandFuse): any number of input bands per date (the encoder's ``conv1``), any
number of classes, and ResNet-18/50 encoders. ResNet-18 has the same stage widths as ResNet-34.
ResNet-50's stages are 4× wider (256..2048); a shared neck ``net.neck.{0..3}`` (CBR 1×1 per
stage) reduces them to 64..512 so that every module after the encoder keeps its published
shape. The neck exists only for ResNet-50.

Lite variant (LandFuse, not the paper): ``width`` below the default 64 scales every channel count
by ``width / 64``: the encoder (``models.resnet``), the stage channels C of DPFA, FFM, attention
and the decoder (64..512 become ``width·(1, 2, 4, 8)``) and the heads and unused modules that
follow from them. Module names and key order do not change. With ResNet-18 and 13 bands the
network has 20.2 M parameters at width 64 and 1.3 M at width 16 (the registry's
``amfnet_lite_s2``, whose bundled demo weights train on two CPU cores in minutes). The decoder
attention's channel reduction keeps at least one hidden channel (``max(1, C // 16)``), which
only matters below width 16.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InputShapeError, ModelConfigError
from .resnet import DEFAULT_WIDTH, RESNET_NAMES, build_resnet
from .state_dicts import extract_state_dict, load_state_dict_checked, safe_torch_load

__all__ = [
    "DPFA",
    "FFM",
    "UNUSED_PREFIXES",
    "WIDTH_MULTIPLE",
    "AMFNet",
    "Attention",
    "ChannelAttention",
    "SpatialAttention",
    "dpfa_kernel_size",
    "load_official_state_dict",
    "stage_channels",
]

logger = logging.getLogger(__name__)

_STAGE_CHANNELS = (64, 128, 256, 512)
_SIZE_MULTIPLE = 32
#: ``width`` must be a multiple of this, so that every scaled channel count (down to the main
#: head's ``c1 // 4``) is a whole number.
WIDTH_MULTIPLE = 8


def stage_channels(width: int = DEFAULT_WIDTH) -> tuple[int, int, int, int]:
    """Stage channels C of DPFA / FFM / attention / decoder: 64..512 scaled by ``width / 64``.

    Args:
        width: 64 for the published network.

    Returns:
        ``(c1, c2, c3, c4)``.
    """
    c1, c2, c3, c4 = (c * width // DEFAULT_WIDTH for c in _STAGE_CHANNELS)
    return c1, c2, c3, c4


#: Key prefixes of the modules the reference defines but never uses (NETWORKS.md §3).
UNUSED_PREFIXES: tuple[str, ...] = (
    "up_2.",
    "up_3.",
    "up_4.",
    "layer1_1x1.",
    "layer2_1x1.",
    "layer3_1x1.",
    "layer4_1x1.",
    "fc1.",
    "fc2.",
    "fc3.",
    "fc4.",
    "fc.",
)


def dpfa_kernel_size(channels: int) -> int:
    """Kernel of DPFA's channel Conv1d: ``int((log2(C) + 1) // 2)``, made odd by +1 if even.

    64 → 3, 128 → 5, 256 → 5, 512 → 5 (NETWORKS.md §3, DPFA).

    Args:
        channels: C.

    Returns:
        The odd kernel size.
    """
    k = int((math.log2(channels) + 1) // 2)
    return k + 1 if k % 2 == 0 else k


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    # Every resize in AMFNet is bilinear with align_corners=True (NETWORKS.md §3).
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def _dwconv(channels: int) -> nn.Sequential:
    """Depthwise 3×3 (bias) → BN → ReLU → pointwise 1×1 (bias) → BN → ReLU (keys 0, 1, 3, 4)."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, 1),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
    )


def _cbr1x1(in_ch: int, out_ch: int, bias: bool = False) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 1, bias=bias), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)
    )


class _DoubleConv(nn.Module):
    """Two CBR with kernel ``k`` (keys ``conv.0, conv.1, conv.3, conv.4``)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3) -> None:
        super().__init__()
        pad = kernel // 2
        self.conv = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, kernel, padding=pad, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, kernel, padding=pad, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply both convolutions."""
        return self.conv(x)


def _up(in_ch: int, out_ch: int) -> nn.Sequential:
    """Decoder step ``up_k``: two CBR 3×3, then bilinear ×2 with align_corners=True."""
    return nn.Sequential(
        _DoubleConv(in_ch, out_ch),
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
    )


def _aux_head(in_ch: int, num_classes: int) -> nn.Sequential:
    """1×1 (bias) → BN → ReLU → Dropout2d(0.2) → 1×1 (bias) to classes (keys 0, 1, 4)."""
    mid = in_ch // 2
    return nn.Sequential(
        nn.Conv2d(in_ch, mid, 1),
        nn.BatchNorm2d(mid),
        nn.ReLU(inplace=True),
        nn.Dropout2d(0.2),
        nn.Conv2d(mid, num_classes, 1),
    )


class DPFA(nn.Module):
    """Double-pooling fuse attention of one stage (NETWORKS.md §3, DPFA).

    Channel weights: the four pooled vectors ``[avg(t1), max(t1), avg(t2), max(t2)]`` are stacked
    as 4 channels of length C; ``channel_conv1`` / ``channel_conv2`` give one vector per date;
    softmax over the two dates. Spatial weights: ``[mean_c(t1), max_c(t1), mean_c(t2),
    max_c(t2)]`` through ``spatial_conv1`` / ``spatial_conv2``, softmax over the dates.
    ``w_i = channel_i + spatial_i + 1``, ``f_i = w_i * t_i + t_i``; both dates then go through
    the **same** ``conv1`` and ``dwconv``.

    Args:
        channels: C.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        k = dpfa_kernel_size(channels)
        self.channel_conv1 = nn.Conv1d(4, 1, kernel_size=k, padding=k // 2)
        self.channel_conv2 = nn.Conv1d(4, 1, kernel_size=k, padding=k // 2)
        self.spatial_conv1 = nn.Conv2d(4, 1, kernel_size=7, padding=3)
        self.spatial_conv2 = nn.Conv2d(4, 1, kernel_size=7, padding=3)
        self.conv1 = _cbr1x1(channels, channels, bias=True)
        self.dwconv = _dwconv(channels)

    def weights(self, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
        """The fusion weights ``channel + spatial + 1`` for both dates: ``[2, B, C, H, W]``."""
        pooled = torch.cat(
            [
                F.adaptive_avg_pool2d(t1, 1),
                F.adaptive_max_pool2d(t1, 1),
                F.adaptive_avg_pool2d(t2, 1),
                F.adaptive_max_pool2d(t2, 1),
            ],
            dim=2,
        )  # [B, C, 4, 1]
        pooled = pooled.squeeze(-1).transpose(1, 2)  # [B, 4, C]
        channel = torch.stack([self.channel_conv1(pooled), self.channel_conv2(pooled)], dim=0)
        channel = torch.softmax(channel, dim=0).transpose(-1, -2).unsqueeze(-1)  # [2, B, C, 1, 1]
        maps = torch.cat(
            [
                t1.mean(dim=1, keepdim=True),
                t1.max(dim=1, keepdim=True)[0],
                t2.mean(dim=1, keepdim=True),
                t2.max(dim=1, keepdim=True)[0],
            ],
            dim=1,
        )  # [B, 4, H, W]
        spatial = torch.stack([self.spatial_conv1(maps), self.spatial_conv2(maps)], dim=0)
        spatial = torch.softmax(spatial, dim=0)  # [2, B, 1, H, W]
        return channel + spatial + 1

    def forward(self, t1: torch.Tensor, t2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fuse one stage of the pair; returns ``(d1, d2)``."""
        w = self.weights(t1, t2)
        d1 = self.dwconv(self.conv1(w[0] * t1 + t1))
        d2 = self.dwconv(self.conv1(w[1] * t2 + t2))
        return d1, d2


class FFM(nn.Module):
    """Feature fusion of the concatenation and difference branches (NETWORKS.md §3, FFM).

    ``a = conv1(cat)``; ``a = a * conv1_(avgpool(a))``; ``b = dwconv(conv1_(diff))``;
    output ``conv1_(a + b)``. The **same** ``conv1_`` module is used three times.

    Args:
        in_ch: 2C (the concatenation).
        out_ch: C.
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = _cbr1x1(in_ch, out_ch)
        self.conv1_ = _cbr1x1(out_ch, out_ch)
        self.dwconv = _dwconv(out_ch)

    def forward(self, cat: torch.Tensor, diff: torch.Tensor) -> torch.Tensor:
        """Fuse ``cat`` ([B, 2C, H, W]) and ``diff`` ([B, C, H, W])."""
        a = self.conv1(cat)
        a = a * self.conv1_(F.adaptive_avg_pool2d(a, 1))
        b = self.dwconv(self.conv1_(diff))
        return self.conv1_(a + b)


class SpatialAttention(nn.Module):
    """``sigmoid(conv7x7([mean_c(x), max_c(x)]))`` (no bias)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, 7, padding=3, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, a=1)  # as the reference

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Spatial weights ``[B, 1, H, W]``."""
        maps = torch.cat([x.mean(dim=1, keepdim=True), x.max(dim=1, keepdim=True)[0]], dim=1)
        return torch.sigmoid(self.conv1(maps))


class ChannelAttention(nn.Module):
    """``sigmoid(fc2(relu(fc1(avg))) + fc2(relu(fc1(max))))`` with a reduction of 16."""

    def __init__(self, channels: int, ratio: int = 16) -> None:
        super().__init__()
        # At least one hidden channel: only a lite network (C < 16) needs the floor; the
        # published widths (64..512) give C // 16 as in the paper.
        hidden = max(1, channels // ratio)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)
        for conv in (self.fc1, self.fc2):
            nn.init.kaiming_normal_(conv.weight, a=1)  # as the reference

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Channel weights ``[B, C, 1, 1]``."""
        avg = self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1))))
        mx = self.fc2(F.relu(self.fc1(F.adaptive_max_pool2d(x, 1))))
        return torch.sigmoid(avg + mx)


class Attention(nn.Module):
    """The decoder attention ``att_l`` (NETWORKS.md §3, attention).

    ``ca = ChannelAttention(x)``; ``sa = SpatialAttention(x * ca)``;
    ``out = conv(cat[sigmoid(x * sa) * sa, x]) + x`` with ``conv`` = CBR 1×1 (2C → C).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.sa = SpatialAttention()
        self.ca = ChannelAttention(channels)
        self.conv = _cbr1x1(2 * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the attention with its residual connection."""
        sa = self.sa(x * self.ca(x))
        gated = torch.sigmoid(x * sa) * sa
        return self.conv(torch.cat([gated, x], dim=1)) + x


class _SharedEncoder(nn.Module):
    """Holds the shared ResNet as ``net`` (so keys read ``net.net.*``) and, for ResNet-50, the
    channel-reducing ``neck``."""

    def __init__(self, encoder: str, in_channels: int, width: int = DEFAULT_WIDTH) -> None:
        super().__init__()
        self.net = build_resnet(encoder, in_channels, width=width)
        widths = self.net.out_channels
        stages = stage_channels(width)
        self.neck: nn.ModuleList | None
        if widths != stages:
            self.neck = nn.ModuleList([_cbr1x1(w, c) for w, c in zip(widths, stages)])
        else:
            self.neck = None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.net(x)
        if self.neck is None:
            return feats
        return tuple(layer(f) for layer, f in zip(self.neck, feats))


class AMFNet(nn.Module):
    """AMFNet with the published module tree (see the module docstring).

    Args:
        in_channels: bands per date (3 for RGB, 13 for Sentinel-2...).
        num_classes: number of output classes (2 in the paper: no change, change).
        encoder: "resnet34" (published), "resnet18" or "resnet50".
        include_unused: keep the modules the reference defines but never uses, so that a
            reference checkpoint loads strictly (default True).
        width: 64 (published) or a lite width (8, 16, 32: a multiple of 8) that scales the
            encoder and every stage (see the module docstring).

    Raises:
        ModelConfigError: for an unknown encoder, a band / class count < 1 or a width that is
            not a multiple of 8.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        encoder: str = "resnet34",
        include_unused: bool = True,
        width: int = DEFAULT_WIDTH,
    ) -> None:
        super().__init__()
        if encoder not in RESNET_NAMES:
            raise ModelConfigError(
                f"Unknown encoder {encoder!r}; use one of {', '.join(RESNET_NAMES)}."
            )
        if int(in_channels) < 1 or int(num_classes) < 1:
            raise ModelConfigError(
                f"in_channels and num_classes must be at least 1, got {in_channels} and "
                f"{num_classes}."
            )
        if isinstance(width, bool) or int(width) < 1 or int(width) % WIDTH_MULTIPLE:
            raise ModelConfigError(
                f"width must be a positive multiple of {WIDTH_MULTIPLE} (64 is the published "
                f"network, 8 to 32 a lite one), got {width}."
            )
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.encoder = encoder
        self.include_unused = bool(include_unused)
        self.width = int(width)
        n = self.num_classes
        c1, c2, c3, c4 = stage_channels(self.width)

        # Registration order follows the reference so that state_dict keys come in its order.
        self.net = _SharedEncoder(encoder, self.in_channels, self.width)
        if self.include_unused:
            self.up_2 = _up(c2, c1)
            self.up_3 = _up(c3, c2)
            self.up_4 = _up(c4, c3)
        self.up4 = _up(c4, c3)
        self.up3 = _up(c3, c2)
        self.up2 = _up(c2, c1)
        self.up1 = _up(c1, c1 // 2)
        self.dpfa1 = DPFA(c1)
        self.dpfa2 = DPFA(c2)
        self.dpfa3 = DPFA(c3)
        self.dpfa4 = DPFA(c4)
        self.ffm1 = FFM(2 * c1, c1)
        self.ffm2 = FFM(2 * c2, c2)
        self.ffm3 = FFM(2 * c3, c3)
        self.ffm4 = FFM(2 * c4, c4)
        if self.include_unused:
            self.layer1_1x1 = _DoubleConv(c1, c1, kernel=1)
            self.layer2_1x1 = _DoubleConv(c2, c2, kernel=1)
            self.layer3_1x1 = _DoubleConv(c3, c3, kernel=1)
            self.layer4_1x1 = _DoubleConv(c4, c4, kernel=1)
        self.output_aux_3 = _aux_head(c3, n)
        self.output_aux_2 = _aux_head(c2, n)
        self.output_aux_1 = _aux_head(c1, n)
        self.output = nn.Sequential(
            nn.Conv2d(c1 // 2, c1 // 4, 1, bias=False),
            nn.BatchNorm2d(c1 // 4),
            nn.ReLU(inplace=True),
            nn.Conv2d(c1 // 4, n, 1, bias=False),
        )
        if self.include_unused:
            # Defined with fixed widths (and 2 outputs for fc) in the reference, whatever the
            # number of classes.
            self.fc1 = nn.Conv2d(2 * c4, c4, 1)
            self.fc2 = nn.Conv2d(c4, c3, 1)
            self.fc3 = nn.Conv2d(c3, c2, 1)
            self.fc4 = nn.Conv2d(c2, c1, 1)
            self.fc = nn.Conv2d(c1, 2, 1)
        self.att1 = Attention(c1)
        self.att2 = Attention(c2)
        self.att3 = Attention(c3)
        self.att4 = Attention(c4)

    @property
    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this network (JSON-ready).

        ``width`` is present only for a lite network, so the configuration of the published one
        (and of every weights file written before lite networks existed) is unchanged.
        """
        config: dict[str, Any] = {
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "encoder": self.encoder,
            "include_unused": self.include_unused,
        }
        if self.width != DEFAULT_WIDTH:
            config["width"] = self.width
        return config

    def _check_inputs(self, x1: torch.Tensor, x2: torch.Tensor) -> None:
        for name, x in (("before", x1), ("after", x2)):
            if x.dim() != 4 or x.shape[1] != self.in_channels:
                raise InputShapeError(
                    f"The {name} image must be [B, {self.in_channels}, H, W], got "
                    f"{list(x.shape)}. Check the band mapping."
                )
        if x1.shape != x2.shape:
            raise InputShapeError(
                f"Before and after images must have the same shape, got {list(x1.shape)} and "
                f"{list(x2.shape)}. Align them to one grid first."
            )
        h, w = x1.shape[-2:]
        if h % _SIZE_MULTIPLE or w % _SIZE_MULTIPLE:
            ph = -(-h // _SIZE_MULTIPLE) * _SIZE_MULTIPLE
            pw = -(-w // _SIZE_MULTIPLE) * _SIZE_MULTIPLE
            raise InputShapeError(
                f"AMFNet needs H and W divisible by {_SIZE_MULTIPLE}, got {h}×{w}; pad the "
                f"tiles to {ph}×{pw}."
            )

    def _decode(
        self, x1: torch.Tensor, x2: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Shared trunk: returns ``(main logits before resizing, out1, out2, out3)``."""
        f1 = self.net(x1)
        f2 = self.net(x2)
        dpfas = (self.dpfa1, self.dpfa2, self.dpfa3, self.dpfa4)
        ffms = (self.ffm1, self.ffm2, self.ffm3, self.ffm4)
        fused = []
        for dpfa, ffm, a, b in zip(dpfas, ffms, f1, f2):
            d1, d2 = dpfa(a, b)
            # The concatenation uses the raw encoder features, the difference the DPFA outputs.
            fused.append(ffm(torch.cat([a, b], dim=1), torch.abs(d1 - d2)))
        out3 = self.att3(fused[2]) + self.up4(self.att4(fused[3]))
        out2 = self.att2(fused[1]) + self.up3(out3)
        out1 = self.att1(fused[0]) + self.up2(out2)
        main = self.output(self.up1(out1))
        return main, out1, out2, out3

    def forward(
        self, x1: torch.Tensor, x2: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Detect change between two dates (not symmetric: the order matters).

        Args:
            x1: before image ``[B, in_channels, H, W]``, H and W multiples of 32.
            x2: after image, same shape.

        Returns:
            ``(main, aux1, aux2, aux3)``, each ``[B, num_classes, H, W]`` logits.

        Raises:
            InputShapeError: wrong band count, mismatched shapes or H/W not multiples of 32.
        """
        self._check_inputs(x1, x2)
        size = (int(x1.shape[-2]), int(x1.shape[-1]))
        main, out1, out2, out3 = self._decode(x1, x2)
        # The reference computes the aux heads in the order 3, 2, 1; keep it so that dropout
        # draws the same random numbers in training.
        aux3 = self.output_aux_3(out3)
        aux2 = self.output_aux_2(out2)
        aux1 = self.output_aux_1(out1)
        return (
            _resize(main, size),
            _resize(aux1, size),
            _resize(aux2, size),
            _resize(aux3, size),
        )

    def predict(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """Main output only (the auxiliary heads are skipped): ``[B, num_classes, H, W]``.

        Call ``model.eval()`` first and wrap in ``torch.inference_mode()``.

        Args:
            x1: before image.
            x2: after image.

        Returns:
            The main logits, identical to ``forward(x1, x2)[0]``.
        """
        self._check_inputs(x1, x2)
        size = (int(x1.shape[-2]), int(x1.shape[-1]))
        main = self._decode(x1, x2)[0]
        return _resize(main, size)


def load_official_state_dict(model: AMFNet, checkpoint_or_path: Any) -> None:
    """Load a checkpoint written by the reference AMFNet code into ``model``, strictly.

    The reference saves a plain ``state_dict`` (NETWORKS.md §3, reference checkpoint file);
    ``module.`` prefixes (DataParallel) are stripped, a ``state_dict`` nested under
    ``state_dict`` / ``model_state`` is found too, and files are read with ``weights_only=True``.
    When ``model`` was built with ``include_unused=False`` the keys under
    :data:`UNUSED_PREFIXES` are dropped first (documented mapping); every other key must match.

    Args:
        model: an :class:`AMFNet` whose configuration matches the checkpoint.
        checkpoint_or_path: file path, or the loaded checkpoint / state_dict.

    Raises:
        WeightsNotFoundError, UnsafeWeightsError, CorruptWeightsError: reading the file failed.
        WeightsMismatchError: missing, unexpected or mis-shaped keys (all listed).
    """

    if isinstance(checkpoint_or_path, Mapping):
        checkpoint = checkpoint_or_path
    else:
        checkpoint = safe_torch_load(checkpoint_or_path)
    state_dict = extract_state_dict(checkpoint, ("state_dict", "model_state"))
    if not model.include_unused:
        dropped = [k for k in state_dict if k.startswith(UNUSED_PREFIXES)]
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(UNUSED_PREFIXES)}
        logger.info("Dropped %d unused reference tensors.", len(dropped))
    load_state_dict_checked(model, state_dict, what="AMFNet reference checkpoint")
