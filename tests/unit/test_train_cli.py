"""``landfuse train-landcover``, ``train-change`` and ``evaluate`` end to end on tiny data."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from landfuse.core import train_cli
from landfuse.core.cli import build_parser, main

pytestmark = [
    pytest.mark.unit,
    pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning"),
]


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine OpenMP spinning makes small ops crawl."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _write(path: Path, data: np.ndarray, georef: bool = True, driver: str = "GTiff") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = data if data.ndim == 3 else data[None]
    profile = {
        "driver": driver,
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype.name,
    }
    if georef:
        profile.update(crs="EPSG:32633", transform=from_origin(500000, 4000640, 10, 10))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def _levir(root: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        label = np.kron(rng.integers(0, 2, (4, 4)), np.ones((16, 16), dtype=np.uint8))
        before = rng.integers(30, 110, (3, 64, 64)).astype(np.uint8)
        after = np.clip(before + 120 * label[None], 0, 255).astype(np.uint8)
        name = f"tile_{seed}_{i}.png"
        _write(root / "A" / name, before, False, "PNG")
        _write(root / "B" / name, after, False, "PNG")
        _write(root / "label" / name, (255 * label).astype(np.uint8), False, "PNG")


def test_parsers() -> None:
    assert train_cli.parse_label_map("0:255, 1:0,2:1") == {0: 255, 1: 0, 2: 1}
    assert train_cli.parse_label_map("water:0,forest:1") == {"water": 0, "forest": 1}
    with pytest.raises(argparse.ArgumentTypeError):
        train_cli.parse_label_map("1=2")
    classes = train_cli.parse_class_table("water, trees ,crops")
    assert [(c.value, c.name) for c in classes] == [(0, "water"), (1, "trees"), (2, "crops")]
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"train-landcover", "train-change", "evaluate"} <= set(commands)


def test_class_table_from_json(tmp_path) -> None:
    path = tmp_path / "classes.json"
    path.write_text(json.dumps([{"name": "a", "color": [1, 2, 3]}, {"name": "b"}]))
    classes = train_cli.parse_class_table(str(path))
    assert classes[0].color == (1, 2, 3) and classes[1].name == "b"


def test_train_change_then_evaluate_with_visualisation(tmp_path, capsys) -> None:
    data = tmp_path / "levir"
    _levir(data / "train", 4, 1)
    _levir(data / "val", 2, 2)
    out = tmp_path / "run"
    code = main(
        [
            "train-change", "--model", "amfnet_rgb_levir", "--data", str(data),
            "--encoder", "resnet18", "--epochs", "2", "--batch", "2", "--lr", "0.001",
            "--device", "cpu", "--out", str(out), "--json", "-q",
        ]
    )  # fmt: skip
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs_run"] == 2 and summary["monitor"] == "change_f1"
    assert Path(summary["weights"]).is_file() and Path(summary["plot"]).is_file()
    assert len(list(csv.DictReader((out / "training_log.csv").open()))) == 2

    assessment = tmp_path / "assessment"
    code = main(
        [
            "evaluate", "--weights", summary["weights"], "--data", str(data), "--split", "val",
            "--device", "cpu", "--batch", "2", "--visualise", "--out", str(assessment), "--json",
        ]
    )  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 2 and report["counted_pixels"] == 2 * 64 * 64
    assert {"change_f1", "change_iou", "oa", "kappa"} <= set(report)
    saved = json.loads((assessment / "report.json").read_text())
    assert saved["confusion_matrix"] == report["confusion_matrix"]
    pictures = sorted((assessment / "visualisation").glob("*.png"))
    assert [p.name for p in pictures] == ["tile_2_0.png", "tile_2_1.png"]
    with rasterio.open(pictures[0]) as src:
        rgb = src.read()
    colours = {
        tuple(int(v) for v in rgb[:, r, c]) for r in range(0, 64, 4) for c in range(0, 64, 4)
    }
    assert colours <= {(255, 255, 255), (255, 0, 0), (0, 255, 0), (0, 0, 0)}
    # The report's confusion matrix matches the visualisation of both pairs.
    counts = np.zeros(4, dtype=int)
    for picture in pictures:
        with rasterio.open(picture) as src:
            img = src.read()
        counts += [
            int(np.all(img == np.array(c)[:, None, None], axis=0).sum())
            for c in ((0, 0, 0), (255, 0, 0), (0, 255, 0), (255, 255, 255))
        ]
    assert counts.tolist() == [v for row in report["confusion_matrix"] for v in row]


def test_train_landcover_from_scenes_and_resume_rules(tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    blocks = np.kron(rng.integers(0, 3, (4, 4)), np.ones((16, 16), dtype=np.int64))
    s2_values = (1000 + 900 * blocks[None] + rng.normal(0, 100, (13, 64, 64))).astype(np.float32)
    s1_values = (-15 + 3 * blocks[None] + rng.normal(0, 1, (2, 64, 64))).astype(np.float32)
    s2 = _write(tmp_path / "s2.tif", s2_values)
    s1 = _write(tmp_path / "s1.tif", s1_values)
    label = _write(tmp_path / "label.tif", (blocks + 1).astype(np.uint8))  # 1..3 in the file
    args = [
        "train-landcover", "--model", "amm_fusenet_s2_s1_hunan", "--classes", "a,b,c",
        "--scene", str(s2), str(s1), str(label), "--label-map", "1:0,2:1,3:2",
        "--chip", "32", "--encoder", "resnet18", "--epochs", "1", "--batch", "2",
        "--device", "cpu", "--out", str(tmp_path / "run"), "-q",
    ]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "weights:" in printed
    meta = json.loads((tmp_path / "run" / "model.pt.json").read_text())["metadata"]
    assert [c["name"] for c in meta["classes"]] == ["a", "b", "c"]
    assert meta["training"]["data"]["train_samples"] == 4  # four 32 px chips
    assert "chips of 32 px" in meta["training"]["data"]["description"]
    # Running again into the same folder needs --resume.
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err
    # A finished run resumed does no more epochs and rewrites the same weights.
    assert main([*args, "--resume"]) == 0
    # The class map of the training scene, assessed against the label raster.
    out = tmp_path / "eval"
    assert main(["evaluate", "--weights", str(tmp_path / "run" / "model.pt"), "--scene", str(s2),
                 str(s1), str(label), "--label-map", "1:0,2:1,3:2", "--chip", "32",
                 "--device", "cpu", "--out", str(out)]) == 0  # fmt: skip
    assert "miou:" in capsys.readouterr().out
    rows = list(csv.reader((out / "confusion_matrix.csv").open()))
    assert rows[0][1:4] == ["a", "b", "c"]
    # The same weights on an AMM-FuseNet layout (test split, labels remapped 1..3 -> 0..2).
    root = tmp_path / "amm"
    for k, (r, c) in enumerate(((0, 0), (32, 32))):
        window = (slice(None), slice(r, r + 32), slice(c, c + 32))
        _write(root / "s2_dir" / "test" / f"t{k}.tif", s2_values[window])
        _write(root / "s1_dir" / "test" / f"t{k}.tif", s1_values[window])
        _write(root / "ann_dir" / "test" / f"t{k}.tif", (blocks + 1)[None][window].astype(np.uint8))
    assert main(["evaluate", "--weights", str(tmp_path / "run" / "model.pt"), "--data", str(root),
                 "--label-map", "1:0,2:1,3:2", "--device", "cpu", "--json"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 2 and report["counted_pixels"] == 2 * 32 * 32
    assert main(["evaluate", "--weights", str(tmp_path / "run" / "model.pt"), "--data", str(root),
                 "--split", "none"]) == 2  # fmt: skip
    assert "--split" in capsys.readouterr().err


def test_evaluate_a_map_against_raster_and_polygons(tmp_path, capsys) -> None:
    prediction = np.zeros((64, 64), np.uint8)
    prediction[:, 32:] = 1
    prediction[:4, :4] = 255  # nodata in the map
    reference = np.zeros((64, 64), np.uint8)
    reference[:, 16:] = 1
    pred_path = _write(tmp_path / "map.tif", prediction)
    ref_path = _write(tmp_path / "ref.tif", reference)
    out = tmp_path / "a"
    assert main(["evaluate", "--map", str(pred_path), "--reference", str(ref_path), "--change",
                 "--visualise", "--out", str(out), "--json"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    # Rows 0-3 x cols 0-3 ignored; reference change = cols 16..63, predicted = cols 32..63.
    tn, fp, fn, tp = 64 * 16 - 16, 0, 64 * 16, 64 * 32
    assert report["confusion_matrix"] == [[tn, fp], [fn, tp]]
    assert report["change"]["recall"] == pytest.approx(tp / (tp + fn))
    assert report["ignored_pixels"] == 16
    with rasterio.open(out / "change_visualisation.tif") as src:
        vis = src.read()
        assert src.crs is not None
    assert tuple(vis[:, 10, 20]) == (0, 255, 0) and tuple(vis[:, 10, 40]) == (255, 255, 255)

    # Polygons: one square of class 1 over columns 32..47, rows 0..15 (10 m pixels).
    square = [[500320, 4000640], [500480, 4000640], [500480, 4000480], [500320, 4000480]]
    square.append(square[0])
    geojson = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}},
        "features": [
            {"type": "Feature", "properties": {"cls": 1},
             "geometry": {"type": "Polygon", "coordinates": [square]}},
        ],
    }  # fmt: skip
    vector = tmp_path / "ref.geojson"
    vector.write_text(json.dumps(geojson))
    assert main(["evaluate", "--map", str(pred_path), "--reference", str(vector),
                 "--label-field", "cls", "--class-names", "x,y", "--json"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert report["confusion_matrix"] == [[0, 0], [0, 256]]
    assert report["oa"] == 1.0


def test_command_errors(tmp_path, capsys) -> None:
    code = main(["train-landcover", "--model", "amfnet_rgb_levir", "--data", str(tmp_path),
                 "--out", str(tmp_path / "x")])  # fmt: skip
    assert code == 2 and "train-change" in capsys.readouterr().err
    code = main(["train-change", "--model", "amfnet_rgb_levir", "--data", str(tmp_path / "none"),
                 "--out", str(tmp_path / "y")])  # fmt: skip
    assert code == 2 and "does not exist" in capsys.readouterr().err
    code = main(["evaluate", "--map", str(tmp_path / "m.tif")])
    assert code == 2 and "--reference" in capsys.readouterr().err


def test_class_tables_take_hex_colours_and_colours_that_suit_their_names(tmp_path) -> None:
    """Issue 14: hex colours as the docs say; without one, water is blue and trees green."""
    from landfuse.core.label_classes import colour_for

    classes = train_cli.parse_class_table("water:#1f78b4, trees")
    assert classes[0].color == (31, 120, 180) and classes[1].color == colour_for("trees", 1)
    path = tmp_path / "classes.json"
    path.write_text(
        json.dumps([{"name": "a", "color": "#010203"}, {"name": "b", "color": "4,5,6"}])
    )
    assert [c.color for c in train_cli.parse_class_table(str(path))] == [(1, 2, 3), (4, 5, 6)]
    with pytest.raises(argparse.ArgumentTypeError, match="#1f78b4"):
        train_cli.parse_class_table("water:blue")


def test_help_documents_the_data_layout_and_the_threads(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["train-change", "--help"])
    text = capsys.readouterr().out
    assert "ROOT/{train,val,test}/{A,B,label}/NAME.png" in text and "--threads" in text
    assert "checkpoints/checkpoint.pt" in text


def test_train_change_data_honours_chip_and_stride(tmp_path, capsys) -> None:
    """Issue 14/15: ``--data`` with ``--chip``/``--stride`` cuts the layout's images into chips
    (four 64-px pairs → 4 × 9 chips of 32 px at stride 16), one optimiser step per batch."""
    data = tmp_path / "levir"
    _levir(data / "train", 4, 1)
    out = tmp_path / "run"
    code = main(
        [
            "train-change", "--model", "amfnet_rgb_levir", "--data", str(data),
            "--val-split", "none", "--chip", "32", "--stride", "16", "--encoder", "resnet18",
            "--epochs", "1", "--batch", "6", "--device", "cpu", "--threads", "1",
            "--out", str(out), "--json", "-q",
        ]
    )  # fmt: skip
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    metadata = json.loads(Path(summary["weights"] + ".json").read_text())["metadata"]
    assert metadata["training"]["data"]["train_samples"] == 36
    assert metadata["training"]["steps"] == 6  # 36 chips / batch 6: not one step per epoch
    assert "chips of 32 px, stride 16" in metadata["training"]["data"]["description"]
    assert torch.get_num_threads() == 1


def test_text_class_fields_become_classes_on_the_command_line(tmp_path, capsys) -> None:
    """Polygons with a text class field train without --label-map: the values name the classes."""
    rng = np.random.default_rng(0)
    image = _write(tmp_path / "rgb.tif", rng.integers(0, 255, (3, 64, 64)).astype(np.uint8))
    x0, y1 = 500000, 4000640
    features = [
        {"type": "Feature", "properties": {"kind": name},
         "geometry": {"type": "Polygon", "coordinates": [[
             [x0 + dx, y1 - 600], [x0 + dx + 300, y1 - 600], [x0 + dx + 300, y1 - 20],
             [x0 + dx, y1 - 20], [x0 + dx, y1 - 600]]]}}
        for name, dx in (("water", 20), ("trees", 330))
    ]  # fmt: skip
    polygons = tmp_path / "labels.geojson"
    polygons.write_text(
        json.dumps(
            {"type": "FeatureCollection", "features": features,
             "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}}}
        )
    )  # fmt: skip
    code = main(
        [
            "train-change", "--model", "amfnet_rgb_levir", "--scene", str(image), str(image),
            str(polygons), "--label-field", "kind", "--chip", "32", "--val-split", "none",
            "--encoder", "resnet18", "--epochs", "1", "--batch", "2", "--device", "cpu",
            "--out", str(tmp_path / "run"), "--json", "-q",
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert "classes from the field 'kind': trees→1, water→1" in capsys.readouterr().err
