"""Every LandFuse Processing algorithm through processing.run, and one through qgis_process."""

import json
import subprocess
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import rasterio
from qgis.core import QgsProcessingException, QgsVectorLayer

pytestmark = pytest.mark.qgis

ROOT = Path(__file__).resolve().parents[2]


def _run(algorithm, parameters):
    import processing

    return processing.run(f"landfuse:{algorithm}", parameters)


def test_provider_lists_the_algorithms(provider):
    names = sorted(a.name() for a in provider.algorithms())
    assert names == sorted(
        [
            "landcover",
            "changedetection",
            "vectorisechanges",
            "changevisualisation",
            "assessaccuracy",
            "trainlandcover",
            "trainchange",
        ]
    )
    for algorithm in provider.algorithms():
        assert len(algorithm.shortHelpString()) > 80
        assert algorithm.group()


def test_landcover(provider, scenes, weights, tmp_path):
    out = tmp_path / "lc.tif"
    conf = tmp_path / "conf.tif"
    result = _run(
        "landcover",
        {
            "S2": str(scenes["s2"]),
            "S1": str(scenes["s1"]),
            "MODEL": "amm_fusenet_s2_s1_hunan",
            "WEIGHTS": str(weights["landcover"]),
            "OUTPUT": str(out),
            "CONFIDENCE": str(conf),
            "TILE": 64,
            "BATCH": 2,
            "PRECISION": "fp32",
        },
    )
    assert result["OUTPUT"] == str(out)
    with rasterio.open(out) as src:
        classes = src.read(1)
        assert src.crs.to_epsg() == 32631 and src.res == (10.0, 10.0)
        assert classes.shape == (96, 96)
    assert set(np.unique(classes)) <= set(range(7))
    with rasterio.open(conf) as src:
        values = src.read(1)
    assert values.min() >= 0 and values.max() <= 100
    assert (tmp_path / "lc.qml").is_file()
    report = json.loads(Path(result["REPORT"]).read_text())
    assert report["model"]["name"] == "amm_fusenet_s2_s1_hunan"
    assert not any(p.name.startswith(".landfuse") for p in tmp_path.iterdir())


def test_landcover_needs_the_model_inputs(provider, scenes, weights, tmp_path):
    with pytest.raises(QgsProcessingException, match="Sentinel-1"):
        _run(
            "landcover",
            {
                "S2": str(scenes["s2"]),
                "MODEL": "amm_fusenet_s2_s1_hunan",
                "WEIGHTS": str(weights["landcover"]),
                "OUTPUT": str(tmp_path / "x.tif"),
            },
        )
    assert list(tmp_path.iterdir()) == []


def test_the_weights_file_chooses_the_model_and_another_is_refused(
    provider, scenes, weights, tmp_path
):
    """MODEL left empty: the weights' sidecar names it; a different MODEL is refused before
    anything runs, naming the file's model."""
    parameters = {
        "S2": str(scenes["s2"]),
        "S1": str(scenes["s1"]),
        "WEIGHTS": str(weights["landcover"]),
        "OUTPUT": str(tmp_path / "lc.tif"),
        "TILE": 64,
        "PRECISION": "fp32",
    }
    result = _run("landcover", parameters)
    report = json.loads(Path(result["REPORT"]).read_text())
    assert report["model"]["name"] == "amm_fusenet_s2_s1_hunan"
    with pytest.raises(QgsProcessingException, match="holds weights for 'amm_fusenet_s2_s1_hunan'"):
        _run(
            "landcover",
            {**parameters, "MODEL": "amm_fusenet_s2_s1_dem", "OUTPUT": str(tmp_path / "b.tif")},
        )
    assert not (tmp_path / "b.tif").exists()


