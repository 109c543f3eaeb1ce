"""What a training run starts from and keeps between epochs.

The checks before anything is trained (outputs that would replace inputs, sample sizes, the
plan of epochs and steps), seeds, RNG states and cuDNN's deterministic mode, the normalisation
and optimiser, the network set up fresh, fine-tuned, encoder-initialised or resumed
(:func:`_setup`), and the checkpoint written after every epoch and read to resume.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ...models import weights as weights_io
from ...models.encoders import parse_init_encoders
from ...models.registry import ModelSpec, NormalisationSpec
from ...models.resnet import set_bn_momentum
from ..datasets import VECTOR_EXTENSIONS, LabelledDataset, as_sources
from ..device import resolve_device
from ..metrics import to_jsonable
from ..protection import ProtectedFiles, check_destinations
from ..tasks import get_task
from .base import (
    CHECKPOINT_NAME,
    CHECKPOINT_VERSION,
    LOG_NAME,
    PLOT_NAME,
    TrainingConfig,
    TrainingError,
    TrainingRecipe,
    resolve_model_spec,
)
from .evaluation import size_multiple
from .networks import (
    FinetuneSource,
    _check_sample,
    build_model,
    compute_band_statistics,
    encoders_of,
    init_encoders_from,
    load_for_finetuning,
    with_normalisation,
)

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Seeds and determinism


def _derive_seed(seed: int, *parts: int) -> int:
    """A 63-bit seed from the run's seed and some counters (e.g. the epoch)."""
    return int(np.random.SeedSequence([seed, *parts]).generate_state(1, np.uint64)[0]) >> 1


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError):  # another GPU count than when saved
            torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def _deterministic() -> Iterator[None]:
    """cuDNN in deterministic mode during the run, restored afterwards."""
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


# ---------------------------------------------------------------------------------------------
# Checks and choices before a run


def _plan(recipe: TrainingRecipe, steps_per_epoch: int) -> tuple[int, int]:
    """(epochs, total optimiser steps) of a run."""
    if recipe.max_iterations is not None:
        epochs = math.ceil(recipe.max_iterations / steps_per_epoch)
        if recipe.epochs is not None:
            epochs = min(epochs, recipe.epochs)
        return epochs, min(recipe.max_iterations, epochs * steps_per_epoch)
    epochs = int(recipe.epochs or 1)
    return epochs, epochs * steps_per_epoch


def _make_optimizer(model: nn.Module, recipe: TrainingRecipe) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=recipe.learning_rate,
            momentum=recipe.momentum,
            weight_decay=recipe.weight_decay,
        )
    return torch.optim.Adam(params, lr=recipe.learning_rate, weight_decay=recipe.weight_decay)


def _check_size(sample_inputs: Sequence[np.ndarray], spec: ModelSpec, name: str) -> None:
    h, w = sample_inputs[0].shape[-2:]
    stride = size_multiple(spec)
    if h % stride or w % stride:
        raise TrainingError(
            f"Training sample {name} is {w}×{h} px; {spec.name} needs sizes that are multiples "
            f"of {stride}. Cut chips of e.g. {max(stride, (min(h, w) // stride) * stride)} px."
        )


def _choose_normalisation(
    recipe: TrainingRecipe,
    spec: ModelSpec,
    train_data: LabelledDataset,
    finetune: Optional[FinetuneSource],
) -> tuple[tuple[NormalisationSpec, ...], str]:
    mode = recipe.normalisation
    if mode == "auto":
        mode = "weights" if finetune is not None else "fixed_stats"
    if mode == "weights":
        if finetune is None:
            raise TrainingError("normalisation 'weights' needs a weights file to fine-tune from.")
        norms = tuple(m.normalisation for m in finetune.modalities)
        if len(norms) != len(spec.modalities):
            raise TrainingError(
                f"The fine-tuning source has {len(norms)} modalities, the model "
                f"{len(spec.modalities)}."
            )
        return norms, f"taken from {Path(finetune.path).name}"
    if mode == "registry":
        return tuple(m.normalisation for m in spec.modalities), "registry entry's"
    norms = compute_band_statistics(train_data, spec, recipe.stats_max_samples)
    used = len(train_data) if recipe.stats_max_samples is None else recipe.stats_max_samples
    return norms, f"fixed_stats from {min(used, len(train_data))} training samples"


# ---------------------------------------------------------------------------------------------
# Checkpoint and output files


def _save_checkpoint(path: Path, payload: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(dict(payload), tmp)
    os.replace(tmp, path)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}


def _load_checkpoint(path: Path, config: TrainingConfig, n_train: int) -> dict[str, Any]:
    state = weights_io.safe_torch_load(path)
    if not isinstance(state, Mapping) or state.get("format") != "landfuse-checkpoint":
        raise TrainingError(f"{path} is not a LandFuse training checkpoint.")
    saved = json.loads(state["config_json"])
    current = json.loads(json.dumps(config.fingerprint()))
    differ = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if differ:
        raise TrainingError(
            f"The checkpoint in {path.parent} was written with other settings ({', '.join(differ)}"
            "); resume with the same options, or train into another folder."
        )
    if int(state["train_samples"]) != n_train:
        raise TrainingError(
            f"The checkpoint was trained on {state['train_samples']} samples, this dataset has "
            f"{n_train}; resume with the same training data."
        )
    return dict(state)


