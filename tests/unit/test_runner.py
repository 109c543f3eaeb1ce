"""The batch runner: softmax output, precision, out-of-memory retries, read-ahead, cancel."""

import threading
import time

import numpy as np
import pytest
import torch

from landfuse.core.device import ExecutionTarget
from landfuse.core.errors import CancelledError, OutOfMemoryError
from landfuse.core.runner import BatchPredictor, TileData, run_tiles
from landfuse.core.tiling import plan_tiles

pytestmark = pytest.mark.unit

CPU32 = ExecutionTarget(torch.device("cpu"), "fp32", "test")


class PixelModel(torch.nn.Module):
    """Logits are a fixed linear map of each pixel's bands (a 1x1 convolution)."""

    def __init__(self, bands=3, classes=4):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(bands, classes, 1)
        self.batches = []

    def predict(self, *inputs):
        self.batches.append(inputs[0].shape[0])
        return self.conv(torch.cat(inputs, 1))


class OomModel(PixelModel):
    """Runs out of 'GPU memory' with batches above ``limit`` tiles."""

    def __init__(self, limit, error=None):
        super().__init__()
        self.limit = limit
        self.error = error or torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

    def predict(self, *inputs):
        if inputs[0].shape[0] > self.limit:
            raise self.error
        return super().predict(*inputs)


def batch(n, bands=3, size=16, seed=0):
    return np.random.default_rng(seed).normal(size=(n, bands, size, size)).astype(np.float32)


def test_predict_returns_softmax_probabilities_in_the_model_layout():
    model = PixelModel()
    probs = BatchPredictor(model, CPU32, 4).predict([batch(3)])
    assert probs.shape == (3, 4, 16, 16) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    with torch.no_grad():
        expected = torch.softmax(model.conv(torch.from_numpy(batch(3))), 1).numpy()
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
    assert not model.training  # eval mode


def test_bf16_autocast_is_close_to_fp32():
    inputs = [batch(2)]
    fp32 = BatchPredictor(PixelModel(), CPU32, 2).predict(inputs)
    bf16 = BatchPredictor(
        PixelModel(), ExecutionTarget(torch.device("cpu"), "bf16", "t"), 2
    ).predict(inputs)
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(bf16, fp32, atol=0.03)
    assert (bf16.argmax(1) == fp32.argmax(1)).mean() > 0.95


def test_out_of_memory_halves_the_batch_and_keeps_the_results():
    inputs = [batch(5)]
    reference = BatchPredictor(PixelModel(), CPU32, 8).predict(inputs)
    model = OomModel(limit=2)
    predictor = BatchPredictor(model, CPU32, 8)
    probs = predictor.predict(inputs)
    np.testing.assert_allclose(probs, reference, rtol=1e-6)
    assert predictor.batch_size == 2
    assert model.batches == [2, 2, 1]


def test_out_of_memory_message_error_type_is_recognised_too():
    model = OomModel(limit=1, error=RuntimeError("CUDA error: out of memory"))
    predictor = BatchPredictor(model, CPU32, 4)
    assert predictor.predict([batch(2)]).shape[0] == 2
    assert predictor.batch_size == 1


def test_out_of_memory_with_one_tile_says_what_to_change():
    predictor = BatchPredictor(OomModel(limit=0), CPU32, 4)
    with pytest.raises(OutOfMemoryError, match="smaller --tile"):
        predictor.predict([batch(3)])


def test_other_errors_are_not_retried():
    predictor = BatchPredictor(OomModel(limit=0, error=ValueError("bad shape")), CPU32, 4)
    with pytest.raises(ValueError, match="bad shape"):
        predictor.predict([batch(3)])


def make_loader(layout, skip=(), delay=0.0, fail_at=None):
    def load(tile):
        if delay:
            time.sleep(delay)
        if fail_at is not None and tile.index == fail_at:
            raise ValueError(f"cannot read tile {tile.index}")
        if tile.index in skip:
            return None
        value = np.full((3, layout.padded_height, layout.padded_width), tile.index, np.float32)
        return TileData([value], np.ones((tile.height, tile.width), bool))

    return load


def reader_threads():
    return [t for t in threading.enumerate() if t.name == "landfuse-reader"]


