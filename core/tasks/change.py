"""Change detection: a before and an after layer of one modality, a mask and a probability."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import RequestError
from ..formatting import format_hectares
from ..products import CHANGE_PRODUCTS, CLASS_NODATA, PROBABILITY_NODATA
from ..requests import ChangeRequest, Request
from ..run_options import THRESHOLD
from .base import InputSlot, SourceGroup, Task

__all__ = ["ChangeTask"]

_DATES = (
    (
        "before",
        "Before",
        "The earlier image. The network is not symmetric: keep the dates in order.",
    ),
    ("after", "After", "The later image, with the same bands as the earlier one."),
)


class ChangeTask(Task):
    """Changed / unchanged pixels between two dates of the same sensor (AMFNet)."""

    name = "change"
    title = "Change detection"
    noun = "change"
    request_type = ChangeRequest
    products = CHANGE_PRODUCTS
    command = "predict-change"
    monitor = "change_f1"
    change_class = 1
    options = (THRESHOLD,)
    shared_bands = True
    map_title = "Change map"
    train_command = "train-change"
    layout = "LEVIR-CD layout (A/, B/, label/)"
    layout_help = (
        "ROOT/{train,val,test}/{A,B,label}/NAME.png (A: before, B: after, label: 0/255 mask, "
        "paired by file name), or ROOT/{A,B,label}/ with ROOT/list/{train,val,test}.txt naming "
        "the files of each split"
    )
    classes_from_labels = False
    demo_weights = "change_demo.pt"
    cpu_training_model = "amfnet_lite_s2"
    layout_inputs = ("A", "B")
    layout_label_map: ClassVar[Optional[Dict[int, int]]] = {0: 0, 255: 1, 1: 1}
    scene_inputs = "BEFORE AFTER LABEL"
    summary = "detect changes between two dates (before / after)"
    description = "Detect changes between a 'before' and an 'after' image (AMFNet)."
    alignment = (
        "The 'after' image is read on the grid of the 'before' image (or of --reference) and "
        "warped on the fly if their CRS, pixel size or extent differ. The network is not "
        "symmetric: give the earlier date as --before."
    )
    examples = """\
  landfuse predict-change --before 2015.tif --after 2017.tif \\
      --model amfnet_s2 --weights oscd.pt --out changes/
  landfuse predict-change --before A/tile.png --after B/tile.png --pixel-grid \\
      --weights levir.pt --out changes/