def training_outputs(config: TrainingConfig, out: Path) -> dict[str, str]:
    """The files a training run writes into its output folder (what → path)."""
    weights = out / config.weights_name
    return {
        "the trained weights": str(weights),
        "the weights' sidecar": str(weights) + ".json",
        "the training checkpoint": str(out / CHECKPOINT_NAME),
        "the training log": str(out / LOG_NAME),
        "the learning curves": str(out / PLOT_NAME),
    }


def _check_outputs_spare_inputs(
    config: TrainingConfig, out: Path, datasets: Sequence[Optional[LabelledDataset]]
) -> None:
    """Refuse to start when a training output would replace an input (issue 11)."""
    protected = ProtectedFiles()
    for dataset in datasets:
        for scene in getattr(dataset, "scenes", ()):
            for value in scene.inputs:
                for source in as_sources(value):
                    protected.add_raster(source.path, f"the training input {source.path}")
            if Path(scene.label).suffix.lower() in VECTOR_EXTENSIONS:
                protected.add_vector(scene.label, f"the labels {scene.label}")
            else:
                protected.add_raster(scene.label, f"the labels {scene.label}")
    starts = [
        f for f in parse_init_encoders(config.init_encoders or "").values() if Path(f).exists()
    ]
    for path in (config.finetune_from, *starts):
        protected.add_weights(path)
    check_destinations(
        training_outputs(config, out),
        protected,
        with_derived=False,
        fix="train into another output folder",
    )


# ---------------------------------------------------------------------------------------------
# A run's plan and state


@dataclass(frozen=True)
class _RunPlan:
    """What :func:`_prepare` fixed before anything is trained.

    Attributes:
        config: The run.
        recipe: Its effective recipe.
        out: The output folder (created).
        spec: The entry with the run's overrides (the normalisation still the entry's).
        device: Where the network trains.
        monitor: The validation score that picks the best epoch and stops early.
        n_train: Training samples.
        steps_per_epoch: Optimiser steps of a full epoch.
        epochs: Planned epochs.
        total_steps: Planned optimiser steps.
        checkpoint_path: ``out/checkpoints/checkpoint.pt``.
    """

    config: TrainingConfig
    recipe: TrainingRecipe
    out: Path
    spec: ModelSpec
    device: torch.device
    monitor: str
    n_train: int
    steps_per_epoch: int
    epochs: int
    total_steps: int
    checkpoint_path: Path