def test_run_tiles_in_order_with_skips_progress_and_crops():
    layout = plan_tiles(40, 50, 16, 4, stride=16)
    seen = []
    reports = []
    stats = run_tiles(
        layout.tiles(),
        make_loader(layout, skip={1, 4}),
        BatchPredictor(PixelModel(), CPU32, 3),
        lambda tile, probs, data: seen.append((tile.index, None if probs is None else probs.shape)),
        progress=reports.append,
    )
    assert [i for i, _ in seen] == list(range(len(layout)))
    assert seen[1] == (1, None) and seen[4] == (4, None)
    assert seen[0][1] == (4, 16, 16)
    assert (stats.tiles_computed, stats.tiles_skipped) == (len(layout) - 2, 2)
    fractions = [r.fraction for r in reports]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert reports[-1].tiles_done == len(layout) and reports[-1].eta_seconds == pytest.approx(0.0)
    assert all(r.eta_seconds is not None and r.eta_seconds >= 0 for r in reports)
    assert not reader_threads()


def test_reading_overlaps_computing():
    """With read-ahead, the loop takes about max(read, compute), not their sum."""
    layout = plan_tiles(16, 16 * 8, 16, 0, stride=16)  # 8 tiles

    class SlowModel(PixelModel):
        def predict(self, *inputs):
            time.sleep(0.1)
            return super().predict(*inputs)

    started = time.perf_counter()
    stats = run_tiles(
        layout.tiles(),
        make_loader(layout, delay=0.05),
        BatchPredictor(SlowModel(), CPU32, 2),
        lambda *a: None,
    )
    elapsed = time.perf_counter() - started
    serial = 8 * 0.05 + 4 * 0.1  # 0.8 s; overlapped: about 0.1 + 4 * 0.1
    assert stats.batches == 4
    assert elapsed < 0.85 * serial
    assert stats.seconds_waiting_for_data < 0.3


def test_cancel_between_batches_stops_and_joins_the_reader():
    layout = plan_tiles(16, 16 * 10, 16, 0, stride=16)
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2

    done = []
    with pytest.raises(CancelledError, match="cancelled"):
        run_tiles(
            layout.tiles(),
            make_loader(layout),
            BatchPredictor(PixelModel(), CPU32, 2),
            lambda tile, probs, data: done.append(tile.index),
            cancel=cancel,
        )
    assert done == [0, 1, 2, 3]
    assert not reader_threads()


def test_a_cancel_stops_the_reader_before_returning():
    """The engine closes its datasets right after run_tiles raises: no read may follow."""
    layout = plan_tiles(16, 16 * 40, 16, 0, stride=16)
    loads = []
    slow = make_loader(layout, delay=0.02)

    def load(tile):
        loads.append(tile.index)
        return slow(tile)

    caught = None
    try:
        run_tiles(
            layout.tiles(),
            load,
            BatchPredictor(PixelModel(), CPU32, 1),
            lambda *a: None,
            cancel=lambda: len(loads) >= 2,
            prefetch=8,
        )
    except CancelledError as error:
        # Holding the error keeps its traceback, hence run_tiles' locals, alive: the reader
        # must be gone because run_tiles stopped it, not because it was garbage-collected.
        caught = error
    assert isinstance(caught, CancelledError)
    assert not reader_threads()
    seen = len(loads)
    time.sleep(0.1)
    assert len(loads) == seen < len(layout)


def test_reader_errors_reach_the_caller():
    layout = plan_tiles(16, 64, 16, 0, stride=16)
    with pytest.raises(ValueError, match="cannot read tile 2"):
        run_tiles(
            layout.tiles(),
            make_loader(layout, fail_at=2),
            BatchPredictor(PixelModel(), CPU32, 1),
            lambda *a: None,
        )
    assert not reader_threads()


def test_batches_reach_the_model_channels_last_without_a_copy():
    layout = plan_tiles(16, 32, 16, 0, stride=16)
    layouts = []

    class Recorder(PixelModel):
        def predict(self, *inputs):
            layouts.append(inputs[0].is_contiguous(memory_format=torch.channels_last))
            return super().predict(*inputs)

    stats = run_tiles(
        layout.tiles(), make_loader(layout), BatchPredictor(Recorder(), CPU32, 2), lambda *a: None
    )
    assert stats.batches == 1 and layouts == [True]
