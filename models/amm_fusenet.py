"""AMM-FuseNet (Ma, Karakuş, Rosin, Remote Sensing 2022, 14(18), 4458), generalised to N branches.

Contract: NETWORKS.md §2. With two branches the module tree, the state_dict keys (in order) and
the arithmetic are those of the reference code (oktaykarakus/ReSIF, ``AMM-FuseNet/network``):

- ``backbone1``, ``backbone2``: one ResNet per modality (no weight sharing), output stride 16
  (``replace_stride_with_dilation = [False, False, True]``) or 8 (``[False, True, True]``).
- ``classifier``: the fusion head. Per branch ``m``: ``project_m`` / ``project_block{2,3,4}_m``
  (CBR 1×1 to 48 channels), ``eca_net_{1..4}_m`` (ECA, kernel 3), ``dense_aspp_m`` (the
  channel-attention DenseASPP on the raw layer1 features, with its defined-but-unused ``conv1``).
  Branch parts ``[low, block2, block3+4, aspp]`` (448 channels) are concatenated in branch order
  and classified by ``classifier.classifier``.
- Every bilinear resize uses ``align_corners=False``.

Branch key names: branch 1 is ``image`` and branch 2 is ``dsm``, as in the published keys;
branch ``k >= 3`` is ``m{k}`` (``backbone3``, ``classifier.project_m3``,
``classifier.dense_aspp_m3``, ``classifier.eca_net_1_m3``...). Registration order generalises
the reference's: all ``project_*``, all ``dense_aspp_*``, ``classifier``, then
``project_block{2,3,4}`` branch by branch, then ``eca_net_{1..4}`` branch by branch.

Light variant (LandFuse, not the paper): ResNet-18/34 encoders; layer widths 64/128/256/512, so
the head's inputs are 64/128/256/512 channels and DenseASPP takes 64 channels (its output stays
256, and each branch still contributes 448 channels).

Lite variant (LandFuse, not the paper): ``width`` below the default 64 scales every channel count
by ``width / 64``: the encoders' stems and stages (``models.resnet``), the head's projections
(48 → ``3·width/4``), the DenseASPP branches and output (256 → ``4·width``) and the classifier's
hidden layer (256 → ``4·width``). Module names and the order of the keys do not change; only
shapes do. A three-branch ResNet-18 network has 50.3 M parameters at width 64, 3.2 M at 16 and
0.8 M at 8 (the registry's ``amm_fusenet_lite_s2_s1_dem``, whose bundled demo weights train on
two CPU cores in minutes). The head runs at stride 4 and dominates the cost, which falls about
as ``width²``. Channel attention (ECA) keeps its kernel of 3 at every width.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InputShapeError, ModelConfigError
from .resnet import DEFAULT_WIDTH, RESNET_NAMES, ResNet, build_resnet
from .state_dicts import extract_state_dict, load_state_dict_checked, safe_torch_load

__all__ = [
    "ECA",
    "WIDTH_MULTIPLE",
    "AMMFuseNet",
    "AMMFuseNetHead",
    "ASPPConv",
    "ASPPPooling",
    "DenseASPP",
    "branch_names",
    "load_official_state_dict",
]

logger = logging.getLogger(__name__)

_LOW_PROJ = 48  # channels of each projected encoder stage (NETWORKS.md §2, head)
_ASPP_OUT = 256
#: ``width`` must be a multiple of this so that every scaled channel count is a whole number.
WIDTH_MULTIPLE = 8
_ASPP_RATES = (3, 6, 12, 18)
_STRIDE_TO_DILATION = {16: (False, False, True), 8: (False, True, True)}


def branch_names(num_branches: int) -> tuple[str, ...]:
    """Key suffixes of the branches: ``image``, ``dsm``, then ``m3``, ``m4``...

    Args:
        num_branches: number of modality branches (>= 2).

    Returns:
        One suffix per branch.
    """
    return tuple(["image", "dsm"] + [f"m{k}" for k in range(3, num_branches + 1)])[:num_branches]


def _cbr(in_ch: int, out_ch: int, kernel: int = 1, padding: int = 0) -> nn.Sequential:
    """Conv2d (no bias) → BatchNorm2d → ReLU: keys ``.0`` and ``.1``."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, padding=padding, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    # Every resize in AMM-FuseNet is bilinear with align_corners=False (NETWORKS.md §2).
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class ECA(nn.Module):
    """Efficient channel attention with a fixed kernel of 3 (NETWORKS.md §2, ECA).

    ``y = sigmoid(conv1d(global_avg_pool(x)))`` over the channel axis, then ``x * y``. The
    reference passes the channel count but always uses kernel 3; so does this module.

    Args:
        channels: accepted for symmetry with the reference; the parameter does not depend on it.
    """

    def __init__(self, channels: int | None = None) -> None:
        super().__init__()
        self.channels = channels
        self.conv = nn.Conv1d(1, 1, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reweight the channels of ``x`` ([B, C, H, W])."""
        y = F.adaptive_avg_pool2d(x, 1)  # [B, C, 1, 1]
        y = self.conv(y.squeeze(-1).transpose(-1, -2))  # [B, 1, C]: convolve along channels
        y = torch.sigmoid(y.transpose(-1, -2).unsqueeze(-1))  # [B, C, 1, 1]
        return x * y


class ASPPConv(nn.Sequential):
    """Conv2d 3×3 dilated (no bias) → BN → ECA → ReLU (keys ``.0``, ``.1``, ``.2.conv``)."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False
            ),
            nn.BatchNorm2d(out_channels),
            ECA(out_channels),
            nn.ReLU(inplace=True),
        )


