"""scripts/train_realdata.py: the baselines on generated data, and a tiny run on the real data."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"

pytestmark = pytest.mark.unit

needs_realdata = pytest.mark.skipif(
    not (REALDATA / "terramind_examples").is_dir(),
    reason=f"the shared real data is not at {REALDATA} (see its PROVENANCE.md)",
)


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location(
        "train_realdata", ROOT / "scripts" / "train_realdata.py"
    )
    module = importlib.util.module_from_spec(spec)
    # Registered before running: dataclasses resolve the module's (postponed) annotations.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture
def one_thread():
    # Two shared cores: more threads than that slow training down many times over.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_otsu_splits_two_populations(script) -> None:
    rng = np.random.default_rng(0)
    low, high = rng.normal(10, 2, 5000), rng.normal(60, 5, 1000)
    threshold = script.otsu_threshold(np.concatenate([low, high]))
    # Any cut in the empty gap separates the two; Otsu must find one of them.
    assert low.max() <= threshold < high.min()
    # With overlapping populations the cut lies between the two means.
    a, b = rng.normal(10, 8, 5000), rng.normal(40, 8, 5000)
    assert 20 < script.otsu_threshold(np.concatenate([a, b])) < 30
    assert script.otsu_threshold(np.full(10, 3.0)) == 3.0


def test_change_vector_analysis_finds_a_changed_block(script) -> None:
    rng = np.random.default_rng(1)
    before = rng.normal(100, 3, (3, 64, 64))
    after = before + rng.normal(0, 3, before.shape)
    after[:, 10:30, 20:40] += 80  # a new building: +80 in every band
    mask, threshold = script.change_vector_analysis(before, after)
    truth = np.zeros((64, 64), dtype=np.int64)
    truth[10:30, 20:40] = 1
    np.testing.assert_array_equal(mask, truth)
    assert threshold > 0


def test_lulc_table_maps_every_file_value(script) -> None:
    assert [c.value for c in script.LULC_CLASSES] == list(range(9))
    assert script.LULC_LABEL_MAP[0] == script.IGNORE
    assert script.LULC_LABEL_MAP[7] == 6 and script.LULC_CLASSES[6].name == "snow/ice"
    assert len({c.color for c in script.LULC_CLASSES}) == 9


@needs_realdata
@pytest.mark.realdata
def test_offset_tiles_are_detected(script, tmp_path) -> None:
    s2 = REALDATA / "terramind_examples" / "S2L1C"
    flags = {t: script.s2_has_offset(s2 / f"{t}.tif") for t in script.TERRAMIND_TILES}
    assert flags == {
        "282D_485L_3_3": True,
        "38D_378R_2_3": False,
        "609U_541L_3_0": True,
        "637U_59R_1_3": False,
    }
    import rasterio

    vrt = script.harmonised_s2(s2 / "282D_485L_3_3.tif", tmp_path)
    assert vrt.suffix == ".vrt"
    with rasterio.open(s2 / "282D_485L_3_3.tif") as a, rasterio.open(vrt) as b:
        np.testing.assert_array_equal(a.read().astype(np.int32) - 1000, b.read())


def _in_range(value, lo=0.0, hi=1.0) -> bool:
    return isinstance(value, float) and math.isfinite(value) and lo <= value <= hi


@needs_realdata
@pytest.mark.realdata
@pytest.mark.slow
def test_tiny_landcover_run(script, tmp_path, one_thread) -> None:
    settings = script.LandCoverSettings(
        val_rows=32, chip=32, stride=32, epochs=1, batch=2, max_train_chips=4,
        finetune_epochs=1, engine_tile=64, engine_overlap=0, rf_trees=4, rf_max_samples=0.05,
    )  # fmt: skip
    summary = script.train_landcover(REALDATA, tmp_path / "lc", settings, seed=3)
    assert summary["data"]["train_chips"] == 4 and summary["data"]["val_chips"] == 21
    assert summary["data"]["harmonised_s2"] == [
        "282D_485L_3_3_S2L1C_minus1000.vrt",
        "609U_541L_3_0_S2L1C_minus1000.vrt",
    ]
    deep, forest = summary["deep"], summary["random_forest"]
    for row in (deep["val"], deep["test_evaluate_weights"], deep["test_engine"], forest["test"]):
        assert _in_range(row["oa"]) and _in_range(row["miou"])
        assert _in_range(row["kappa"], -1.0, 1.0)
    # Every pixel of the 224 × 224 test tile is scored, by each way of scoring.
    assert sum(deep["test_engine"]["reference_pixels"].values()) == 224 * 224
    assert sum(forest["test"]["reference_pixels"].values()) == 224 * 224
    # The forest learns from the union of the training chips' pixels, each once.
    assert forest["training_pixels"] == 4 * 32 * 32
    # The local experiment: scored on the test tile's bottom strip only (32 rows).
    local = summary["local"]
    assert local["strip_first_row"] == 192 and local["local_chips"] == 4
    for key in ("deep_before", "deep_finetuned", "rf_before", "rf_with_local"):
        assert sum(local[key]["reference_pixels"].values()) == 32 * 224
        assert _in_range(local[key]["oa"]), key
    assert set(summary["signatures"]) == set(script.TERRAMIND_TILES)
    assert summary["signatures"]["609U_541L_3_0"]["snow/ice"]["pixels"] == 224 * 224
    out = tmp_path / "lc"
    for name in ("summary.json", "run/model.pt", "run/training_log.csv", "run/learning_curves.png",
                 "engine_assessment.json", "landcover_test_tile.png"):  # fmt: skip
        assert (out / name).is_file(), name
    assert json.loads((out / "summary.json").read_text())["model"] == settings.model
    # A second run into the same folder replaces it; a foreign folder is refused.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    with pytest.raises(script.RealDataError, match="not written by"):
        script.prepare_folder(foreign)


@needs_realdata
@pytest.mark.realdata
@pytest.mark.slow
def test_tiny_change_run(script, tmp_path, one_thread) -> None:
    settings = script.dataclasses.replace(
        script.LEVIR, chip=64, stride=64, epochs=1, batch=2, max_train_chips=4,
        test=("test_2_0000_0000.png", "test_7_0256_0512.png"),
    )  # fmt: skip
    summary = script.train_change(REALDATA, tmp_path / "cd", settings, seed=3)
    for method in ("deep", "cva_otsu"):
        row = summary[method]["test"]
        for key in ("change_recall", "change_f1", "change_iou", "oa"):
            assert _in_range(row[key]), (method, key, row[key])
        assert row["change_precision"] is None or _in_range(row["change_precision"])
    assert [p["pair"] for p in summary["per_pair"]] == list(settings.test)
    # CVA + Otsu finds some of the new buildings of these pairs (F1 well above zero).
    assert all(p["cva"]["f1"] > 0.05 for p in summary["per_pair"])
    vis = sorted(Path(p).name for p in summary["visualisations"])
    assert vis == [
        "levir_test_2_0000_0000_amfnet.png",
        "levir_test_2_0000_0000_cva.png",
        "levir_test_7_0256_0512_amfnet.png",
        "levir_test_7_0256_0512_cva.png",
    ]
    from PIL import Image

    image = np.asarray(Image.open(summary["visualisations"][1]))
    assert image.shape == (256, 256, 3)
    colours = {tuple(c) for c in image.reshape(-1, 3)}
    assert colours <= {(255, 255, 255), (255, 0, 0), (0, 255, 0), (0, 0, 0)}
    assert summary["deep"]["parameters"] > 1_000_000
    markdown = script.summary_markdown({"levir": summary})
    assert "| AMFNet |" in markdown and "| CVA + Otsu |" in markdown
