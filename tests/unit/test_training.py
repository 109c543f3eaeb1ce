"""Training, resuming, fine-tuning and evaluating the light (ResNet-18) registry networks.

Everything runs on the CPU with 64×64 chips and batches of 2, so each run takes seconds.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from landfuse.core import datasets as D
from landfuse.core import engine
from landfuse.core import training as T
from landfuse.core.errors import CancelledError
from landfuse.core.requests import LandCoverRequest, ModalityInput, RasterSource
from landfuse.models import weights as W
from landfuse.models.errors import WeightsMismatchError
from landfuse.models.registry import ClassSpec
from landfuse.models.resnet import build_resnet

pytestmark = pytest.mark.unit

LANDCOVER = "amm_fusenet_s2_s1_hunan"
CHANGE = "amfnet_rgb_levir"


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine OpenMP spinning makes small ops crawl."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class SyntheticLandCover(D.LabelledDataset):
    """S2-like (13 bands) and S1-like (2 bands) chips whose values depend on 3 classes."""

    def __init__(self, n: int, seed: int = 0, size: int = 64, classes: int = 3) -> None:
        self.n, self.seed, self.size, self.classes = n, seed, size, classes

    def __len__(self) -> int:
        return self.n

    @property
    def names(self) -> list[str]:
        return [f"chip{i}" for i in range(self.n)]

    def read(self, index: int) -> D.RawSample:
        rng = np.random.default_rng([self.seed, index])
        blocks = rng.integers(0, self.classes, (4, 4))
        label = np.kron(blocks, np.ones((self.size // 4, self.size // 4), dtype=np.int64))
        label[:2, :2] = 255  # a few unlabelled pixels
        cls = np.where(label == 255, 0, label)
        s2 = 1000 + 800 * cls[None] + rng.normal(0, 150, (13, self.size, self.size))
        s1 = -15 + 4 * cls[None] + rng.normal(0, 1, (2, self.size, self.size))
        return D.RawSample([s2.astype(np.float32), s1.astype(np.float32)], label, self.names[index])


class SyntheticChange(D.LabelledDataset):
    """RGB pairs where the after image brightens inside changed blocks."""

    def __init__(self, n: int, seed: int = 0, size: int = 64) -> None:
        self.n, self.seed, self.size = n, seed, size

    def __len__(self) -> int:
        return self.n

    @property
    def names(self) -> list[str]:
        return [f"pair{i}" for i in range(self.n)]

    def read(self, index: int) -> D.RawSample:
        rng = np.random.default_rng([self.seed, 100 + index])
        label = np.kron(rng.integers(0, 2, (4, 4)), np.ones((16, 16), dtype=np.int64))
        before = rng.uniform(40, 120, (3, self.size, self.size))
        after = before + 110 * label[None] + rng.normal(0, 5, before.shape)
        return D.RawSample(
            [before.astype(np.float32), np.clip(after, 0, 255).astype(np.float32)],
            label,
            self.names[index],
        )


def _config(
    tmp_path: Path, name: str, model: str = LANDCOVER, **recipe_changes
) -> T.TrainingConfig:
    recipe = T.recipe_for(
        model,
        batch_size=2,
        epochs=recipe_changes.pop("epochs", 3),
        max_iterations=None,
        **recipe_changes,
    )
    return T.TrainingConfig(
        model=model,
        output_dir=str(tmp_path / name),
        recipe=recipe,
        encoder="resnet18",
        classes=_classes(3) if model == LANDCOVER else None,
        seed=7,
        device="cpu",
    )


def _classes(n: int) -> tuple[ClassSpec, ...]:
    return tuple(ClassSpec(i, f"class {i}", (40 * i, 100, 200 - 40 * i)) for i in range(n))


def _normalised_batch(spec, dataset: D.LabelledDataset, indices=(0, 1)) -> list[torch.Tensor]:
    view = D.PreparedDataset(dataset, T.make_normaliser(spec), None)
    items = [view[i] for i in indices]
    return [torch.stack([it["inputs"][k] for it in items]) for k in range(len(items[0]["inputs"]))]


def test_published_recipes() -> None:
    amm = T.recipe_for(LANDCOVER)
    assert (amm.optimizer, amm.learning_rate, amm.momentum, amm.weight_decay) == (
        "sgd",
        0.01,
        0.9,
        1e-4,
    )
    assert (amm.poly_power, amm.schedule_unit, amm.loss, amm.ignore_index) == (
        0.9,
        "iteration",
        "cross_entropy",
        255,
    )
    assert amm.bn_momentum == 0.01 and amm.max_iterations == 50_000 and amm.batch_size == 10
    amf = T.recipe_for(CHANGE)
    assert (amf.optimizer, amf.learning_rate, amf.schedule_unit, amf.epochs) == (
        "adam",
        1e-4,
        "epoch",
        200,
    )
    assert amf.loss == "bce_one_hot" and amf.output_weights == (1.0, 0.5, 0.4, 0.3)
    with pytest.raises(T.TrainingError):
        T.recipe_for(LANDCOVER, optimizer="rmsprop")


def test_losses_against_hand_values() -> None:
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # [1, 2, 1, 2]
    label = torch.tensor([[[0, 255]]])
    ce = T.training_loss(logits, label, T.recipe_for(LANDCOVER))
    assert float(ce) == pytest.approx(float(np.log(1 + np.exp(-2.0))))
    bce_recipe = T.recipe_for(CHANGE)
    main = T.training_loss(logits, label, dataclasses.replace(bce_recipe, output_weights=(1.0,)))
    # Pixel 0, target one-hot (1, 0): BCE(2, 1) and BCE(0, 0); the ignored pixel is left out.
    expected = (np.log(1 + np.exp(-2.0)) + np.log(2.0)) / 2
    assert float(main) == pytest.approx(expected)
    deep = T.training_loss([logits] * 4, label, bce_recipe)
    assert float(deep) == pytest.approx(expected * 2.2)
    with pytest.raises(T.TrainingError, match="outputs"):
        T.training_loss(logits, label, bce_recipe)


def test_band_statistics_are_exact_and_pool_both_dates() -> None:
    data = SyntheticLandCover(3)
    spec = T.resolve_model_spec(_config(Path("/unused"), "x"))
    norms = T.compute_band_statistics(data, spec)
    s2 = np.concatenate([data.read(i).inputs[0].reshape(13, -1) for i in range(3)], axis=1)
    np.testing.assert_allclose(norms[0].mean, s2.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(norms[0].std, s2.std(axis=1), rtol=1e-5)
    assert norms[0].mode == "fixed_stats" and len(norms[1].mean) == 2
    pairs = SyntheticChange(2)
    change_spec = T.resolve_model_spec(_config(Path("/unused"), "y", model=CHANGE))
    (rgb,) = T.compute_band_statistics(pairs, change_spec)
    both = np.concatenate(
        [pairs.read(i).inputs[d].reshape(3, -1) for i in range(2) for d in range(2)], axis=1
    )
    np.testing.assert_allclose(rgb.mean, both.mean(axis=1), rtol=1e-6)


def test_training_lowers_the_loss_and_writes_loadable_weights(tmp_path) -> None:
    train_set, val_set = SyntheticLandCover(4, seed=1), SyntheticLandCover(2, seed=2)
    config = _config(tmp_path, "run", epochs=3, learning_rate=0.02)
    seen = []
    result = T.train(config, train_set, val_set, progress=seen.append)
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.7 * losses[0], losses
    assert [p.global_step for p in seen if p.phase == "train"] == list(range(1, 7))
    # Outputs of the run.
    rows = list(csv.DictReader(result.log_path.open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert {"train_loss", "val_loss", "miou", "oa", "kappa"} <= set(rows[0])
    assert result.plot_path is not None and result.plot_path.read_bytes()[:4] == b"\x89PNG"
    assert result.best_epoch is not None and result.best_score == max(
        r["miou"] for r in result.history
    )
    # The weights file: fixed statistics, classes, provenance, metrics.
    model, meta, sha = W.load_model(result.weights_path)
    assert sha == result.sha256
    assert [m.normalisation.mode for m in meta.modalities] == ["fixed_stats", "fixed_stats"]
    assert meta.modalities[0].normalisation == result.spec.modalities[0].normalisation
    assert [c.name for c in meta.classes] == ["class 0", "class 1", "class 2"]
    assert meta.config["encoder"] == "resnet18" and meta.config["num_classes"] == 3
    assert meta.training["seed"] == 7 and meta.training["epochs_run"] == 3
    assert meta.metrics["validation"]["miou"] == pytest.approx(result.best_score)
    # Same predictions as the model at the end of training.
    batch = _normalised_batch(result.spec, val_set)
    with torch.inference_mode():
        expected = result.model.predict(*batch)
        got = model.predict(*batch)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # And the same scores when the weights are evaluated on the validation data.
    report = T.evaluate_weights(result.weights_path, val_set, device="cpu", batch_size=2)
    assert report.mean_iou == pytest.approx(result.best_score)
    # The engine maps a scene with these weights as the trained model predicts it.
    sample = val_set.read(0)
    paths = []
    for key, data in zip(("s2", "s1"), sample.inputs):
        path = tmp_path / f"scene_{key}.tif"
        profile = {"driver": "GTiff", "width": 64, "height": 64, "count": data.shape[0]}
        with rasterio.open(
            path, "w", dtype="float32", crs="EPSG:32633",
            transform=from_origin(500000, 4000640, 10, 10), **profile,
        ) as dst:  # fmt: skip
            dst.write(data)
        paths.append(ModalityInput(key, (RasterSource(str(path)),)))
    request = LandCoverRequest(
        inputs=tuple(paths), model=LANDCOVER, weights=str(result.weights_path),
        output_dir=str(tmp_path / "mapped"), tile=64, overlap=0, batch=1, device="cpu",
        precision="fp32", outputs=("classes",), cog=False,
    )  # fmt: skip
    outputs = engine.run(request).outputs
    with rasterio.open(outputs["classes"]) as src:
        mapped = src.read(1)
    np.testing.assert_array_equal(mapped, expected[0].argmax(dim=0).numpy())


def test_change_training_with_deep_supervision(tmp_path) -> None:
    config = _config(tmp_path, "change", model=CHANGE, epochs=3, learning_rate=2e-3)
    result = T.train(config, SyntheticChange(4, seed=3), SyntheticChange(2, seed=4))
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < losses[0], losses
    assert result.monitor == "change_f1" and "change_iou" in result.history[0]
    model, meta, _ = W.load_model(result.weights_path, model_name=CHANGE)
    assert meta.training["recipe"]["output_weights"] == [1.0, 0.5, 0.4, 0.3]
    batch = _normalised_batch(result.spec, SyntheticChange(2, seed=4))
    with torch.inference_mode():
        torch.testing.assert_close(model.predict(*batch), result.model.predict(*batch))


def test_resumed_run_matches_an_uninterrupted_one(tmp_path) -> None:
    train_set, val_set = SyntheticLandCover(4, seed=1), SyntheticLandCover(2, seed=2)
    straight = T.train(_config(tmp_path, "straight", epochs=2), train_set, val_set)

    config = _config(tmp_path, "interrupted", epochs=2)
    steps = {"n": 0}

    def stop_in_second_epoch() -> bool:
        steps["n"] += 1
        return steps["n"] == 3  # first step of epoch 2 (2 steps per epoch)

    with pytest.raises(CancelledError, match="resume"):
        T.train(config, train_set, val_set, should_stop=stop_in_second_epoch)
    assert (Path(config.output_dir) / T.CHECKPOINT_NAME).exists()
    with pytest.raises(T.TrainingError, match="resume"):
        T.train(config, train_set, val_set)
    resumed = T.train(dataclasses.replace(config, resume=True), train_set, val_set)

    assert resumed.epochs_run == straight.epochs_run == 2
    for a, b in zip(resumed.history, straight.history):
        assert {k: v for k, v in a.items() if k != "seconds"} == {
            k: v for k, v in b.items() if k != "seconds"
        }
    expected = straight.model.state_dict()
    for key, value in resumed.model.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0, msg=key)
    # A checkpoint written with other settings is refused.
    other = dataclasses.replace(config, resume=True, seed=8)
    with pytest.raises(T.TrainingError, match="seed"):
        T.train(other, train_set, val_set)


def test_early_stopping_keeps_the_best_epoch(tmp_path) -> None:
    # A learning rate of ~0 cannot improve on the first epoch: stop after `patience` more.
    config = _config(tmp_path, "early", epochs=5, learning_rate=1e-12, patience=1)
    result = T.train(config, SyntheticLandCover(4, seed=1), SyntheticLandCover(2, seed=2))
    assert result.stopped_early and result.epochs_run == 2 and result.best_epoch == 1


def test_finetune_with_another_class_count(tmp_path) -> None:
    train_set = SyntheticLandCover(4, seed=1)
    source = T.train(_config(tmp_path, "source", epochs=1), train_set)
    five = T.TrainingConfig(
        model=LANDCOVER,
        output_dir=str(tmp_path / "five"),
        recipe=T.recipe_for(LANDCOVER, batch_size=2, epochs=1, max_iterations=None),
        encoder="resnet18",
        classes=_classes(5),
        finetune_from=str(source.weights_path),
        device="cpu",
    )
    spec = T.resolve_model_spec(five)
    replaced = T.classifier_keys(spec)
    assert replaced == {"classifier.classifier.3.weight", "classifier.classifier.3.bias"}
    # Loading alone: everything but the final layer comes from the source.
    fresh = T.build_model(spec)
    info = T.load_for_finetuning(fresh, spec, source.weights_path)
    assert set(info.replaced_keys) == replaced
    src = source.model.state_dict()
    for key, value in fresh.state_dict().items():
        if key in replaced:
            assert value.shape[0] == 5
        else:
            torch.testing.assert_close(value, src[key], rtol=0, atol=0, msg=key)
    # A fine-tuning run: 5 outputs, the source's normalisation, provenance recorded.
    tuned = T.train(five, SyntheticLandCover(4, seed=5, classes=5))
    meta = tuned.metadata
    assert meta.config["num_classes"] == 5 and len(meta.classes) == 5
    assert meta.modalities[0].normalisation == source.spec.modalities[0].normalisation
    assert meta.training["finetune_from"]["sha256"] == source.sha256
    with torch.inference_mode():
        out = tuned.model.predict(*_normalised_batch(tuned.spec, train_set))
    assert out.shape == (2, 5, 64, 64)
    # Another encoder cannot be fine-tuned from these weights.
    wrong = dataclasses.replace(five, encoder="resnet34", output_dir=str(tmp_path / "wrong"))
    with pytest.raises(WeightsMismatchError, match="resnet34"):
        T.train(wrong, train_set)


def test_encoders_initialised_from_a_torchvision_style_file(tmp_path) -> None:
    torch.manual_seed(3)
    imagenet_like = build_resnet("resnet18", 3).state_dict()
    imagenet_like["fc.weight"] = torch.zeros(1000, 512)
    imagenet_like["fc.bias"] = torch.zeros(1000)
    path = tmp_path / "resnet18.pth"
    torch.save(imagenet_like, path)
    spec = T.resolve_model_spec(_config(tmp_path, "init"))
    model = T.build_model(spec)
    names = T.init_encoders_from_file(model, path)
    assert names == ["backbone1", "backbone2"]
    torch.testing.assert_close(
        model.backbone2.layer3[0].conv1.weight, imagenet_like["layer3.0.conv1.weight"]
    )
    # conv1 adapted from 3 to 13 bands: the RGB mean filter scaled by 3/13.
    expected = imagenet_like["conv1.weight"].mean(dim=1, keepdim=True) * 3 / 13
    torch.testing.assert_close(model.backbone1.conv1.weight[:, :1], expected)
    config = dataclasses.replace(_config(tmp_path, "init", epochs=1), init_encoders=str(path))
    result = T.train(config, SyntheticLandCover(2, seed=1))
    assert result.metadata.training["init_encoders"]["encoders"] == ["backbone1", "backbone2"]


def test_configuration_errors(tmp_path) -> None:
    data = SyntheticLandCover(3)
    with pytest.raises(T.TrainingError, match="at least 2"):
        T.train(
            dataclasses.replace(
                _config(tmp_path, "a"),
                recipe=T.recipe_for(LANDCOVER, batch_size=1, epochs=1, max_iterations=None),
            ),
            data,
        )
    with pytest.raises(T.TrainingError, match="one batch"):
        T.train(
            dataclasses.replace(
                _config(tmp_path, "b"),
                recipe=T.recipe_for(LANDCOVER, batch_size=4, epochs=1, max_iterations=None),
            ),
            data,
        )
    with pytest.raises(T.TrainingError, match="bands"):
        T.train(_config(tmp_path, "c", model=CHANGE), data)
    with pytest.raises(T.TrainingError, match="multiples of 16"):
        T.train(_config(tmp_path, "d"), SyntheticLandCover(2, size=40))
    assert (
        T.TrainingConfig(model=LANDCOVER, output_dir="x").effective_recipe.max_iterations == 50_000
    )
    assert json.loads(json.dumps(_config(tmp_path, "e").to_dict()))["encoder"] == "resnet18"