@dataclass
class _RunState:
    """The network being trained and what the loop keeps between epochs (changed in place).

    Everything but ``steps_this_call`` goes into the checkpoint. ``epoch`` counts the finished
    epochs; ``spec`` is the entry with the run's normalisation.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.PolynomialLR
    spec: ModelSpec
    norm_note: str
    provenance_extra: dict[str, Any]
    epoch: int = 0
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_score: Optional[float] = None
    best_epoch: Optional[int] = None
    best_state: Optional[dict[str, torch.Tensor]] = None
    best_report: Optional[dict[str, Any]] = None
    since_best: int = 0
    stopped_early: bool = False
    steps_this_call: int = 0


def _prepare(
    config: TrainingConfig,
    train_data: LabelledDataset,
    val_data: Optional[LabelledDataset],
) -> tuple[_RunPlan, Optional[dict[str, Any]]]:
    """Check a run before anything is trained: its plan, and the checkpoint to resume (or None).

    Raises:
        TrainingError: The configuration, data or output folder do not allow training.
    """
    recipe = config.effective_recipe
    out = Path(config.output_dir)
    _check_outputs_spare_inputs(config, out, (train_data, val_data))
    out.mkdir(parents=True, exist_ok=True)
    spec = resolve_model_spec(config)
    device = resolve_device(config.device)
    monitor = recipe.monitor or get_task(spec.task).monitor
    if recipe.batch_size < 2:
        raise TrainingError(
            "Train with batches of at least 2: BatchNorm after global pooling cannot normalise "
            "a single sample (NETWORKS.md)."
        )
    if config.seed < 0:
        raise TrainingError(f"The seed must be 0 or more, got {config.seed}.")
    if config.init_encoders and config.finetune_from:
        raise TrainingError(
            "Give either encoder initialisation or a model to fine-tune from, not both."
        )
    n_train = len(train_data)
    steps_per_epoch = (
        n_train // recipe.batch_size if recipe.drop_last else math.ceil(n_train / recipe.batch_size)
    )
    if steps_per_epoch == 0:
        raise TrainingError(
            f"{n_train} training sample(s) do not fill one batch of {recipe.batch_size}; add "
            "samples (smaller chips, more overlap) or lower the batch size."
        )
    epochs, total_steps = _plan(recipe, steps_per_epoch)
    first = train_data.read(0)
    _check_sample(first.inputs, spec, first.name)
    _check_size(first.inputs, spec, first.name)

    checkpoint_path = out / CHECKPOINT_NAME
    state: Optional[dict[str, Any]] = None
    if checkpoint_path.exists():
        if not config.resume:
            raise TrainingError(
                f"{out} already holds a training checkpoint; resume it (--resume) or train "
                "into another folder."
            )
        state = _load_checkpoint(checkpoint_path, config, n_train)
    plan = _RunPlan(
        config=config,
        recipe=recipe,
        out=out,
        spec=spec,
        device=device,
        monitor=monitor,
        n_train=n_train,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        total_steps=total_steps,
        checkpoint_path=checkpoint_path,
    )
    return plan, state


def _build_network(
    plan: _RunPlan, train_data: LabelledDataset, state: Optional[Mapping[str, Any]]
) -> tuple[nn.Module, ModelSpec, str, dict[str, Any]]:
    """The network to train: as checkpointed, or fresh (then fine-tuned or encoder-initialised).

    Returns:
        The network (on the CPU), the entry with the run's normalisation, a note on where that
        normalisation comes from, and the provenance of the start (fine-tune / init source).
    """
    config, spec = plan.config, plan.spec
    if state is not None:
        norms = tuple(NormalisationSpec.from_dict(n) for n in json.loads(state["norms_json"]))
        norm_note = str(state["norm_note"])
        spec = with_normalisation(spec, norms)
        model = build_model(spec)
        provenance_extra = json.loads(state["provenance_json"])
        return model, spec, norm_note, provenance_extra
    finetune: Optional[FinetuneSource] = None
    model = build_model(spec)
    provenance_extra = {}
    if config.finetune_from:
        finetune = load_for_finetuning(model, spec, config.finetune_from)
        provenance_extra["finetune_from"] = {
            "file": finetune.path,
            "sha256": finetune.sha256,
            "model_name": finetune.model_name,
            "source_classes": [c.name for c in finetune.classes],
            "replaced": list(finetune.replaced_keys),
        }
    if config.init_encoders:
        provenance_extra["init_encoders"] = init_encoders_from(model, spec, config.init_encoders)
    norms, norm_note = _choose_normalisation(plan.recipe, spec, train_data, finetune)
    spec = with_normalisation(spec, norms)
    return model, spec, norm_note, provenance_extra


def _setup(
    plan: _RunPlan, train_data: LabelledDataset, state: Optional[Mapping[str, Any]]
) -> _RunState:
    """The network on its device with its optimiser and schedule, resumed from ``state``."""
    recipe = plan.recipe
    model, spec, norm_note, provenance_extra = _build_network(plan, train_data, state)
    model.to(plan.device)
    if recipe.bn_momentum is not None:
        for _, encoder in encoders_of(model):
            set_bn_momentum(encoder, recipe.bn_momentum)
    optimizer = _make_optimizer(model, recipe)
    scheduler = torch.optim.lr_scheduler.PolynomialLR(
        optimizer,
        total_iters=plan.total_steps if recipe.schedule_unit == "iteration" else plan.epochs,
        power=recipe.poly_power,
    )
    run = _RunState(model, optimizer, scheduler, spec, norm_note, provenance_extra)
    if state is not None:
        _resume(run, state, plan.out)
    return run


def _resume(run: _RunState, state: Mapping[str, Any], out: Path) -> None:
    """Continue from a checkpoint: weights, optimiser, schedule, counters, best epoch, RNGs."""
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.epoch = int(state["epoch"])
    run.global_step = int(state["global_step"])
    run.history = json.loads(state["history_json"])
    run.best_score = state["best_score"]
    run.best_epoch = state["best_epoch"]
    # The best weights are the checkpoint's own model when the last epoch was the best.
    run.best_state = state["model"] if state["best_is_last"] else state["best_model"]
    run.best_report = json.loads(state["best_report_json"])
    run.since_best = int(state["since_best"])
    run.stopped_early = bool(state["stopped_early"])
    _set_rng_state(state["rng"])
    logger.info("Resuming %s after epoch %d (step %d).", out, run.epoch, run.global_step)


def _save_run(plan: _RunPlan, run: _RunState) -> None:
    """Write the checkpoint after the epoch ``run.epoch`` (1-based, just finished)."""
    _save_checkpoint(
        plan.checkpoint_path,
        {
            "format": "landfuse-checkpoint",
            "version": CHECKPOINT_VERSION,
            "config_json": json.dumps(plan.config.fingerprint()),
            "norms_json": json.dumps([m.normalisation.to_dict() for m in run.spec.modalities]),
            "norm_note": run.norm_note,
            "provenance_json": json.dumps(run.provenance_extra),
            "train_samples": plan.n_train,
            "epoch": run.epoch,
            "global_step": run.global_step,
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "best_score": run.best_score,
            "best_epoch": run.best_epoch,
            # Not stored twice when the last epoch is the best (the usual case early on).
            "best_is_last": run.best_epoch == run.epoch,
            "best_model": None if run.best_epoch == run.epoch else run.best_state,
            "best_report_json": json.dumps(run.best_report),
            "since_best": run.since_best,
            "stopped_early": run.stopped_early,
            "history_json": json.dumps(to_jsonable(run.history)),
            "rng": _rng_state(),
        },
    )