def test_change_then_vectorise_and_visualise(provider, scenes, weights, tmp_path):
    change = tmp_path / "change.tif"
    result = _run(
        "changedetection",
        {
            "BEFORE": str(scenes["before"]),
            "AFTER": str(scenes["after"]),
            "MODEL": "amfnet_rgb_levir",
            "WEIGHTS": str(weights["change"]),
            "OUTPUT": str(change),
            "PROBABILITY": str(tmp_path / "p.tif"),
            "TILE": 64,
            "PRECISION": "fp32",
        },
    )
    with rasterio.open(change) as src:
        mask = src.read(1)
    assert set(np.unique(mask)) <= {0, 1}
    assert result["CHANGED_HECTARES"] is not None
    # Vectorise the reference mask (known geometry) to check areas end to end.
    polygons = _run(
        "vectorisechanges",
        {
            "INPUT": str(scenes["truth"]),
            "VALUE": 1,
            "MIN_AREA": 0,
            "OUTPUT": str(tmp_path / "changes.gpkg"),
        },
    )
    layer = QgsVectorLayer(polygons["OUTPUT"], "changes", "ogr")
    assert layer.featureCount() == 1
    assert polygons["TOTAL_HECTARES"] == pytest.approx(24 * 24 * 0.25 / 10000)
    visual = _run(
        "changevisualisation",
        {
            "MAP": str(scenes["truth"]),
            "REFERENCE": str(scenes["truth"]),
            "OUTPUT": str(tmp_path / "visual.tif"),
        },
    )
    assert visual["F1"] == pytest.approx(1.0) and visual["IOU"] == pytest.approx(1.0)
    with rasterio.open(visual["OUTPUT"]) as src:
        rgb = src.read()
    assert tuple(rgb[:, 20, 30]) == (255, 255, 255)  # true positive: white
    assert tuple(rgb[:, 2, 2]) == (0, 0, 0)  # true negative: black


def test_assess_accuracy(provider, scenes, tmp_path):
    report = tmp_path / "acc.json"
    result = _run(
        "assessaccuracy",
        {
            "MAP": str(scenes["truth"]),
            "REFERENCE": str(scenes["truth"]),
            "REPORT": str(report),
            "TABLE": str(tmp_path / "cm.csv"),
        },
    )
    assert result["OA"] == pytest.approx(1.0)
    assert json.loads(report.read_text())["kappa"] == pytest.approx(1.0)
    assert (tmp_path / "cm.csv").read_text().count("\n") >= 3


