"""Test-only models: a stub architecture per task, registry entries built from short tables.

``stub_spec([("s2", 6, norm), ("s1", 2, norm)], classes=3)`` is a real
:class:`~landfuse.models.registry.ModelSpec` of the stub architecture of its task (registered on
import, like a plugin's own network would be); :func:`registered` adds it to the registry for
the length of a ``with`` block, so that every surface lists it. :class:`PixelNet`, the stub
architecture's network, maps each pixel with one 1x1 convolution of all inputs: its output does
not depend on the tile, so seams show.
"""

import contextlib
from collections import namedtuple

import torch

from landfuse.models import architectures, registry
from landfuse.models.specs import BandSpec, ClassSpec, ModalitySpec, NormalisationSpec

Norm = namedtuple("Norm", "mode lower upper factor mean std", defaults=((), (), 1.0, (), ()))


class PixelNet(torch.nn.Module):
    """Logits from a fixed 1x1 convolution of all inputs (both dates for change)."""

    def __init__(self, in_channels, num_classes, encoder="", width=64, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(int(sum(in_channels)), int(num_classes), 1)

    def predict(self, *inputs):
        return self.conv(torch.cat(inputs, 1))

    def forward(self, *inputs):
        return self.predict(*inputs)


def _landcover_config(spec):
    return {"in_channels": list(spec.in_channels), "num_classes": len(spec.classes)}


def _change_config(spec):
    return {"in_channels": [spec.in_channels[0]] * 2, "num_classes": len(spec.classes)}


STUB_ARCHITECTURES = {
    "landcover": architectures.Architecture(
        name="stub_landcover",
        title="Stub land-cover network",
        module="stubmodels",
        class_name="PixelNet",
        task="landcover",
        modalities=(1, 8),
        default_encoder="resnet18",
        input_config=_landcover_config,
    ),
    "change": architectures.Architecture(
        name="stub_change",
        title="Stub change network",
        module="stubmodels",
        class_name="PixelNet",
        task="change",
        modalities=(1, 8),
        default_encoder="resnet18",
        input_config=_change_config,
    ),
}
for _row in STUB_ARCHITECTURES.values():
    if _row.name not in architectures.ARCHITECTURES:
        architectures.register_architecture(_row)


def _normalisation(norm, bands):
    """A NormalisationSpec; one mean/std/bound given for several bands is repeated."""
    if isinstance(norm, NormalisationSpec):
        return norm

    def per_band(values):
        values = tuple(float(v) for v in values)
        return values * bands if len(values) == 1 else values

    return NormalisationSpec(
        norm.mode,
        per_band(norm.lower),
        per_band(norm.upper),
        float(norm.factor),
        per_band(norm.mean),
        per_band(norm.std),
    )


def stub_spec(modalities, classes=3, tile=32, task="landcover", name="stub", sensor=""):
    """A registry entry of the stub architecture.

    ``modalities``: ``(key, bands, norm)`` each, ``bands`` a count (named ``<key>0``...) or the
    band names; ``classes`` a count (``class 0``...).
    """
    mods = []
    for key, bands, norm in modalities:
        names = [f"{key}{i}" for i in range(bands)] if isinstance(bands, int) else list(bands)
        mods.append(
            ModalitySpec(
                key,
                key.upper(),
                tuple(BandSpec(b, f"{key} band {b}", "") for b in names),
                _normalisation(norm, len(names)),
                sensor=sensor,
            )
        )
    table = tuple(ClassSpec(i, f"class {i}", (40 * i, 100, 200 - 40 * i)) for i in range(classes))
    return registry.ModelSpec(
        name=name,
        title="Stub model",
        task=task,
        architecture=STUB_ARCHITECTURES[task].name,
        modalities=tuple(mods),
        classes=table,
        tile_size=tile,
        output_stride=16,
        encoder="resnet18",
        paper="",
        weights_note="test only",
    )


@contextlib.contextmanager
def registered(spec):
    """The entry in the registry for the block (replacing a test entry of the same name)."""
    registry.unregister_model(spec.name)
    registry.register_model(spec)
    try:
        yield spec
    finally:
        registry.unregister_model(spec.name)


def random_weights(name, path):
    """A weights file of registry entry ``name`` with seeded random weights (speed and
    plumbing tests: the values do not matter)."""
    from landfuse.models.registry import get_model_spec
    from landfuse.models.weights import WeightsMetadata, save_weights

    spec = get_model_spec(name)
    torch.manual_seed(0)
    model = spec.build()
    save_weights(path, model, WeightsMetadata.for_spec(spec, config=getattr(model, "config", None)))
    return str(path)
