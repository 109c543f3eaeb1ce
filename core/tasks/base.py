"""What a task is: its input slots, its products, and how a network's output becomes them.

A task (land cover, change detection) is one :class:`Task` subclass in its own module; the
engine, the training loop and the surfaces ask it instead of branching on the task's name:

- **input slots**: the layers a model of the task takes. Land cover: one per modality of the
  model (``s2``, ``s1``, ``dem``, ``rgbir``...); change: ``before`` and ``after``, both of the
  model's single modality. The dock's layer pickers, Processing's raster parameters and the
  CLI's input flags are generated from them.
- **requests**: building the request from the slots' sources, and the sources of each network
  input from a request.
- **products** (:mod:`landfuse.core.products`): the writers' specs, and each product's pixels
  from the blended class probabilities.
- **report**: the task's section of the run report.
- **training**: the class scored as "change" (None for land cover) and the validation score
  monitored by default.

Standard library and numpy only at import time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import RequestError
from ..products import Product
from ..requests import RasterSource, Request
from ..run_options import RunOption

__all__ = ["InputSlot", "SourceGroup", "Task"]


@dataclass(frozen=True)
class InputSlot:
    """One layer a model takes.

    Attributes:
        key: ``s2``, ``s1``, ``dem``... (land cover: the modality key) or ``before``/``after``.
        title: What the surfaces call it, from the model's modality ("Sentinel-2 L1C, 13 bands",
            "Before: RGB imagery, 8 bit").
        modality: The model's modality whose bands the layer must provide.
        help: A sentence for tooltips and ``--help``.
        reference: The slot whose grid the outputs use by default.
    """

    key: str
    title: str
    modality: Any
    help: str
    reference: bool = False


@dataclass(frozen=True)
class SourceGroup:
    """The files that feed one network input of a request.

    Attributes:
        label: The slot key (``s2``, ``before``...): named in messages and the report.
        modality: The model's modality for it.
        sources: The files.
    """

    label: str
    modality: Any
    sources: Tuple[RasterSource, ...]


class Task:
    """A task: subclasses set the class attributes and implement the abstract methods."""

    #: Registry task name (``landcover``, ``change``).
    name: ClassVar[str] = ""
    #: Human title ("Land cover", "Change detection").
    title: ClassVar[str] = ""
    #: The adjective in "pick a ... model" ("land-cover", "change").
    noun: ClassVar[str] = ""
    #: The request dataclass of the task.
    request_type: ClassVar[type] = object
    #: The products, main product first.
    products: ClassVar[Tuple[Product, ...]] = ()
    #: The command-line subcommand that maps with it.
    command: ClassVar[str] = ""
    #: Validation score monitored by default when training.
    monitor: ClassVar[str] = "miou"
    #: Class value scored as "change" by the training metrics (None: not a change task).
    change_class: ClassVar[Optional[int]] = None
    #: Training takes its class table from the user's labels (else it keeps the model's).
    classes_from_labels: ClassVar[bool] = True
    #: The demo weights file of the task in ``demo/weights`` (shipped with the plugin).
    demo_weights: ClassVar[str] = ""
    #: The model that trains in minutes on a CPU: the Train tab's default there.
    cpu_training_model: ClassVar[str] = ""
    #: Request fields of this task only, offered by every surface like the run options.
    options: ClassVar[Tuple[RunOption, ...]] = ()
    #: The slots share one band selection (both dates of one sensor).
    shared_bands: ClassVar[bool] = False
    #: The command-line subcommand that trains a model of the task.
    train_command: ClassVar[str] = ""
    #: The task's published dataset layout (``--data``), and what a ``--scene`` lists.
    layout: ClassVar[str] = ""
    #: The layout's folders as ``--help`` shows them (the files of a sample share a name).
    layout_help: ClassVar[str] = ""
    #: A layout sample's file roles (``files(i)`` keys) of the network inputs, and of the label.
    layout_inputs: ClassVar[Tuple[str, ...]] = ()
    #: How a layout's label values become classes when its reader has no mapping.
    layout_label_map: ClassVar[Optional[Dict[int, int]]] = None
    scene_inputs: ClassVar[str] = ""
    #: Its layout keeps one folder per modality (``--modalities`` and ``--hunan-remap`` apply).
    modality_folders: ClassVar[bool] = False
    #: What the result is called in messages ("Land-cover map").
    map_title: ClassVar[str] = ""
    #: One line for the command list, a sentence for the command's help, how the inputs are
    #: aligned, and examples (the command line's ``--help``).
    summary: ClassVar[str] = ""
    description: ClassVar[str] = ""
    alignment: ClassVar[str] = ""
    examples: ClassVar[str] = ""

    # -- inputs --------------------------------------------------------------------------------
    def slots(self, spec: Any) -> Tuple[InputSlot, ...]:
        """The layer slots a model of this task takes, in network order."""
        raise NotImplementedError

    def slot_keys(self, specs: Sequence[Any]) -> Tuple[InputSlot, ...]:
        """One slot per key over several models (first title wins): Processing and the CLI
        offer these, each optional, and the chosen model says which it needs."""
        seen: Dict[str, InputSlot] = {}
        for spec in specs:
            for slot in self.slots(spec):
                seen.setdefault(slot.key, slot)
        return tuple(seen.values())

    def make_request(
        self, model: str, weights: str, sources: Mapping[str, Sequence[Any]], **fields: Any
    ) -> Request:
        """The request for ``model`` from the sources chosen per slot key."""
        raise NotImplementedError

    def input_modalities(self, spec: Any) -> Tuple[Any, ...]:
        """The modality of each network input, in order (a change pair: the modality twice)."""
        return tuple(slot.modality for slot in self.slots(spec))

    def nearest_inputs(self, spec: Any) -> Tuple[int, ...]:
        """Inputs aligned with nearest neighbour (categorical layers), by index."""
        return tuple(
            i for i, m in enumerate(self.input_modalities(spec)) if m.resampling == "nearest"
        )

    def layout_dataset(self, root: Any, split: Optional[str], spec: Any, **options: Any) -> Any:
        """The task's published dataset layout under ``root`` (``split``: train/val/test)."""
        raise NotImplementedError

    def demo_inputs(self, folder: Any, size: int = 256) -> Dict[str, str]:
        """Write the task's demo scene (:mod:`landfuse.core.demo_scene`) into ``folder``: the
        file of each slot of the demo weights' model, and ``"truth"``."""
        raise NotImplementedError

    def polygon_label_map(self, found: Any) -> Dict[Any, int]:
        """How the values of a polygon class field become class indices
        (``found``: the :class:`~landfuse.core.label_classes.LabelClasses` of the values)."""
        return dict(found.label_map)

    def baseline(self, train_set: Any, val_set: Any, names: Sequence[str], **options: Any) -> Any:
        """The classical method scored beside a trained network on the same validation pixels
        (a :class:`~landfuse.core.training.baselines.Baseline`)."""
        from ..training.baselines import random_forest_baseline

        return random_forest_baseline(train_set, val_set, names, **options)

    def headline(self, scores: Mapping[str, Any]) -> Tuple[str, Optional[float]]:
        """The score an assessment leads with, and its name (from ``report_summary``)."""
        if self.change_class is not None:
            return "change F1", (scores.get("change") or {}).get("f1")
        return "mIoU", scores.get("miou")

    def default_label_map(self, label_path: str) -> Optional[Dict[int, int]]:
        """How a label raster's values become classes when the user gives no mapping."""
        return None

    def source_groups(self, request: Request, spec: Any) -> List[SourceGroup]:
        """The files of each network input, checked against the model's modalities.

        Raises:
            RequestError: when the request is of another task or misses an input the model needs.
        """
        raise NotImplementedError

    def check_model(self, spec: Any) -> None:
        """Refuse a model of another task, saying which command to use instead."""
        if spec.task != self.name:
            raise RequestError(
                f"{spec.name} is a {spec.task} model; use it with {_command_for(spec.task)}, or "
                f"pick a {self.noun} model."
            )

    # -- messages a task words its own way --------------------------------------------------------
    def unaligned_message(self, groups: Sequence[Any]) -> str:
        """Why the groups cannot share a grid when some are georeferenced and some not ("": no
        task-specific rule)."""
        return ""

    def outside_message(self, label: str, path: str, grid_text: str) -> str:
        """A file of input ``label`` does not overlap the reference grid."""
        return (
            f"{path} does not overlap the reference grid ({grid_text}); give inputs that cover "
            "the same area."
        )

    def disjoint_message(self, label: str, others: str) -> str:
        """Input ``label`` does not overlap the inputs before it."""
        return f"The {label} input does not overlap {others}; the inputs must cover a common area."

    # -- products ------------------------------------------------------------------------------
    def product(self, key: str) -> Product:
        """The product called ``key``."""
        for product in self.products:
            if product.key == key:
                return product
        raise KeyError(key)

    @property
    def main_product(self) -> Product:
        """The product always written."""
        return self.products[0]

    def tally_classes(self, classes: Sequence[Any]) -> List[int]:
        """The class values whose areas the report counts."""
        count = self.main_product.class_count
        return [int(c.value) for c in classes[:count]]

    def product_arrays(
        self, values: np.ndarray, covered: np.ndarray, request: Request, wanted: Sequence[str]
    ) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
        """Blended class probabilities ``[classes, rows, cols]`` → ``(tallied array, {product
        key: array})`` for the products in ``wanted``; pixels not ``covered`` get nodata."""
        raise NotImplementedError

    def report_section(self, request: Request, summary: List[Dict[str, Any]]) -> Dict[str, Any]:
        """The task's part of the run report from the per-class area summary."""
        raise NotImplementedError

    def areas(self, report: Mapping[str, Any]) -> Any:
        """The areas of a run report (its task section)."""
        raise NotImplementedError

    def describe_areas(self, areas: Any) -> str:
        """The areas of a run in one phrase, for the message bar and Processing's log."""
        raise NotImplementedError

    def report_numbers(self, report: Mapping[str, Any]) -> Dict[str, Any]:
        """Numeric results Processing returns besides the rasters (e.g. the changed area)."""
        return {}


def _command_for(task: str) -> str:
    from . import get_task  # the registry of tasks imports this module

    try:
        return get_task(task).command
    except KeyError:
        return "the matching command"