def test_qgis_process_runs_an_algorithm(scenes, tmp_path):
    """The provider loads in the qgis_process command line (Debian's wrapper script passes
    --noversioncheck, which qgis_process refuses, so the binary is called directly)."""
    from qgis_process_env import qgis_process_binary, qgis_process_env

    binary = qgis_process_binary()
    env = qgis_process_env(tmp_path)
    env["PYTHONPATH"] = sysconfig.get_paths()["purelib"]
    out = tmp_path / "poly.gpkg"
    proc = subprocess.run(
        [
            binary,
            "run",
            "landfuse:vectorisechanges",
            "--",
            f"INPUT={scenes['truth']}",
            "VALUE=1",
            "MIN_AREA=0",
            f"OUTPUT={out}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "COUNT:\t1" in proc.stdout or "COUNT: 1" in proc.stdout, proc.stdout
    assert QgsVectorLayer(str(out), "p", "ogr").featureCount() == 1


def test_train_change_then_map_with_the_new_weights(provider, scenes, tmp_path):
    """A short training run from a label raster writes weights that the mapping algorithm takes."""
    out = tmp_path / "run"
    trained = _run(
        "trainchange",
        {
            "MODEL": "amfnet_rgb_levir",
            "BEFORE": str(scenes["before"]),
            "AFTER": str(scenes["after"]),
            "LABELS": str(scenes["truth"]),
            "ENCODER": 0,
            "EPOCHS": 1,
            "BATCH": 2,
            "CHIP": 32,
            "OUTPUT": str(out),
        },
    )
    weights = Path(trained["WEIGHTS"])
    assert weights.is_file() and Path(str(weights) + ".json").is_file()
    assert Path(trained["LOG"]).read_text().count("\n") >= 2
    mapped = _run(
        "changedetection",
        {
            "BEFORE": str(scenes["before"]),
            "AFTER": str(scenes["after"]),
            "MODEL": "amfnet_rgb_levir",
            "WEIGHTS": str(weights),
            "OUTPUT": str(tmp_path / "c.tif"),
            "TILE": 64,
            "PRECISION": "fp32",
        },
    )
    assert Path(mapped["OUTPUT"]).is_file()


def test_train_landcover_needs_labels(provider, scenes, tmp_path):
    with pytest.raises(QgsProcessingException, match="labels"):
        _run(
            "trainlandcover",
            {
                "MODEL": "amm_fusenet_s2_s1_hunan",
                "S2": str(scenes["s2"]),
                "S1": str(scenes["s1"]),
                "OUTPUT": str(tmp_path / "run"),
            },
        )


def _scratch_polygons(names_and_boxes, crs="EPSG:32631"):
    """A memory (scratch) polygon layer with a text class field, as a user draws it."""
    from qgis.core import QgsFeature, QgsGeometry, QgsProject, QgsRectangle

    layer = QgsVectorLayer(f"Polygon?crs={crs}&field=landuse:string", "my labels", "memory")
    features = []
    for name, (x0, y0, x1, y1) in names_and_boxes:
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(x0, y0, x1, y1)))
        feature.setAttribute("landuse", name)
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    QgsProject.instance().addMapLayer(layer)
    return layer


def test_train_landcover_from_a_scratch_layer_with_a_text_field(provider, scenes, tmp_path):
    """Issue 14: a memory layer is accepted, its text values name the classes (no mapping
    under Advanced), the assessment has the random forest on the same pixels; a typo in a
    mapping is a Processing error that says what to fix, not a traceback."""
    x, y = 500000.0, 4500000.0  # the scenes' origin; 96 px of 10 m
    layer = _scratch_polygons(
        [("water", (x, y - 960, x + 470, y)), ("trees", (x + 490, y - 960, x + 960, y))]
    )
    out = tmp_path / "run"
    parameters = {
        "MODEL": "amm_fusenet_s2_s1_hunan",
        "S2": str(scenes["s2"]),
        "S1": str(scenes["s1"]),
        "POLYGONS": layer,
        "FIELD": "landuse",
        "ENCODER": 0,
        "EPOCHS": 1,
        "BATCH": 2,
        "CHIP": 32,
        "THREADS": 1,
        "OUTPUT": str(out),
    }
    trained = _run("trainlandcover", parameters)
    sidecar = json.loads(Path(trained["WEIGHTS"] + ".json").read_text())["metadata"]
    assert [c["name"] for c in sidecar["classes"]] == ["trees", "water"]
    assessment = json.loads(Path(trained["ASSESSMENT"]).read_text())
    assert assessment["network"]["class_names"] == ["trees", "water"]
    assert assessment["baseline"]["name"].startswith("random forest")
    assert (out / "labels.gpkg").is_file()  # the scratch layer, written for the worker
    with pytest.raises(QgsProcessingException, match=r"'water'.*not in the label mapping"):
        _run("trainlandcover", {**parameters, "LABEL_MAP": "trees:0,watr:1"})
    with pytest.raises(QgsProcessingException, match="VALUE:CLASS"):
        _run("trainlandcover", {**parameters, "LABEL_MAP": "trees=0"})


