"""Blending: the Hann window with a floor, and the band-of-rows accumulator."""

import numpy as np
import pytest

from landfuse.core.blending import RowBandAccumulator, TileBlender, blend_window, winning_class
from landfuse.core.tiling import plan_tiles

pytestmark = pytest.mark.unit


def test_window_is_symmetric_peaks_in_the_centre_and_keeps_a_floor():
    window = blend_window(64, 48, floor=0.1)
    assert window.shape == (64, 48) and window.dtype == np.float32
    np.testing.assert_allclose(window, window[::-1, :])
    np.testing.assert_allclose(window, window[:, ::-1])
    assert window.max() == pytest.approx(1.0, abs=2e-3)
    assert window.min() >= 0.1**2 - 1e-7
    assert window[32, 24] > window[0, 24] > 0
    assert not window.flags.writeable  # cached: callers must not modify it


@pytest.mark.parametrize("args", [(0, 5, 0.1), (5, 5, 0.0), (5, 5, 1.5)])
def test_window_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        blend_window(*args)


def test_identical_tile_values_blend_to_themselves():
    acc = RowBandAccumulator(channels=2, width=10, capacity=6)
    values = np.stack([np.full((6, 6), 0.3), np.full((6, 6), 0.7)]).astype(np.float32)
    acc.add(0, 0, values, blend_window(6, 6))
    acc.add(0, 4, values, blend_window(6, 6))
    out = acc.flush(6)
    assert out.row == 0 and out.covered.all()
    np.testing.assert_allclose(out.values[0], 0.3, rtol=1e-6)
    np.testing.assert_allclose(out.values[1], 0.7, rtol=1e-6)


def test_overlap_is_the_weighted_average():
    acc = RowBandAccumulator(channels=1, width=8, capacity=4)
    a = np.full((1, 4, 6), 1.0, dtype=np.float32)
    b = np.full((1, 4, 6), 3.0, dtype=np.float32)
    wa = np.full((4, 6), 1.0, dtype=np.float32)
    wb = np.full((4, 6), 3.0, dtype=np.float32)
    acc.add(0, 0, a, wa)
    acc.add(0, 2, b, wb)
    out = acc.flush(4).values[0]
    np.testing.assert_allclose(out[:, :2], 1.0)
    np.testing.assert_allclose(out[:, 2:6], (1 * 1 + 3 * 3) / 4)
    np.testing.assert_allclose(out[:, 6:], 3.0)


def test_zero_weight_pixels_are_not_covered():
    acc = RowBandAccumulator(channels=1, width=4, capacity=2)
    weights = np.array([[1, 0, 1, 1], [1, 1, 0, 1]], dtype=np.float32)
    acc.add(0, 0, np.ones((1, 2, 4), np.float32), weights)
    out = acc.flush(2)
    np.testing.assert_array_equal(out.covered, weights > 0)
    assert out.values[0][~out.covered].tolist() == [0.0, 0.0]


def test_rows_come_out_in_order_and_the_band_stays_bounded():
    acc = RowBandAccumulator(channels=1, width=5, capacity=4)
    acc.add(0, 0, np.ones((1, 4, 5), np.float32), np.ones((4, 5), np.float32))
    assert acc.flush(0) is None
    first = acc.flush(3)
    assert (first.row, first.values.shape) == (0, (1, 3, 5))
    assert acc.top == 3
    acc.add(3, 0, np.full((1, 4, 5), 2.0, np.float32), np.ones((4, 5), np.float32))
    second = acc.flush(7)
    assert second.row == 3
    np.testing.assert_allclose(second.values[0, 0], 1.5)  # row 3 seen by both tiles
    np.testing.assert_allclose(second.values[0, 1:], 2.0)
    assert acc.nbytes == 2 * 4 * 5 * 4  # sums + weights, capacity rows only
    with pytest.raises(ValueError):
        acc.add(0, 0, np.ones((1, 2, 5), np.float32), np.ones((2, 5), np.float32))  # flushed
    with pytest.raises(ValueError):
        acc.flush(100)


def test_tile_independent_predictions_reassemble_exactly():
    """No seams: when every tile predicts the same value for a pixel, the mosaic is that value."""
    rng = np.random.default_rng(7)
    height, width, channels = 90, 70, 3
    truth = rng.random((channels, height, width)).astype(np.float32)
    layout = plan_tiles(height, width, 32, 10, stride=16)
    acc = RowBandAccumulator(channels, width, layout.tile_height)
    result = np.zeros_like(truth)
    tile_row = 0

    def drain(until):
        out = acc.flush(until)
        if out is not None:
            assert out.covered.all()
            result[:, out.row : out.row + out.values.shape[1]] = out.values

    for tile in layout:
        if tile.tile_row != tile_row:
            drain(layout.rows_complete_after(tile_row))
            tile_row = tile.tile_row
        crop = truth[:, tile.row : tile.row + tile.height, tile.col : tile.col + tile.width]
        acc.add(tile.row, tile.col, crop, blend_window(tile.height, tile.width))
    drain(height)
    np.testing.assert_allclose(result, truth, rtol=1e-5, atol=1e-6)


