"""Training, fine-tuning and evaluation of the registry networks (issue 6).

The papers' workflow is train → test → predict; this module is the train and test part, with
the published recipes as defaults (spec/NETWORKS.md):

- AMM-FuseNet (§2, "Published training recipe"): SGD momentum 0.9, weight decay 1e-4, lr 0.01
  with poly decay (power 0.9) per iteration over 50k iterations, batch 10, cross-entropy with
  ignore 255, BatchNorm momentum 0.01 in the encoders. Batches of one raise in BatchNorm after
  global pooling, so the last incomplete batch of an epoch is dropped.
- AMFNet (§3): Adam lr 1e-4, poly decay (0.9) per epoch over 200 epochs, batch 32,
  ``BCEWithLogits`` on the one-hot target with deep supervision
  ``main + 0.5·aux1 + 0.4·aux2 + 0.3·aux3``.

Every number is a field of :class:`TrainingRecipe` (change them with ``dataclasses.replace``).
The models the plugin trains use fixed per-band statistics computed from the training data
(normalisation mode ``fixed_stats``), stored in the weights file, so every tile of a scene sees
the same scaling at inference (no seams, unlike per-tile min-max).

A run (:func:`train`) writes into its output folder: the final weights (``model.pt`` + JSON
sidecar, :func:`landfuse.models.weights.save_weights`: those of the best validation epoch) with
classes, bands, normalisation, provenance and validation metrics; ``training_log.csv``
(metrics per epoch); ``learning_curves.png``; and ``checkpoints/checkpoint.pt`` after every
epoch (model, optimiser, scheduler, epoch, best score and weights, RNG states, history), kept
apart so it is never taken for the weights (loading it as weights says which file to use).

Determinism: the initialisation comes from the seed, the sample order of epoch ``e`` from
``(seed, e)`` and the augmentation of sample ``i`` in epoch ``e`` from ``(seed, e, i)``; the
global RNG states (dropout) are saved with every checkpoint. A run interrupted at any point and
resumed (``TrainingConfig.resume``) restarts from the last finished epoch and, on the CPU, ends
with exactly the weights of an uninterrupted run. On GPUs cuDNN runs in deterministic mode, but
some CUDA kernels (e.g. the backward pass of bilinear upsampling) use atomic additions, so two
GPU runs may differ in the last bits.

Example (a short script)::

    from landfuse.core import datasets, training

    train_set = datasets.AmmFuseNetDataset(root, "train", modalities=("s2", "s1"),
                                           hunan_remap=True)
    val_set = datasets.AmmFuseNetDataset(root, "val", modalities=("s2", "s1"), hunan_remap=True)
    config = training.TrainingConfig(
        model="amm_fusenet_s2_s1_hunan", output_dir="runs/hunan", encoder="resnet18",
        recipe=training.recipe_for("amm_fusenet_s2_s1_hunan", epochs=30, max_iterations=None))
    result = training.train(config, train_set, val_set)
    print(result.weights_path, result.best_score)

The package: ``base`` (the error, recipes, configuration, progress and result), ``networks``
(building, initialising and fine-tuning the networks, normalisation, the loss), ``evaluation``
(scoring, the CSV log and the learning curves), ``state`` (the checks, seeds, set-up and
checkpoint of a run) and ``loop`` (:func:`train`).
"""

from __future__ import annotations

from .base import (
    AMFNET_RECIPE,
    AMM_FUSENET_RECIPE,
    CHECKPOINT_NAME,
    CHECKPOINT_VERSION,
    LOG_NAME,
    PLOT_INTERVAL_S,
    PLOT_NAME,
    PathLike,
    TrainingConfig,
    TrainingError,
    TrainingProgress,
    TrainingRecipe,
    TrainingResult,
    recipe_for,
    resolve_model_spec,
)
from .evaluation import (
    PredictionCallback,
    evaluate_model,
    evaluate_weights,
    plot_learning_curves,
    size_multiple,
    spec_from_metadata,
    write_history_csv,
)
from .loop import train
from .networks import (
    FinetuneSource,
    SpecNormaliser,
    build_model,
    classifier_keys,
    compute_band_statistics,
    encoders_of,
    init_encoders_from,
    init_encoders_from_file,
    input_modalities,
    load_for_finetuning,
    make_normaliser,
    training_loss,
    with_normalisation,
)
from .state import training_outputs

__all__ = [
    "AMFNET_RECIPE",
    "AMM_FUSENET_RECIPE",
    "CHECKPOINT_NAME",
    "CHECKPOINT_VERSION",
    "LOG_NAME",
    "PLOT_INTERVAL_S",
    "PLOT_NAME",
    "FinetuneSource",
    "PathLike",
    "PredictionCallback",
    "SpecNormaliser",
    "TrainingConfig",
    "TrainingError",
    "TrainingProgress",
    "TrainingRecipe",
    "TrainingResult",
    "build_model",
    "classifier_keys",
    "compute_band_statistics",
    "encoders_of",
    "evaluate_model",
    "evaluate_weights",
    "init_encoders_from",
    "init_encoders_from_file",
    "input_modalities",
    "load_for_finetuning",
    "make_normaliser",
    "plot_learning_curves",
    "recipe_for",
    "resolve_model_spec",
    "size_multiple",
    "spec_from_metadata",
    "train",
    "training_loss",
    "training_outputs",
    "with_normalisation",
    "write_history_csv",
]