@pytest.mark.realdata
def test_change_on_plain_pngs_needs_pixel_grid_mode(provider, weights, realdata, tmp_path):
    """LEVIR-CD tiles have no georeferencing: a clear error, then a run in pixel-grid mode."""
    levir = realdata / "levir_cd_samples"
    name = sorted((levir / "A").glob("*.png"))[0].name
    parameters = {
        "BEFORE": str(levir / "A" / name),
        "AFTER": str(levir / "B" / name),
        "MODEL": "amfnet_rgb_levir",
        "WEIGHTS": str(weights["change"]),
        "OUTPUT": str(tmp_path / "c.tif"),
        "TILE": 128,
        "PRECISION": "fp32",
    }
    with pytest.raises(QgsProcessingException, match=r"(?i)pixel"):
        _run("changedetection", parameters)
    result = _run("changedetection", {**parameters, "PIXEL_GRID": True})
    with rasterio.open(result["OUTPUT"]) as src:
        assert (src.width, src.height) == (256, 256)
        assert src.crs is None


def test_an_explicit_band_order_and_the_position_warning(provider, scenes, weights, tmp_path):
    """Issue 13: without descriptions the bands go by position and Processing says so; BANDS
    gives their order explicitly (the report records how they were matched)."""
    parameters = {
        "BEFORE": str(scenes["before"]),
        "AFTER": str(scenes["after"]),
        "WEIGHTS": str(weights["change"]),
        "TILE": 64,
        "PRECISION": "fp32",
    }
    plain = _run("changedetection", {**parameters, "OUTPUT": str(tmp_path / "a.tif")})
    report = json.loads(Path(plain["REPORT"]).read_text())
    assert [w["code"] for w in report["warnings"]] == ["bands_by_position"] * 2
    assert {e["band_matching"] for e in report["inputs"]} == {"position"}
    ordered = _run(
        "changedetection",
        {**parameters, "BANDS": "3,2,1", "OUTPUT": str(tmp_path / "b.tif")},
    )
    report = json.loads(Path(ordered["REPORT"]).read_text())
    assert report["warnings"] == []
    assert [(e["band_matching"], e["bands"]) for e in report["inputs"]] == [
        ("explicit", [3, 2, 1])
    ] * 2


@pytest.mark.realdata
def test_band_files_and_folders_as_processing_inputs(provider, realdata, repo_root, tmp_path):
    """Issue 13: the Rennes pair as delivered, as band files (any order) and as folders: the
    same map, no stacking by hand."""
    root = realdata / "oscd/Onera Satellite Change Detection dataset - Images/rennes"
    common = {
        "WEIGHTS": str(repo_root / "demo" / "weights" / "change_demo.pt"),
        "TILE": 256,
        "PRECISION": "fp32",
    }
    files = _run(
        "changedetection",
        {
            **common,
            "BEFORE_FILES": [str(p) for p in sorted((root / "imgs_1").glob("*.tif"))],
            "AFTER_FILES": [str(p) for p in sorted((root / "imgs_2").glob("*.tif"))[::-1]],
            "OUTPUT": str(tmp_path / "files.tif"),
        },
    )
    folders = _run(
        "changedetection",
        {
            **common,
            "BEFORE_FOLDER": str(root / "imgs_1"),
            "AFTER_FOLDER": str(root / "imgs_2"),
            "OUTPUT": str(tmp_path / "folders.tif"),
        },
    )
    report = json.loads(Path(folders["REPORT"]).read_text())
    assert {e["band_matching"] for e in report["inputs"]} == {"file name"}
    assert (report["grid"]["width"], report["grid"]["height"]) == (563, 339)
    with rasterio.open(files["OUTPUT"]) as a, rasterio.open(folders["OUTPUT"]) as b:
        assert np.array_equal(a.read(1), b.read(1))
    with pytest.raises(QgsProcessingException, match="only one of them"):
        _run(
            "changedetection",
            {**common, "BEFORE_FOLDER": str(root / "imgs_1"),
             "BEFORE": str(next((root / "imgs_1").glob("*.tif"))),
             "AFTER_FOLDER": str(root / "imgs_2"), "OUTPUT": str(tmp_path / "x.tif")},
        )  # fmt: skip
