"""Land cover: one layer per modality of the model, a class map and a confidence raster."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..blending import winning_class
from ..errors import RequestError
from ..formatting import format_hectares
from ..products import CLASS_NODATA, LANDCOVER_PRODUCTS
from ..requests import LandCoverRequest, ModalityInput, Request
from .base import InputSlot, SourceGroup, Task

__all__ = ["LandCoverTask"]


class LandCoverTask(Task):
    """Per-pixel classes from several co-registered modalities (AMM-FuseNet)."""

    name = "landcover"
    title = "Land cover"
    noun = "land-cover"
    request_type = LandCoverRequest
    products = LANDCOVER_PRODUCTS
    command = "predict-landcover"
    monitor = "miou"
    change_class = None
    map_title = "Land-cover map"
    train_command = "train-landcover"
    layout = "AMM-FuseNet layout (ann_dir, s2_dir...)"
    cpu_training_model = "amm_fusenet_lite_s2_s1_dem"
    demo_weights = "landcover_demo.pt"
    layout_help = (
        "ROOT/ann_dir/{train,val,test}/NAME.tif (class labels) with ROOT/s2_dir/, s1_dir/, "
        "dem_dir/ holding the same split folders and file names (one folder per modality of the "
        "model, --modalities to name others)"
    )
    scene_inputs = "S2 S1 ... LABEL"
    modality_folders = True
    summary = "map land cover from Sentinel-2 plus Sentinel-1 and/or a DEM (or other modalities)"
    description = "Map land cover over a scene with a multi-modal network (AMM-FuseNet)."
    alignment = (
        "Inputs are read on the grid of the reference raster (default: the finest-resolution "
        "file given to the first modality, e.g. a 10 m Sentinel-2 band), whatever their CRS, "
        "pixel size or extent: they are warped on the fly, nothing is resampled to disk. Pixels "
        "where any input has no data, or outside the area of interest, get the class value 255 "
        "(nodata)."
    )
    examples = """\
  landfuse predict-landcover --s2 S2_stack.tif --s1 S1_VV_VH.tif \\
      --weights hunan.pt --out results/
  landfuse predict-landcover --s2 T30UWU_B01.tif T30UWU_B02.tif ... T30UWU_B12.tif \\
      --dem dem.tif --model amm_fusenet_s2_dem_hunan --weights hunan2.pt \\
      --aoi parcels.gpkg --out results/ --device cuda --precision bf16
"""

    def slots(self, spec: Any) -> Tuple[InputSlot, ...]:
        return tuple(
            InputSlot(
                key=m.key,
                title=m.title,
                modality=m,
                help=f"{m.title}: the bands {', '.join(m.band_names)}.",
                reference=index == 0,
            )
            for index, m in enumerate(spec.modalities)
        )

    def make_request(
        self, model: str, weights: str, sources: Mapping[str, Sequence[Any]], **fields: Any
    ) -> LandCoverRequest:
        inputs = tuple(ModalityInput(key, tuple(files)) for key, files in sources.items())
        return LandCoverRequest(inputs=inputs, model=model, weights=weights, **fields)

    def demo_inputs(self, folder: Any, size: int = 256) -> Dict[str, str]:
        from ..demo_scene import write_landcover_scene

        scene = write_landcover_scene(Path(folder), size=size, seed=1)
        return {"s2": str(scene.s2), "s1": str(scene.s1), "dem": str(scene.dem),
                "truth": str(scene.truth)}  # fmt: skip

    def layout_dataset(self, root: Any, split: Optional[str], spec: Any, **options: Any) -> Any:
        from ..datasets import AmmFuseNetDataset

        if split is None:
            raise RequestError(
                "The AMM-FuseNet layout keeps its samples in train/ val/ test/ folders: name one "
                "with --split."
            )
        modalities = tuple(options.get("modalities") or (m.key for m in spec.modalities))
        return AmmFuseNetDataset(
            root,
            split=split,
            modalities=modalities,
            hunan_remap=bool(options.get("hunan_remap")),
            label_map=options.get("label_map"),
        )

    def source_groups(self, request: Request, spec: Any) -> List[SourceGroup]:
        self.check_model(spec)
        if not isinstance(request, LandCoverRequest):
            raise RequestError("A land-cover model needs a LandCoverRequest.")
        given = {item.key: item for item in request.inputs}
        wanted = [m.key for m in spec.modalities]
        missing = [k for k in wanted if k not in given]
        extra = [k for k in given if k not in wanted]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing)}")
            if extra:
                parts.append(f"not used by this model: {', '.join(extra)}")
            raise RequestError(
                f"{spec.name} takes the modalities {', '.join(wanted)} ({'; '.join(parts)})."
            )
        return [SourceGroup(m.key, m, given[m.key].sources) for m in spec.modalities]

    def product_arrays(
        self, values: np.ndarray, covered: np.ndarray, request: Request, wanted: Sequence[str]
    ) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
        classes, top = winning_class(values)
        classes[~covered] = CLASS_NODATA
        arrays = {"classes": classes}
        if "confidence" in wanted:
            confidence = np.rint(top * 100.0).astype(np.uint8)
            confidence[~covered] = CLASS_NODATA
            arrays["confidence"] = confidence
        return classes, arrays

    def report_section(self, request: Request, summary: List[Dict[str, Any]]) -> Dict[str, Any]:
        return {"classes": summary}

    def areas(self, report: Mapping[str, Any]) -> Any:
        return report.get("classes") or []

    def describe_areas(self, areas: Any) -> str:
        rows = sorted(areas or [], key=lambda row: -row.get("pixels", 0))
        return ", ".join(
            f"{row['name']} {format_hectares(row.get('hectares'))}"
            if row.get("hectares") is not None
            else f"{row['name']} {row.get('percent', 0):.1f} %"
            for row in rows
            if row.get("pixels", 0) > 0
        )
