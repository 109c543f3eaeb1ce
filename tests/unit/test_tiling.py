"""Tiling: coverage, inward-shifted last tiles, stride checks, reflection padding."""

import numpy as np
import pytest

from landfuse.core.errors import RequestError
from landfuse.core.tiling import axis_starts, padded_size, plan_tiles, reflect_pad

pytestmark = pytest.mark.unit


def test_axis_starts_step_and_last_tile_shifted_inward():
    starts = axis_starts(100, 32, 8)
    assert starts == (0, 24, 48, 68)  # step 24, last shifted to end at 100
    assert starts[-1] + 32 == 100


def test_axis_starts_single_tile_when_raster_fits():
    assert axis_starts(20, 32, 8) == (0,)
    assert axis_starts(32, 32, 8) == (0,)


def test_axis_starts_exact_multiple_has_no_duplicate_tile():
    starts = axis_starts(96, 32, 0)
    assert starts == (0, 32, 64)


@pytest.mark.parametrize(
    "size,tile,overlap", [(0, 32, 0), (10, 0, 0), (100, 32, 32), (100, 32, -1)]
)
def test_axis_starts_rejects_bad_numbers(size, tile, overlap):
    with pytest.raises(RequestError):
        axis_starts(size, tile, overlap)


def test_tile_must_be_multiple_of_stride_and_message_suggests_one():
    with pytest.raises(RequestError, match=r"multiple of the model's output stride 32.*Try 96"):
        plan_tiles(500, 500, 100, 10, stride=32)


@pytest.mark.parametrize("seed", range(6))
def test_every_pixel_covered_tiles_inside_and_row_major(seed):
    rng = np.random.default_rng(seed)
    height, width = (int(v) for v in rng.integers(1, 300, size=2))
    tile = int(rng.choice([32, 64, 96]))
    overlap = int(rng.integers(0, tile // 2))
    layout = plan_tiles(height, width, tile, overlap, stride=32)
    covered = np.zeros((height, width), dtype=np.int32)
    previous = (-1, -1)
    for t in layout:
        assert t.row >= 0 and t.row + t.height <= height
        assert t.col >= 0 and t.col + t.width <= width
        assert (t.row, t.col) > previous  # row-major order
        previous = (t.row, t.col)
        covered[t.row : t.row + t.height, t.col : t.col + t.width] += 1
    assert covered.min() >= 1
    assert len(layout) == len(layout.tiles())
    # The network always sees stride multiples.
    assert layout.padded_height % 32 == 0 and layout.padded_width % 32 == 0


def test_small_raster_padded_to_stride_multiple_not_whole_tile():
    layout = plan_tiles(50, 300, 64, 8, stride=16)
    assert layout.padded_height == 64 and layout.tile_height == 50
    assert layout.padded_width == 64 and layout.tile_width == 64
    assert padded_size(20, 256, 16) == 32
    assert padded_size(300, 256, 16) == 256


def test_rows_complete_after_each_tile_row():
    layout = plan_tiles(100, 40, 32, 8, stride=16)
    assert layout.row_starts == (0, 24, 48, 68)
    assert [layout.rows_complete_after(i) for i in range(4)] == [24, 48, 68, 100]


def test_reflect_pad_mirrors_without_repeating_the_edge():
    array = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    padded = reflect_pad(array, (5, 6))
    assert padded.shape == (1, 5, 6)
    np.testing.assert_array_equal(padded[0, :3, :4], array[0])
    np.testing.assert_array_equal(padded[0, 3], [*array[0, 1].tolist(), 6, 5])  # row 1 mirrored
    np.testing.assert_array_equal(padded[0, 0, 4:], [2, 1])


def test_reflect_pad_longer_than_array_and_single_pixel_edge():
    long = reflect_pad(np.arange(3, dtype=np.float32).reshape(1, 1, 3)[:, :, :], (1, 9))
    np.testing.assert_array_equal(long[0, 0], [0, 1, 2, 2, 2, 2, 2, 2, 2])  # 1 row: edge mode
    two_d = reflect_pad(np.arange(6, dtype=np.float32).reshape(2, 3), (2, 10))
    np.testing.assert_array_equal(two_d[0], [0, 1, 2, 1, 0, 1, 2, 1, 0, 1])
    assert reflect_pad(two_d, (2, 10)) is two_d
    with pytest.raises(RequestError):
        reflect_pad(two_d, (1, 10))


# --- vertical stripes ---------------------------------------------------------------------------


def test_a_layout_without_stripe_width_is_one_stripe_in_row_major_order():
    layout = plan_tiles(100, 300, 32, 8)
    assert layout.stripes == 1
    tiles = layout.tiles()
    assert [(t.row, t.col) for t in tiles] == [
        (r, c) for r in layout.row_starts for c in layout.col_starts
    ]
    assert layout.stripe_owned(0) == (0, 300) and layout.stripe_span(0) == (0, 300)


@pytest.mark.parametrize("width,stripe_width", [(1000, 200), (1000, 128), (257, 64), (640, 32)])
def test_stripes_cover_every_tile_once_and_own_disjoint_columns(width, stripe_width):
    layout = plan_tiles(150, width, 32, 8, stripe_width=stripe_width)
    tiles = layout.tiles()
    assert [t.index for t in tiles] == list(range(len(layout)))
    # Every tile of the row-major layout exactly once.
    assert sorted((t.row, t.col) for t in tiles) == sorted(
        (r, c) for r in layout.row_starts for c in layout.col_starts
    )
    owned = [layout.stripe_owned(s) for s in range(layout.stripes)]
    assert owned[0][0] == 0 and owned[-1][1] == width
    assert all(a[1] == b[0] for a, b in zip(owned, owned[1:]))  # a partition of the columns
    sizes = []
    for s in range(layout.stripes):
        start, end = layout.stripe_span(s)
        mine = [t for t in tiles if t.stripe == s]
        sizes.append(len({t.col for t in mine}))
        assert end - start <= max(stripe_width, 32)  # never wider than asked (or one tile)
        assert min(t.col for t in mine) == start and max(t.col + t.width for t in mine) == end
        assert owned[s][0] == start and owned[s][1] <= end
        # Stripe by stripe, row-major inside each stripe.
        assert [(t.row, t.col) for t in mine] == sorted((t.row, t.col) for t in mine)
    assert [t.stripe for t in tiles] == sorted(t.stripe for t in tiles)
    assert max(sizes) - min(sizes) <= 1  # evenly spread, no sliver of a last stripe
    assert layout.max_stripe_width == max(
        b - a for a, b in (layout.stripe_span(s) for s in range(layout.stripes))
    )


def test_a_stripe_width_larger_than_the_raster_keeps_one_stripe():
    assert plan_tiles(100, 300, 32, 8, stripe_width=4096).stripes == 1
    assert plan_tiles(100, 20, 32, 8, stripe_width=8).stripes == 1  # one tile column
