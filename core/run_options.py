"""The run options every surface offers, in one place: names, defaults, limits, choices and help.

Tile, overlap, batch, device, precision and normalisation are fields of both request types
(:mod:`landfuse.core.requests`); the dock's Advanced box, the Processing algorithms' advanced
parameters and the command line's flags are generated from :data:`RUN_OPTIONS`, so a default or
a help text is changed here and nowhere else. The products each task can write are in
:mod:`landfuse.core.products`.

Standard library only (the QGIS side imports it without torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from ..models.specs import NORMALISATION_MODES

__all__ = [
    "BATCH",
    "DEVICE",
    "DEVICE_CHOICES",
    "EXECUTOR",
    "NORMALISATION",
    "NORMALISATION_CHOICES",
    "OVERLAP",
    "PRECISION",
    "PRECISION_CHOICES",
    "RUN_OPTIONS",
    "THRESHOLD",
    "TILE",
    "RunOption",
    "default_overlap",
    "option",
    "resolve_overlap",
]

#: Device names (``cuda:N`` is accepted too); availability is checked by the engine.
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
#: Numeric precisions; ``auto`` picks a reduced one where the hardware supports it.
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
#: ``auto`` uses the weights file's normalisation, else the registry entry's.
NORMALISATION_CHOICES = ("auto", *NORMALISATION_MODES)

#: The default overlap is the tile edge divided by this.
OVERLAP_DIVISOR = 8


def default_overlap(tile: int) -> int:
    """The overlap used when none is given: one eighth of the tile."""
    return int(tile) // OVERLAP_DIVISOR


def resolve_overlap(tile: int, asked: Optional[int]) -> int:
    """The overlap a run uses: the one asked for, else :func:`default_overlap`."""
    return default_overlap(tile) if asked is None else int(asked)


@dataclass(frozen=True)
class RunOption:
    """One option of a run.

    Attributes:
        name: The request field (``tile``); the CLI flag is ``--<name>``, the Processing
            parameter ``<NAME>``.
        label: Short human label ("Tile size (px)").
        help: What it does and how to choose it (tooltip, Processing help, ``--help``).
        default: The request's default (None: decided by the model or the tile).
        kind: ``"int"``, ``"float"``, ``"choice"`` or ``"text"`` (free text; ``choices`` are
            suggestions).
        minimum: Smallest accepted number (``int`` and ``float`` options).
        maximum: Largest one the widgets offer (None: no limit).
        automatic: What None means, for surfaces that need a number for it ("model default").
        automatic_value: The number that stands for None in the dock and Processing.
        choices: Accepted values (``choice`` options).
        choice_labels: Human text per choice, in the same order.
        strict: Only the choices are accepted (False: others too, e.g. ``cuda:1``).
        step: The widgets' step (None: 1).
    """

    name: str
    label: str
    help: str
    default: Any
    kind: str = "int"
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    automatic: str = ""
    automatic_value: Optional[int] = None
    choices: tuple[str, ...] = ()
    choice_labels: tuple[str, ...] = ()
    strict: bool = True
    step: Optional[float] = None

    @property
    def parameter(self) -> str:
        """The Processing parameter name."""
        return self.name.upper()

    @property
    def flag(self) -> str:
        """The command-line flag."""
        return f"--{self.name}"

    def from_widget(self, value: Any) -> Any:
        """The request value for a widget's or parameter's value (the automatic number → None)."""
        if self.kind == "text":
            return str(value or "").strip() or self.default
        if self.kind == "choice":
            return str(value)
        if self.kind == "float":
            return float(value)
        number = int(value)
        if self.automatic_value is not None and number == self.automatic_value:
            return None
        return number

    def to_widget(self, value: Any) -> Any:
        """The widget's value for a request value (None → the automatic number)."""
        if self.kind in ("choice", "text"):
            return value if value is not None else self.default
        if self.kind == "float":
            return float(self.default if value is None else value)
        if value is None:
            return self.automatic_value if self.automatic_value is not None else self.default
        return int(value)


