"""Issue 15: test-time flips average the tile's prediction with its left-right and upside-down
flips, flipped back; the option reaches every surface as a run option."""

import numpy as np
import pytest
import torch

from landfuse.core.device import resolve_target
from landfuse.core.requests import LandCoverRequest, ModalityInput
from landfuse.core.run_options import RUN_OPTIONS
from landfuse.core.runner import BatchPredictor


class Ramp(torch.nn.Module):
    """Logits that depend on the position: not the same under a flip."""

    def predict(self, x):
        ramp = torch.linspace(0, 3, x.shape[-1]).view(1, 1, 1, -1).expand_as(x[:, :1])
        return torch.cat([x[:, :1] * ramp, -x[:, :1] * ramp], dim=1)


def test_flips_average_three_passes_flipped_back() -> None:
    target = resolve_target("cpu", "fp32")
    x = np.random.default_rng(0).normal(size=(2, 1, 4, 6)).astype(np.float32)
    plain = BatchPredictor(Ramp(), target, 2, channels_last=False).predict([x])
    flipped = BatchPredictor(Ramp(), target, 2, channels_last=False, flips=True).predict([x])
    t = torch.from_numpy(x)
    model = Ramp()
    expected = sum(
        torch.softmax(model.predict(t.flip(d) if d else t), 1).flip(d) if d else
        torch.softmax(model.predict(t), 1)
        for d in (0, 3, 2)
    ) / 3  # fmt: skip
    assert np.allclose(flipped, expected.numpy(), atol=1e-6)
    assert not np.allclose(flipped, plain)
    assert np.allclose(flipped.sum(axis=1), 1.0, atol=1e-5)


def test_flips_is_a_run_option_of_every_request() -> None:
    assert "flips" in [o.name for o in RUN_OPTIONS]
    request = LandCoverRequest(
        inputs=(ModalityInput("s2", ("a.tif",)),), model="m", weights="w.pt", output_dir="o",
        flips="FLIPS",
    )  # fmt: skip
    assert request.flips == "flips"
    with pytest.raises(Exception, match="Unknown flips"):
        LandCoverRequest(
            inputs=(ModalityInput("s2", ("a.tif",)),), model="m", weights="w.pt",
            output_dir="o", flips="rotations",
        )  # fmt: skip
