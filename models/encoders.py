"""Public pretrained encoder weights that fit the networks' ResNet encoders (issue 15).

Each row says where the file is, its sha256, its licence, which encoder it fits (depth, input
bands in order) and the input scaling it was trained with. The files are not shipped: the
surfaces download one on request into a cache (:mod:`landfuse.core.downloads`, sha256 checked,
loaded with ``weights_only=True``) and hand it to training as the encoders' starting point
("Initialise from…" in the Train tab, ``INIT_FROM`` in Processing, ``--init-encoders KEY`` on
the command line). Standard library only.

The SSL4EO-S12 MoCo ResNet-50s (Wang et al., 2022, distributed by torchgeo) were trained on
Sentinel-2 L1C (13 bands, reflectance / 10000) and Sentinel-1 GRD (VV, VH in dB, standardised);
they fit AMM-FuseNet's Sentinel-2 and Sentinel-1 encoders key for key (timm's ResNet-50 keys are
torchvision's). torchvision's ImageNet ResNets fit the RGB AMFNet encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

from .errors import ModelConfigError
from .sensors import SENTINEL2_L1C
from .tables import Table

__all__ = [
    "ENCODER_WEIGHTS",
    "EncoderWeights",
    "catalogue_key",
    "fitting",
    "get_encoder_weights",
    "init_text",
    "parse_init_encoders",
]


@dataclass(frozen=True)
class EncoderWeights:
    """One downloadable encoder state_dict.

    Attributes:
        key: The name the surfaces use (``--init-encoders ssl4eo_s12_s2_moco``).
        title: For people.
        url: Where the file is.
        sha256: Its sha256 (64 hex digits), or the leading digits its publisher gives in the
            file name (torchvision's convention), checked as a prefix.
        licence: The licence of the weights.
        encoder: The ResNet depth (``resnet50``, ``resnet34``): the network's encoder must be it.
        modality: The modality key whose encoder it fits (``s2``, ``s1``, ``rgb``).
        bands: Its input bands in order.
        normalisation: The input scaling it was trained with.
        filename: The cache file name.
    """

    key: str
    title: str
    url: str
    sha256: str
    licence: str
    encoder: str
    modality: str
    bands: tuple[str, ...]
    normalisation: str
    filename: str


_S2_BANDS = SENTINEL2_L1C.band_names  # B01 … B12 with B8A: the SSL4EO-S12 order

_BUILT_IN = (
    EncoderWeights(
        key="ssl4eo_s12_s2_moco",
        title="SSL4EO-S12 MoCo ResNet-50, Sentinel-2 L1C (13 bands)",
        url="https://hf.co/torchgeo/resnet50_sentinel2_all_moco/resolve/"
        "da4f3c9dbe09272eb902f3b37f46635fa4726879/resnet50_sentinel2_all_moco-df8b932e.pth",
        sha256="df8b932e2a23a0773febedf3f650aa7d342b805f7876ca5ed6b139d7245d7c09",
        licence="CC-BY-4.0 (SSL4EO-S12, distributed by torchgeo)",
        encoder="resnet50",
        modality="s2",
        bands=_S2_BANDS,
        normalisation="reflectance / 10000 (top-of-atmosphere, L1C)",
        filename="resnet50_sentinel2_all_moco-df8b932e.pth",
    ),
    EncoderWeights(
        key="ssl4eo_s12_s1_moco",
        title="SSL4EO-S12 MoCo ResNet-50, Sentinel-1 GRD (VV, VH)",
        url="https://hf.co/torchgeo/resnet50_sentinel1_all_moco/resolve/"
        "e79862c667853c10a709bdd77ea8ffbad0e0f1cf/resnet50_sentinel1_all_moco-906e4356.pth",
        sha256="906e4356da0ff06ce0388cba50dd4f310ba6abbee706c5303c129d8aead98082",
        licence="CC-BY-4.0 (SSL4EO-S12, distributed by torchgeo)",
        encoder="resnet50",
        modality="s1",
        bands=("VV", "VH"),
        normalisation="backscatter in dB, standardised per band (z-scores)",
        filename="resnet50_sentinel1_all_moco-906e4356.pth",
    ),
    EncoderWeights(
        key="imagenet_resnet34",
        title="torchvision ImageNet ResNet-34 (RGB)",
        url="https://download.pytorch.org/models/resnet34-b627a593.pth",
        sha256="b627a593",
        licence="BSD-3-Clause (torchvision); trained on ImageNet",
        encoder="resnet34",
        modality="rgb",
        bands=("R", "G", "B"),
        normalisation="RGB / 255, ImageNet mean and std",
        filename="resnet34-b627a593.pth",
    ),
    EncoderWeights(
        key="imagenet_resnet50",
        title="torchvision ImageNet ResNet-50 (RGB)",
        url="https://download.pytorch.org/models/resnet50-0676ba61.pth",
        sha256="0676ba61",
        licence="BSD-3-Clause (torchvision); trained on ImageNet",
        encoder="resnet50",
        modality="rgb",
        bands=("R", "G", "B"),
        normalisation="RGB / 255, ImageNet mean and std",
        filename="resnet50-0676ba61.pth",
    ),
)
_TABLE: Table[EncoderWeights] = Table("encoder weights", ((w.key, w) for w in _BUILT_IN))
#: The catalogue by key, read-only.
ENCODER_WEIGHTS: Mapping[str, EncoderWeights] = _TABLE.view


def get_encoder_weights(key: str) -> EncoderWeights:
    """The catalogue row of ``key``.

    Raises:
        ModelConfigError: for an unknown key; the message lists the known ones.
    """
    try:
        return ENCODER_WEIGHTS[key]
    except KeyError:
        raise ModelConfigError(
            f"Unknown pretrained encoder {key!r}; the catalogue has {', '.join(ENCODER_WEIGHTS)}."
        ) from None


def parse_init_encoders(text: str) -> Mapping[str, str]:
    """``"FILE_OR_KEY"`` (every encoder) or ``"s2=KEY,s1=FILE"`` (per modality) as a mapping
    from modality key (``"*"`` for every encoder) to a file or a catalogue key."""
    text = (text or "").strip()
    if not text:
        return {}
    if "=" not in text:
        return {"*": text}
    mapping: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"'{part}' is not MODALITY=FILE_OR_KEY (e.g. s2=ssl4eo_s12_s2_moco)")
        mapping[key.strip()] = value.strip()
    return mapping


def catalogue_key(value: str) -> Optional[EncoderWeights]:
    """The row when ``value`` is a catalogue key, else None (then it is a file)."""
    return ENCODER_WEIGHTS.get(value)


def fitting(spec) -> list[EncoderWeights]:
    """The catalogued encoders that fit a registry entry's inputs (by modality key)."""
    keys = {m.key for m in spec.modalities}
    return [row for row in ENCODER_WEIGHTS.values() if row.modality in keys]


def init_text(row: EncoderWeights, spec) -> str:
    """The ``init_encoders`` text that starts ``spec``'s encoder of ``row``'s modality from it
    (every encoder when the network shares one, as AMFNet's two dates do)."""
    keys = [m.key for m in spec.modalities]
    return f"{row.modality}={row.key}" if len(keys) > 1 and row.modality in keys else row.key