TILE = RunOption(
    "tile",
    "Tile size (px)",
    "Edge of the square tiles the scene is cut into; a multiple of the model's output stride "
    "(32 is always safe). Larger tiles need more memory: the run is refused, naming the largest "
    "tile that fits, when they would not fit.",
    default=None,
    minimum=0,
    automatic="model default",
    automatic_value=0,
    step=32,
)
OVERLAP = RunOption(
    "overlap",
    "Tile overlap (px)",
    "Overlap between neighbouring tiles, blended with a smooth window so that no seams show; "
    f"default: 1/{OVERLAP_DIVISOR} of the tile.",
    default=None,
    minimum=-1,
    automatic=f"automatic (1/{OVERLAP_DIVISOR} of the tile)",
    automatic_value=-1,
)
BATCH = RunOption(
    "batch",
    "Batch size",
    "Tiles per forward pass; halved automatically when the GPU runs out of memory.",
    default=4,
    minimum=1,
    maximum=256,
)
DEVICE = RunOption(
    "device",
    "Device",
    "auto picks CUDA, then Apple MPS, then the CPU; cuda:N picks one GPU.",
    default="auto",
    kind="choice",
    choices=DEVICE_CHOICES,
    choice_labels=("Automatic (best present)", "CPU", "CUDA", "Apple MPS"),
    strict=False,
)
PRECISION = RunOption(
    "precision",
    "Precision",
    "auto uses bf16 on CPUs with AVX512-BF16/AMX and fp16/bf16 on GPUs, else fp32.",
    default="auto",
    kind="choice",
    choices=PRECISION_CHOICES,
    choice_labels=(
        "Automatic (bf16/fp16 where supported)",
        "fp32 (exact)",
        "bf16",
        "fp16 (GPU only)",
    ),
)
NORMALISATION = RunOption(
    "normalisation",
    "Normalisation",
    "auto takes it from the weights file or the model; force a mode only to experiment.",
    default="auto",
    kind="choice",
    choices=NORMALISATION_CHOICES,
    choice_labels=(
        "From the weights / model (recommended)",
        "Per-tile min-max (reference)",
        "Fixed bounds",
        "Scale (e.g. /255)",
        "Fixed per-band statistics",
    ),
)

#: Test-time augmentation: also predict the flipped tile and average (3 passes).
FLIPS_CHOICES = ("none", "flips")
FLIPS = RunOption(
    "flips",
    "Test-time flips",
    "flips also predicts each tile flipped left-right and upside down and averages the three "
    "(3× the computing time; steadier maps from networks trained on few labels).",
    default="none",
    kind="choice",
    choices=FLIPS_CHOICES,
    choice_labels=("None (one pass)", "Flips (three passes, averaged)"),
)

#: A task's own option (change detection): where probability becomes a changed pixel.
THRESHOLD = RunOption(
    "threshold",
    "Change threshold",
    "Change probability from which a pixel is marked changed (0-1).",
    default=0.5,
    kind="float",
    minimum=0.0,
    maximum=1.0,
    step=0.05,
)

#: Where the tiles are computed (the values offered; any form of
#: :func:`~landfuse.core.executor_spec.parse_executor` is accepted).
EXECUTOR = RunOption(
    "executor",
    "Executor",
    "Where the tiles are computed: in-process (this process, the default); process:N (N local "
    "processes); local:N (a Dask cluster of N workers on this machine); dask://HOST:PORT (a "
    "running Dask scheduler, whose workers must see the inputs, the weights and the output "
    "folder). Every executor gives the same maps, byte for byte; see the user guide, "
    "'Large areas'.",
    default="in-process",
    kind="text",
    choices=("in-process", "process:2", "local:2", "dask://localhost:8786"),
)

#: Every run option, in the order the surfaces show them.
RUN_OPTIONS: tuple[RunOption, ...] = (
    TILE,
    OVERLAP,
    BATCH,
    DEVICE,
    PRECISION,
    NORMALISATION,
    FLIPS,
    EXECUTOR,
)

_BY_NAME: Mapping[str, RunOption] = {o.name: o for o in RUN_OPTIONS}


def option(name: str) -> RunOption:
    """The run option called ``name`` (KeyError for an unknown one)."""
    return _BY_NAME[name]