def test_winning_class_is_argmax_and_max_with_first_wins_ties():
    rng = np.random.default_rng(3)
    values = rng.random((7, 40, 50)).astype(np.float32)
    values[:, :5, :5] = 0.25  # ties everywhere: the first channel wins, as np.argmax
    values[4, 10:20, 10:20] = 2.0
    index, top = winning_class(values)
    assert index.dtype == np.uint8 and top.dtype == np.float32
    np.testing.assert_array_equal(index, values.argmax(axis=0))
    np.testing.assert_array_equal(top, values.max(axis=0))
    assert (index[:5, :5] == 0).all() and (index[10:20, 10:20] == 4).all()
    with pytest.raises(ValueError, match="channels"):
        winning_class(np.zeros((0, 2, 2), np.float32))


# --- stripe by stripe ---------------------------------------------------------------------------


def blend_whole_width(layout, channels, tiles):
    """Reference: one band of rows across the whole width, row-major tiles."""
    acc = RowBandAccumulator(channels, layout.width, layout.tile_height)
    out = np.zeros((channels, layout.height, layout.width), np.float32)
    covered = np.zeros((layout.height, layout.width), bool)
    by_position = {(t.row, t.col): (v, w) for t, v, w in tiles}
    current = 0
    for tile in plan_tiles(layout.height, layout.width, layout.tile, layout.overlap):
        if tile.tile_row != current:
            done = acc.flush(layout.rows_complete_after(current))
            if done is not None:
                out[:, done.row : done.row + done.values.shape[1]] = done.values
                covered[done.row : done.row + done.values.shape[1]] = done.covered
            current = tile.tile_row
        values, weights = by_position[(tile.row, tile.col)]
        if values is not None:
            acc.add(tile.row, tile.col, values, weights)
    done = acc.flush(layout.height)
    out[:, done.row :] = done.values
    covered[done.row :] = done.covered
    return out, covered


@pytest.mark.parametrize("width,stripe_width", [(300, 100), (300, 60), (130, 1000), (97, 32)])
def test_blending_stripe_by_stripe_equals_blending_the_whole_width(width, stripe_width):
    rng = np.random.default_rng(width + stripe_width)
    channels, height = 3, 90
    layout = plan_tiles(height, width, 32, 8, stripe_width=stripe_width)
    tiles = []
    for tile in layout:
        if rng.random() < 0.15:  # skipped tiles (outside the area, no data)
            tiles.append((tile, None, None))
            continue
        values = rng.random((channels, tile.height, tile.width)).astype(np.float32)
        weights = blend_window(tile.height, tile.width) * (
            rng.random((tile.height, tile.width)) > 0.1
        )
        tiles.append((tile, values, weights))
    expected, expected_covered = blend_whole_width(layout, channels, tiles)

    blender = TileBlender(channels, layout)
    out = np.full((channels, height, width), np.nan, np.float32)
    written = np.zeros((height, width), np.int32)
    covered = np.zeros((height, width), bool)
    windows = []
    for tile, values, weights in tiles:
        windows += blender.add(tile, values, weights)
    windows += blender.finish()
    for w in windows:
        rows, cols = w.covered.shape
        out[:, w.row : w.row + rows, w.col : w.col + cols] = w.values
        covered[w.row : w.row + rows, w.col : w.col + cols] = w.covered
        written[w.row : w.row + rows, w.col : w.col + cols] += 1
    assert (written == 1).all()  # every pixel handed out exactly once
    np.testing.assert_array_equal(covered, expected_covered)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)
    # Memory: one band as wide as a stripe plus the shared columns, not the whole width.
    if layout.stripes > 1:
        whole = RowBandAccumulator(channels, width, layout.tile_height).nbytes
        assert blender.nbytes < whole


def test_the_blender_refuses_tiles_out_of_the_layouts_order():
    layout = plan_tiles(64, 200, 32, 8, stripe_width=64)
    tiles = layout.tiles()
    blender = TileBlender(1, layout)
    later = next(t for t in tiles if t.stripe == 2)
    with pytest.raises(ValueError, match="layout's order"):
        blender.add(later, None, None)