class ASPPPooling(nn.Sequential):
    """Global average pool → Conv2d 1×1 (no bias) → BN → ReLU → bilinear back to the input size.

    Keys ``.1`` (conv) and ``.2`` (BN); index 0 is the parameter-free pooling.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool, project and broadcast back to ``x``'s size."""
        size = x.shape[-2:]
        return _resize(super().forward(x), size)


class DenseASPP(nn.Module):
    """The channel-attention DenseASPP of one branch (NETWORKS.md §2, DenseASPP).

    Branch ``k`` (dilations 3, 6, 12, 18) sees ``cat(x, out_1, ..., out_{k-1})``; the projection
    sees ``cat(x, out_1, out_2, out_3, out_4, pool)`` and ends with Dropout(0.1). ``conv1`` is
    defined but never used, exactly as in the reference (it is in every checkpoint).

    Args:
        in_channels: channels of the layer1 features (256 for ResNet-50, 64 for ResNet-18/34).
        out_channels: 256 in the reference.
    """

    def __init__(self, in_channels: int, out_channels: int = _ASPP_OUT) -> None:
        super().__init__()
        self.conv1 = _cbr(in_channels, out_channels)  # unused by forward(), kept for the keys
        r1, r2, r3, r4 = _ASPP_RATES
        self.asppConv_1 = ASPPConv(in_channels, out_channels, r1)
        self.asppConv_2 = ASPPConv(in_channels + out_channels, out_channels, r2)
        self.asppConv_3 = ASPPConv(in_channels + 2 * out_channels, out_channels, r3)
        self.asppConv_4 = ASPPConv(in_channels + 3 * out_channels, out_channels, r4)
        self.asppPooling = ASPPPooling(in_channels, out_channels)
        self.project = nn.Sequential(
            nn.Conv2d(5 * out_channels + in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Dropout(0.1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the dense atrous pyramid to ``x``."""
        a1 = self.asppConv_1(x)
        a2 = self.asppConv_2(torch.cat((x, a1), dim=1))
        a3 = self.asppConv_3(torch.cat((x, a1, a2), dim=1))
        a4 = self.asppConv_4(torch.cat((x, a1, a2, a3), dim=1))
        pooled = self.asppPooling(x)
        return self.project(torch.cat((x, a1, a2, a3, a4, pooled), dim=1))


class AMMFuseNetHead(nn.Module):
    """The fusion head (``classifier.*``) for N branches (NETWORKS.md §2, Head).

    Args:
        low_level_channels: layer1 width (256 for ResNet-50, 64 for ResNet-18/34); layers 2-4
            are 2×, 4× and 8× as wide.
        num_classes: number of output classes.
        names: key suffix per branch (see :func:`branch_names`).
        width: 64 is the published head (projections 48, DenseASPP and classifier 256); a lite
            head scales those by ``width / 64`` (a multiple of 8).
    """

    def __init__(
        self,
        low_level_channels: int,
        num_classes: int,
        names: Sequence[str],
        width: int = DEFAULT_WIDTH,
    ) -> None:
        super().__init__()
        self.names = tuple(names)
        low = low_level_channels
        proj = _LOW_PROJ * width // DEFAULT_WIDTH
        aspp = _ASPP_OUT * width // DEFAULT_WIDTH
        self.projection_channels = proj
        self.aspp_channels = aspp
        # Registration order generalises the reference's (see the module docstring).
        for n in self.names:
            setattr(self, f"project_{n}", _cbr(low, proj))
        for n in self.names:
            setattr(self, f"dense_aspp_{n}", DenseASPP(low, aspp))
        per_branch = 2 * proj + 2 * proj + aspp  # 448 in the published head
        self.classifier = nn.Sequential(
            nn.Conv2d(per_branch * len(self.names), aspp, 3, padding=1, bias=False),
            nn.BatchNorm2d(aspp),
            nn.ReLU(inplace=True),
            nn.Conv2d(aspp, num_classes, 1),
        )
        # The reference initialises only what exists at this point (its _init_weight() runs
        # before the block projections and ECAs are created); reproduce that.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for n in self.names:
            setattr(self, f"project_block2_{n}", _cbr(2 * low, proj))
            setattr(self, f"project_block3_{n}", _cbr(4 * low, proj))
            setattr(self, f"project_block4_{n}", _cbr(8 * low, proj))
        for n in self.names:
            for level, mult in ((1, 1), (2, 2), (3, 4), (4, 8)):
                setattr(self, f"eca_net_{level}_{n}", ECA(mult * low))

    def branch_parts(self, name: str, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The four parts one branch contributes: ``[low, block2, block3+4, aspp]`` (448 ch
        in the published head).

        Args:
            name: the branch suffix.
            feats: ``(layer1, layer2, layer3, layer4)`` of that branch's encoder.

        Returns:
            Four tensors at the layer1 resolution.
        """
        f1, f2, f3, f4 = feats
        low = getattr(self, f"eca_net_1_{name}")(getattr(self, f"project_{name}")(f1))
        size = low.shape[2:]
        b2 = getattr(self, f"eca_net_2_{name}")(getattr(self, f"project_block2_{name}")(f2))
        b2 = _resize(b2, size)
        b3 = getattr(self, f"eca_net_3_{name}")(getattr(self, f"project_block3_{name}")(f3))
        b4 = getattr(self, f"eca_net_4_{name}")(getattr(self, f"project_block4_{name}")(f4))
        aspp = getattr(self, f"dense_aspp_{name}")(f1)
        b34 = _resize(torch.cat((b3, b4), dim=1), size)
        return [low, b2, b34, aspp]

    def forward(self, features: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
        """Fuse the branches.

        Args:
            features: per branch, in branch order, the four encoder stages.

        Returns:
            Logits at the layer1 resolution (stride 4).
        """
        parts: list[torch.Tensor] = []
        for name, feats in zip(self.names, features):
            parts.extend(self.branch_parts(name, feats))
        return self.classifier(torch.cat(parts, dim=1))


class AMMFuseNet(nn.Module):
    """AMM-FuseNet with one ResNet encoder per modality and the fusion head.

    Args:
        in_channels: band count per modality, in branch order (e.g. ``(13, 2)`` for S2 + S1).
        num_classes: number of output classes.
        output_stride: 16 (published default) or 8.
        encoder: "resnet50" (published) or the light "resnet34" / "resnet18".
        width: 64 (published) or a lite width (8, 16, 32: a multiple of 8) that scales the
            encoders and the head (see the module docstring).

    Raises:
        ModelConfigError: for fewer than two branches, a band count < 1, an unknown encoder,
            an output stride other than 8 or 16, or a width that is not a multiple of 8.
    """

    def __init__(
        self,
        in_channels: Sequence[int] = (13, 2),
        num_classes: int = 7,
        output_stride: int = 16,
        encoder: str = "resnet50",
        width: int = DEFAULT_WIDTH,
    ) -> None:
        super().__init__()
        bands = tuple(int(c) for c in in_channels)
        if len(bands) < 2:
            raise ModelConfigError(
                f"AMM-FuseNet fuses at least two modalities; got {len(bands)} band count(s)."
            )
        if any(c < 1 for c in bands):
            raise ModelConfigError(f"Every modality needs at least one band, got {list(bands)}.")
        if output_stride not in _STRIDE_TO_DILATION:
            raise ModelConfigError(f"output_stride must be 16 or 8, got {output_stride}.")
        if encoder not in RESNET_NAMES:
            raise ModelConfigError(
                f"Unknown encoder {encoder!r}; use one of {', '.join(RESNET_NAMES)}."
            )
        if int(num_classes) < 1:
            raise ModelConfigError(f"num_classes must be at least 1, got {num_classes}.")
        if isinstance(width, bool) or int(width) < 1 or int(width) % WIDTH_MULTIPLE:
            raise ModelConfigError(
                f"width must be a positive multiple of {WIDTH_MULTIPLE} (64 is the published "
                f"network, 8 to 32 a lite one), got {width}."
            )
        self.in_channels = bands
        self.num_classes = int(num_classes)
        self.output_stride = int(output_stride)
        self.encoder = encoder
        self.width = int(width)
        self.branch_names = branch_names(len(bands))
        dilation = _STRIDE_TO_DILATION[self.output_stride]
        low_level = 0
        for k, c in enumerate(bands, start=1):
            backbone = build_resnet(encoder, c, dilation, self.width)
            # The reference replaces conv1 after building the ResNet, so conv1 keeps torch's
            # default initialisation; do the same.
            backbone.conv1.reset_parameters()
            setattr(self, f"backbone{k}", backbone)
            low_level = backbone.out_channels[0]
        self.classifier = AMMFuseNetHead(low_level, self.num_classes, self.branch_names, self.width)

    @property
    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this network (JSON-ready).

        ``width`` is present only for a lite network, so the configuration of the published one
        (and of every weights file written before lite networks existed) is unchanged.
        """
        config: dict[str, Any] = {
            "in_channels": list(self.in_channels),
            "num_classes": self.num_classes,
            "output_stride": self.output_stride,
            "encoder": self.encoder,
        }
        if self.width != DEFAULT_WIDTH:
            config["width"] = self.width
        return config

    @property
    def backbones(self) -> tuple[ResNet, ...]:
        """The encoders, in branch order."""
        return tuple(getattr(self, f"backbone{k}") for k in range(1, len(self.in_channels) + 1))

    def _check_inputs(self, inputs: Sequence[torch.Tensor]) -> None:
        if len(inputs) != len(self.in_channels):
            raise InputShapeError(
                f"AMM-FuseNet takes {len(self.in_channels)} tensors (one per modality), got "
                f"{len(inputs)}."
            )
        size = inputs[0].shape[-2:]
        for k, (x, c) in enumerate(zip(inputs, self.in_channels), start=1):
            if x.dim() != 4 or x.shape[1] != c:
                raise InputShapeError(
                    f"Modality {k} must be [B, {c}, H, W], got {list(x.shape)}. Check the band "
                    "mapping of that input."
                )
            if x.shape[-2:] != size or x.shape[0] != inputs[0].shape[0]:
                raise InputShapeError(
                    "All modalities must share batch size and H×W (align them to one grid "
                    f"first); got {[list(t.shape) for t in inputs]}."
                )

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Segment one tile.

        Args:
            *inputs: one tensor per modality, ``[B, bands_m, H, W]``, in branch order.

        Returns:
            ``[B, num_classes, H, W]`` logits (bilinear, align_corners=False, to the input size).

        Raises:
            InputShapeError: wrong number of inputs, band counts or mismatched sizes.
        """
        self._check_inputs(inputs)
        size = inputs[0].shape[-2:]
        features = [backbone(x) for backbone, x in zip(self.backbones, inputs)]
        return _resize(self.classifier(features), size)

    def predict(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Inference entry point shared by every LandFuse network (same as :meth:`forward`).

        Call ``model.eval()`` first and wrap in ``torch.inference_mode()``.

        Args:
            *inputs: one tensor per modality, ``[B, bands_m, H, W]``.

        Returns:
            ``[B, num_classes, H, W]`` logits.
        """
        return self.forward(*inputs)


def load_official_state_dict(model: AMMFuseNet, checkpoint_or_path: Any) -> None:
    """Load a checkpoint written by the reference AMM-FuseNet code into ``model``, strictly.

    Accepted: a path, or an already loaded object. The reference training script saves
    ``{"cur_itrs", "model_state", "optimizer_state", "scheduler_state", "best_score"}``
    (NETWORKS.md §2, reference checkpoint file); the weights under ``model_state`` are used. A
    plain state_dict is accepted too, and ``module.`` prefixes (DataParallel) are stripped. Files
    are read with ``weights_only=True``.

    Args:
        model: an :class:`AMMFuseNet` whose configuration matches the checkpoint.
        checkpoint_or_path: file path, or the loaded checkpoint / state_dict.

    Raises:
        WeightsNotFoundError, UnsafeWeightsError, CorruptWeightsError: reading the file failed.
        WeightsMismatchError: missing, unexpected or mis-shaped keys (all listed).
    """

    if isinstance(checkpoint_or_path, Mapping):
        checkpoint = checkpoint_or_path
    else:
        checkpoint = safe_torch_load(checkpoint_or_path)
    state_dict = extract_state_dict(checkpoint, ("model_state", "state_dict"))
    load_state_dict_checked(model, state_dict, what="AMM-FuseNet reference checkpoint")
    logger.info("Loaded an AMM-FuseNet reference checkpoint (%d tensors).", len(state_dict))