"""

    def slots(self, spec: Any) -> Tuple[InputSlot, ...]:
        modality = spec.modalities[0]
        return tuple(
            InputSlot(
                key=key,
                title=f"{label}: {modality.title}",
                modality=modality,
                help=f"{text} Bands: {', '.join(modality.band_names)}.",
                reference=key == "before",
            )
            for key, label, text in _DATES
        )

    def slot_keys(self, specs: Sequence[Any]) -> Tuple[InputSlot, ...]:
        """Both dates, titled without one model's sensor (the models' sensors differ)."""
        if len(specs) == 1:
            return self.slots(specs[0])
        if not specs:
            return ()
        modality = specs[0].modalities[0]
        when = {"before": "earlier", "after": "later"}
        return tuple(
            InputSlot(key, f"{label} ({when[key]} date)", modality, text, key == "before")
            for key, label, text in _DATES
        )

    def make_request(
        self, model: str, weights: str, sources: Mapping[str, Sequence[Any]], **fields: Any
    ) -> ChangeRequest:
        return ChangeRequest(
            before=tuple(sources.get("before", ())),
            after=tuple(sources.get("after", ())),
            model=model,
            weights=weights,
            **fields,
        )

    def layout_dataset(self, root: Any, split: Optional[str], spec: Any, **options: Any) -> Any:
        from ..datasets import LevirCDDataset

        return LevirCDDataset(root, split=split)

    def demo_inputs(self, folder: Any, size: int = 256) -> Dict[str, str]:
        from ..demo_scene import write_change_pair

        pair = write_change_pair(Path(folder), size=size, seed=11)
        return {"before": str(pair.before), "after": str(pair.after), "truth": str(pair.truth)}

    def polygon_label_map(self, found: Any) -> Dict[Any, int]:
        """Numbers: above 0 is change; text: "no change", "unchanged", "stable"… are no change,
        anything else is change."""
        if all(isinstance(value, (int, float)) for value in found.label_map):
            return {value: int(float(value) > 0) for value in found.label_map}
        quiet = ("no change", "no_change", "nochange", "unchanged", "stable", "none")
        return {
            value: 0 if any(w in str(value).lower() for w in quiet) else 1
            for value in found.label_map
        }

    def baseline(self, train_set: Any, val_set: Any, names: Sequence[str], **options: Any) -> Any:
        """Change-vector analysis + Otsu (unsupervised: it needs no training pixels)."""
        from ..training.baselines import cva_baseline

        return cva_baseline(val_set, names)

    def default_label_map(self, label_path: str) -> Optional[Dict[int, int]]:
        """0/255 change masks (LEVIR-CD, OSCD) mean 0 no change, 255 change."""
        from ..metrics import change_label_map

        return change_label_map(label_path)

    def source_groups(self, request: Request, spec: Any) -> List[SourceGroup]:
        self.check_model(spec)
        if not isinstance(request, ChangeRequest):
            raise RequestError("A change model needs a ChangeRequest (a before/after pair).")
        modality = spec.modalities[0]
        return [
            SourceGroup("before", modality, request.before),
            SourceGroup("after", modality, request.after),
        ]

    def unaligned_message(self, groups: Sequence[Any]) -> str:
        before = all(i.georeferenced for i in groups[0].infos)
        after = all(i.georeferenced for i in groups[1].infos)
        if before == after:
            return ""
        plain = groups[1] if before else groups[0]
        return (
            f"The '{'before' if before else 'after'}' image is georeferenced but the "
            f"'{plain.label}' image ({plain.infos[0].path}) is not, so they cannot be put on "
            "one grid; georeference it, or use the pixel-grid mode if both are plain images "
            "of the same size."
        )

    def outside_message(self, label: str, path: str, grid_text: str) -> str:
        return (
            f"The '{label}' image {path} does not overlap the 'before' image, so the pair cannot "
            "be aligned; give two images of the same area."
        )

    def disjoint_message(self, label: str, others: str) -> str:
        return (
            "The 'before' and 'after' images do not overlap, so they cannot be aligned; give a "
            "pair of the same area."
        )

    def product_arrays(
        self, values: np.ndarray, covered: np.ndarray, request: Request, wanted: Sequence[str]
    ) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
        probability = values[1]
        threshold = getattr(request, "threshold", THRESHOLD.default)
        mask = (probability >= threshold).astype(np.uint8)
        mask[~covered] = CLASS_NODATA
        arrays = {"change": mask}
        if "probability" in wanted:
            out = probability.astype(np.float32)
            out[~covered] = PROBABILITY_NODATA
            arrays["probability"] = out
        return mask, arrays

    def report_section(self, request: Request, summary: List[Dict[str, Any]]) -> Dict[str, Any]:
        unchanged, changed = summary[0], summary[1]  # change models have exactly two classes
        mapped = int(changed["pixels"]) + int(unchanged["pixels"])
        return {
            "change": {
                "threshold": getattr(request, "threshold", 0.5),
                "changed_pixels": changed["pixels"],
                "unchanged_pixels": unchanged["pixels"],
                "changed_hectares": changed["hectares"],
                "unchanged_hectares": unchanged["hectares"],
                "changed_percent": round(100.0 * int(changed["pixels"]) / mapped, 4)
                if mapped
                else 0.0,
            }
        }

    def areas(self, report: Mapping[str, Any]) -> Any:
        return report.get("change") or {}

    def describe_areas(self, areas: Any) -> str:
        if not isinstance(areas, Mapping) or not areas:
            return ""
        return (
            f"{format_hectares(areas.get('changed_hectares'))} changed "
            f"({areas.get('changed_percent', 0):.2f} % of the mapped area)"
        )

    def report_numbers(self, report: Mapping[str, Any]) -> Dict[str, Any]:
        return {"CHANGED_HECTARES": self.areas(report).get("changed_hectares")}
