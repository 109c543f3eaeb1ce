"""Issue 14: from layers and a few labels to weights and an honest assessment (the core of the
Train tab): class tables from labels, the spatial split, the baselines, a whole session."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from labelled_scene import labelled_scene as _scene
from labelled_scene import polygons_file as _polygons
from labelled_scene import stripes as _stripes
from labelled_scene import write_tif as _tif

from landfuse.core.errors import DatasetError, RequestError
from landfuse.core.label_classes import colour_for, parse_colour, polygon_classes, raster_classes
from landfuse.core.requests import RasterSource
from landfuse.core.train_requests import TrainRequest, label_classes, train_request_from_dict
from landfuse.core.training import baselines
from landfuse.core.training.session import run_session
from landfuse.models.registry import get_model_spec


def test_class_tables_come_from_the_labels() -> None:
    table = polygon_classes(["trees", " water", "trees", None, "built-up"])
    assert table.names == ["built-up", "trees", "water"]
    assert table.label_map[" water"] == table.label_map["water"] == 2
    assert [c.color for c in table.classes] == [
        colour_for("built-up", 0), colour_for("trees", 1), colour_for("water", 2)
    ]  # fmt: skip
    assert colour_for("Forest", 0)[1] > colour_for("Forest", 0)[2]  # green, not blue
    assert colour_for("Lake", 5)[2] > 150 and colour_for("urban", 0)[0] > 200
    numbers = polygon_classes([3, 1, 3.0])
    assert numbers.names == ["class 1", "class 3"] and numbers.label_map == {1: 0, 3: 1}
    with pytest.raises(DatasetError, match="label some polygons"):
        polygon_classes([None, " "])
    assert parse_colour("#1f78b4") == (31, 120, 180) == parse_colour("31, 120, 180")
    with pytest.raises(DatasetError, match="#1f78b4"):
        parse_colour("blueish")
    worldcover = raster_classes([0, 10, 40, 50, 80])
    assert worldcover.legend == "ESA WorldCover"
    assert worldcover.names == ["trees", "cropland", "built-up", "permanent water"]
    assert worldcover.label_map[0] == 255 and worldcover.label_map[80] == 3
    plain = raster_classes([0, 1, 2, 255], ["", "fields", "woods"])
    assert plain.names == ["class 0", "fields", "woods"] and plain.label_map[255] == 255


def test_the_spatial_split_keeps_whole_chips_apart_and_every_class_on_both_sides(tmp_path):
    from landfuse.core.datasets import RasterChipDataset, RasterScene

    files = _scene(tmp_path)
    label = _tif(tmp_path / "label.tif", _stripes()[None].astype(np.uint8))
    chips = RasterChipDataset([RasterScene((files["s2"],), label)], chip_size=32)
    train, val = baselines.spatial_split(chips, 3, holdout=0.3, seed=0)
    assert set(train).isdisjoint(val) and sorted(train + val) == list(range(len(chips)))
    assert 2 <= len(val) <= 4
    for side in (train, val):
        seen = set()
        for i in side:
            seen |= set(np.unique(chips.read(i).label).tolist())
        assert seen == {0, 1, 2}
    assert baselines.spatial_split(chips, 3, 0.3, seed=0) == (train, val)  # seeded


def test_cva_scores_a_change_it_sees(tmp_path):
    before = np.zeros((3, 32, 32), np.float32)
    after = before.copy()
    after[:, 8:16, 8:16] = 50
    mask, _ = baselines.change_vector_analysis(before, after)
    assert mask[8:16, 8:16].all() and mask.sum() == 64


def test_a_training_request_round_trips_and_refuses_nonsense(tmp_path):
    request = TrainRequest(
        task="landcover",
        model="amm_fusenet_lite_s2_s1_dem",
        inputs={"s2": (RasterSource("a.tif", (1, 2)),)},
        labels="p.geojson",
        label_field="class",
        output_dir=str(tmp_path),
        classes=({"value": "water", "name": "water", "color": "#0000ff"},),
    )
    again = train_request_from_dict(json.loads(json.dumps(request.to_dict())))
    assert again == request
    with pytest.raises(RequestError, match="multiple of 32"):
        TrainRequest("landcover", "m", {}, "p.gpkg", str(tmp_path), chip=50)
    with pytest.raises(RequestError, match="Unknown fields"):
        train_request_from_dict({**request.to_dict(), "epoch": 3})


def test_user_classes_with_hex_colours_and_typos_in_values(tmp_path):
    polygons = _polygons(tmp_path / "p.geojson")
    spec = get_model_spec("amm_fusenet_lite_s2_s1_dem")
    request = TrainRequest(
        "landcover", spec.name, {}, polygons, str(tmp_path), label_field="landuse",
        classes=({"value": "Water", "name": "water", "color": "#1f78b4"},
                 {"value": "trees", "name": "trees", "color": ""},
                 {"value": "built-up", "name": "built", "color": "200,0,0"}),
    )  # fmt: skip
    found = label_classes(request, spec)
    assert [c.color for c in found.classes] == [(31, 120, 180), colour_for("trees", 1), (200, 0, 0)]
    missing = TrainRequest(
        "landcover", spec.name, {}, polygons, str(tmp_path), label_field="landuse",
        classes=({"value": "water", "name": "water"}, {"value": "trees", "name": "trees"}),
    )  # fmt: skip
    inputs = {k: (RasterSource(v),) for k, v in _scene(tmp_path).items()}
    with pytest.raises(DatasetError, match="'Water'"):  # the typo is named, not a traceback
        run_session(replace(missing, inputs=inputs, epochs=1))


@pytest.mark.slow
def test_a_session_trains_scores_and_compares_with_the_random_forest(tmp_path):
    """A whole session in the worker: polygons with a text field, the spatial split, the lite
    network, the assessment with class names and the random forest on the same pixels."""
    files = _scene(tmp_path)
    request = TrainRequest(
        task="landcover",
        model="amm_fusenet_lite_s2_s1_dem",
        inputs={k: (RasterSource(v),) for k, v in files.items()},
        labels=_polygons(tmp_path / "labels.geojson"),
        label_field="landuse",
        output_dir=str(tmp_path / "run"),
        epochs=3,
        chip=32,
        batch=4,
        threads=1,
        device="cpu",
    )
    (tmp_path / "request.json").write_text(json.dumps(request.to_dict()))
    done = subprocess.run(
        [sys.executable, "-m", "landfuse.core.worker", str(tmp_path / "request.json")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events[0]["type"] == "started" and events[0]["mode"] == "train"
    epochs = [e for e in events if e["type"] == "progress" and e.get("phase") == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3] and "miou" in epochs[-1]["metrics"]
    result = events[-1]
    assert result["type"] == "result", events[-1]
    assessment = result["assessment"]
    assert assessment["network"]["class_names"] == ["Water", "built-up", "trees"]
    assert assessment["baseline"]["name"].startswith("random forest")
    assert assessment["baseline"]["miou"] > 0.9  # the stripes are easy for a forest
    assert "random forest" in assessment["verdict"]
    outputs = result["outputs"]
    assert Path(outputs["weights"]).parent == tmp_path / "run"
    assert Path(outputs["checkpoint"]).parent.name == "checkpoints"
    csv = Path(outputs["confusion"]).read_text()
    assert "Water" in csv and "class_0" not in csv
    sidecar = json.loads(Path(outputs["weights"] + ".json").read_text())
    assert sidecar["metadata"]["training"]["chip_size"] == 32  # the engine's default tile
    colours = {c["name"]: c["color"] for c in sidecar["metadata"]["classes"]}
    assert colours["trees"] == list(colour_for("trees", 0))
    # The checkpoint is refused as weights, with the file to use.
    from landfuse.models.errors import WeightsError
    from landfuse.models.weights import load_model

    with pytest.raises(WeightsError, match=r"model\.pt"):
        load_model(outputs["checkpoint"], model_name=request.model)


def test_the_verdict_says_which_is_better_and_when_the_scores_are_rough() -> None:
    from landfuse.core.training.session import verdict

    assessment = {
        "validation_chips": 4,
        "network": {"miou": 0.71, "counted_pixels": 50000},
        "baseline": {"name": "random forest (per pixel)", "miou": 0.62},
    }
    assert verdict(assessment, "landcover") == (
        "On 4 validation chips (50000 labelled pixels) the network scores mIoU 0.710, better "
        "than the random forest (per pixel) (0.620) on the same pixels."
    )
    assessment["baseline"]["miou"] = 0.9
    assert "worse than the random forest" in verdict(assessment, "landcover")
    assessment["network"]["counted_pixels"] = 192
    assert verdict(assessment, "landcover").startswith("Few validation pixels")
    change = {
        "validation_chips": 2,
        "network": {"change": {"f1": 0.5}, "counted_pixels": 9000},
        "baseline": {"name": "change-vector analysis + Otsu", "note": "unsupervised"},
    }
    assert verdict(change, "change").endswith("change F1 0.500; no baseline (unsupervised).")


def test_balanced_weights_favour_rare_classes_and_weight_the_loss(tmp_path) -> None:
    import torch

    from landfuse.core.datasets import RasterChipDataset, RasterScene
    from landfuse.core.training import TrainingRecipe, training_loss

    label = np.zeros((1, 64, 64), np.uint8)
    label[0, :, 56:] = 1  # one rare class (1/8 of the pixels)
    files = _scene(tmp_path)
    chips = RasterChipDataset(
        [RasterScene((files["s2"],), _tif(tmp_path / "l.tif", label))], chip_size=32
    )
    weights = baselines.balanced_weights(chips, range(len(chips)), 3)
    assert weights[1] > weights[0] and weights[2] == max(weights)  # class 2 is absent
    assert all(0.2 <= w <= 5.0 for w in weights)
    logits = torch.zeros(1, 2, 2, 2, requires_grad=True)
    target = torch.tensor([[[0, 0], [0, 1]]])
    plain = TrainingRecipe(epochs=1, max_iterations=None)
    weighted = TrainingRecipe(epochs=1, max_iterations=None, class_weights=(1.0, 3.0))
    assert torch.isclose(
        training_loss(logits, target, plain), training_loss(logits, target, weighted)
    )
    logits2 = torch.tensor([[[[2.0, 2.0], [2.0, 2.0]], [[0.0, 0.0], [0.0, 0.0]]]])
    assert training_loss(logits2, target, weighted) > training_loss(logits2, target, plain)
    assert TrainingRecipe.from_dict(weighted.to_dict()).class_weights == (1.0, 3.0)
