"""Normalisation modes, including the reference per-tile min-max computed as the paper's code."""

from dataclasses import dataclass
from typing import Tuple

import numpy as np
import pytest
import torch

from landfuse.core.errors import RequestError
from landfuse.core.normalisation import check_normalisation, normalise

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Norm:
    mode: str
    lower: Tuple[float, ...] = ()
    upper: Tuple[float, ...] = ()
    factor: float = 1.0
    mean: Tuple[float, ...] = ()
    std: Tuple[float, ...] = ()


def reference_minmax(sample: np.ndarray) -> np.ndarray:
    """The reference AMM-FuseNet preprocessing: torch float32, per band of the sample."""
    tensor = torch.from_numpy(sample.astype(np.float32))
    for i in range(tensor.shape[0]):
        tensor[i] = (tensor[i] - torch.min(tensor[i])) / (
            torch.max(tensor[i]) - torch.min(tensor[i])
        )
    return tensor.numpy()


def test_minmax_per_tile_matches_the_reference_code_exactly():
    rng = np.random.default_rng(0)
    sample = rng.integers(0, 10000, size=(13, 64, 64)).astype(np.uint16)
    ours = normalise(sample, Norm("minmax_per_tile"))
    np.testing.assert_array_equal(ours, reference_minmax(sample))
    assert ours.dtype == np.float32
    assert ours.min() == 0.0 and ours.max() == 1.0


def test_minmax_statistics_ignore_invalid_pixels_which_become_zero():
    rng = np.random.default_rng(1)
    data = rng.uniform(100, 200, size=(2, 16, 16)).astype(np.float32)
    valid = np.ones((16, 16), dtype=bool)
    valid[:4] = False
    data[:, :4] = 65535.0  # nodata must not stretch the scaling
    out = normalise(data, Norm("minmax_per_tile"), valid)
    expected = reference_minmax(data[:, 4:])
    np.testing.assert_allclose(out[:, 4:], expected, rtol=1e-6)
    assert (out[:, :4] == 0).all()


def test_minmax_constant_band_gives_zero_not_nan():
    data = np.stack([np.full((8, 8), 7.0), np.arange(64.0).reshape(8, 8)])
    out = normalise(data, Norm("minmax_per_tile"))
    assert np.isfinite(out).all()
    assert (out[0] == 0).all()
    assert out[1].max() == 1.0


def test_minmax_without_any_valid_pixel_is_all_zero():
    out = normalise(np.ones((2, 4, 4)), Norm("minmax_per_tile"), np.zeros((4, 4), bool))
    assert (out == 0).all()


def test_fixed_bounds_dem_hunan_clipped():
    dem = np.array([[[0.0, 18.0, 955.0, 1892.0, 3000.0]]])
    out = normalise(dem, Norm("fixed_bounds", lower=(18.0,), upper=(1892.0,)))
    np.testing.assert_allclose(out[0, 0], [0.0, 0.0, (955 - 18) / 1874, 1.0, 1.0], rtol=1e-6)


def test_scale_divides_8bit_rgb():
    rgb = np.array([[[0, 51, 255]]] * 3, dtype=np.uint8)
    out = normalise(rgb, Norm("scale", factor=1 / 255))
    np.testing.assert_allclose(out[:, 0], [[0.0, 0.2, 1.0]] * 3, rtol=1e-6)


def test_fixed_stats_per_band_and_broadcast_of_one_value():
    data = np.stack([np.full((2, 2), 10.0), np.full((2, 2), 20.0)])
    out = normalise(data, Norm("fixed_stats", mean=(0.0, 10.0), std=(5.0, 2.0)))
    np.testing.assert_allclose(out[0], 2.0)
    np.testing.assert_allclose(out[1], 5.0)
    one = normalise(data, Norm("fixed_stats", mean=(10.0,), std=(10.0,)))
    np.testing.assert_allclose(one[1], 1.0)


@pytest.mark.parametrize(
    "spec,match",
    [
        (Norm("zscore"), "Unknown normalisation"),
        (Norm("fixed_stats", mean=(1.0, 2.0, 3.0), std=(1.0, 1.0, 1.0)), "3 mean values for 2"),
        (Norm("fixed_stats", mean=(1.0, 2.0), std=(1.0, 0.0)), "positive std"),
        (Norm("fixed_bounds", lower=(5.0,), upper=(5.0,)), "upper > lower"),
        (Norm("scale", factor=0.0), "non-zero factor"),
    ],
)
def test_bad_normalisation_is_a_request_error(spec, match):
    with pytest.raises(RequestError, match=match):
        check_normalisation(spec, 2)
