"""The engine: one service that turns a request into mapped rasters (no QGIS here).

API (what the dock, Processing, the command line, the worker, the demo and the benchmark call)::

    from landfuse.core import engine
    from landfuse.core.requests import (
        AreaOfInterest, ChangeRequest, LandCoverRequest, ModalityInput, RasterSource)

    request = LandCoverRequest(
        inputs=(ModalityInput("s2", "S2_stack.tif"),                       # one 13-band stack
                ModalityInput("s1", RasterSource("S1.tif", bands=(1, 2)))),
        model="amm_fusenet_s2_s1_hunan", weights="hunan.pt", output_dir="out/")
    result = engine.run_landcover(request, progress=print, cancel=None)   # -> RunResult
    result.outputs    # {"classes": ".../landcover_classes.tif", "confidence": ..., "report": ...}
    result.report     # the JSON report as a dict (timings, tiles, areas...)

    pair = ChangeRequest(before=("T1_B01.tif", ..., "T1_B12.tif"),       # one file per band
                         after=("T2_B01.tif", ..., "T2_B12.tif"),
                         model="amfnet_s2", weights="oscd.pt", output_dir="out/")
    result = engine.run_change(pair)        # outputs: "change" (mask), "probability", "report"
    result = engine.run(request_or_pair)    # dispatch on the type
    summary = engine.validate(request)      # every check of a run; nothing computed or written

``progress`` receives :class:`~landfuse.core.runner.Progress` objects (``stage`` in ``prepare``,
``infer``, ``finish``, ``done``; ``fraction`` 0..1; ``tiles_done``, ``tiles_total``;
``eta_seconds``; ``message``), in the calling thread: after validation, after every batch, and
while finishing. ``cancel`` is a callable returning True to stop; it is checked before every
batch and before the outputs are finished, and a cancel raises
:class:`~landfuse.core.errors.CancelledError` after removing every temporary file. Every other
failure a user can act on raises a subclass of :class:`~landfuse.models.errors.LandFuseError`
(see :mod:`landfuse.core.errors`, and the weights errors of :mod:`landfuse.models.errors`), also
after cleaning up; the inputs are only ever opened read-only. Anything else is a bug.

Output files, report keys and encodings: :mod:`landfuse.core.writers`. The report's
``timings_s`` separates ``network`` (forward passes), ``waiting_for_data`` (compute waiting for
the reader thread), ``tiles_loop`` (the whole tile loop), ``finish`` (COG and styles) and
``total``; ``tiles`` gives the tile size, overlap, counts and batch sizes.

For raw network throughput on pre-loaded tiles (the benchmark's baseline), use the same pieces
the engine uses: ``network, spec, sha, meta = engine.load_network(engine.model_info(name),
weights, device)`` and ``runner.BatchPredictor(network, device.resolve_target(dev, prec),
batch).predict([array_per_input])`` with ``float32 [B, bands, H, W]`` arrays.

A run, in order (DESIGN.md §2):

1. **Validate** before any pixel: the request's fields (in the dataclass), the model (the
   weights file's sidecar, or the registry's), every input file (readable, georeferenced unless
   pixel-grid mode), the band selection against the model's bands, the reference grid, overlap
   of the inputs and of the area of interest, tile size against the output stride, normalisation
   numbers, device and precision, the output folder (writable, no clash, free space), then the
   weights file (verified, for this model) and finally that no input is all nodata where the
   work happens.
2. **Align**: each input is read on the work grid (the reference grid cut to the area where all
   inputs and the area of interest overlap) through a lazy ``WarpedVRT``.
3. **Tile** (:mod:`~landfuse.core.tiling`), **infer** in batches with read-ahead
   (:mod:`~landfuse.core.runner`), **blend** softmax probabilities with a Hann window in a band of
   rows (:mod:`~landfuse.core.blending`), **write** the finished windows straight to disk
   (:mod:`~landfuse.core.writers`). A scene wider than :data:`STRIPE_WIDTH` is processed in
   vertical stripes, each top to bottom, so that the blending band, the output blocks being
   assembled and GDAL's block cache (lowered for the run to the input blocks of two rows of
   tiles of one stripe) are bounded by the stripe's width: memory does not depend on the scene
   size, only ``classes × height × overlap`` for the columns two stripes share.
4. **Finish**: Cloud-Optimised GeoTIFFs, QML styles and the JSON report are moved to their final
   names only when everything succeeded.

The model of a run is the one its weights file names (the sidecar's ``model_name``, with the
file's bands, normalisation and classes); a request may leave ``model`` empty, and one that
names another model is refused before any input is read.

The package: :mod:`~landfuse.core.engine.plan` (validation and planning; the extension points
:func:`model_info` and :func:`load_network`, which tests and tools replace there),
:mod:`~landfuse.core.engine.budget` (memory), :mod:`~landfuse.core.engine.execute` (the tile
loop and the typed entry points), :mod:`~landfuse.core.engine.report` (the run report).
"""

from __future__ import annotations

from .budget import BLOCK_CACHE_FLOOR as _BLOCK_CACHE_FLOOR  # noqa: F401 (tests read it)
from .budget import keep_memory_flat
from .execute import run, run_batch, run_change, run_landcover, validate
from .plan import STRIPE_WIDTH, load_network, model_info
from .report import RunResult

__all__ = [
    "STRIPE_WIDTH",
    "RunResult",
    "keep_memory_flat",
    "load_network",
    "model_info",
    "run",
    "run_batch",
    "run_change",
    "run_landcover",
    "validate",
]
