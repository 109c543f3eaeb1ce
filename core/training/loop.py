"""The training loop: :func:`train` and its steps.

:func:`train` checks and sets up a run (:mod:`.state`), then per epoch takes the optimiser
steps (:func:`_train_epoch`), validates (:func:`_validate`), closes the epoch with its
checkpoint and log (:func:`_end_epoch`) and reports it (:func:`_report_epoch`); at the end
:func:`_finish` writes the best epoch's weights.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import time
from typing import Any, Callable, Optional

import torch

from ...models import weights as weights_io
from ..datasets import LabelledDataset, PreparedDataset
from ..errors import CancelledError
from ..metrics import to_jsonable
from .base import (
    LOG_NAME,
    PLOT_INTERVAL_S,
    PLOT_NAME,
    TrainingConfig,
    TrainingError,
    TrainingProgress,
    TrainingResult,
)
from .evaluation import _run_evaluation, plot_learning_curves, write_history_csv
from .networks import make_normaliser, training_loss
from .state import (
    _cpu_state,
    _derive_seed,
    _deterministic,
    _prepare,
    _RunPlan,
    _RunState,
    _save_run,
    _seed_everything,
    _setup,
)

logger = logging.getLogger(__name__)


def train(
    config: TrainingConfig,
    train_data: LabelledDataset,
    val_data: Optional[LabelledDataset] = None,
    progress: Optional[Callable[[TrainingProgress], None]] = None,
    should_stop: Optional[Callable[[], bool]] = None,
) -> TrainingResult:
    """Train (or fine-tune, or resume) a registry network and write its weights.

    Args:
        config: The run (model, recipe, seed, device, output folder, init / fine-tune / resume).
        train_data: Raw training samples (normalised and augmented here).
        val_data: Raw validation samples, scored after every epoch (best weights, early stop).
        progress: Called after every step and every epoch with a :class:`TrainingProgress`.
        should_stop: Polled after every step; returning True cancels the run (the checkpoint of
            the last finished epoch stays, so ``resume`` continues from there).

    Returns:
        The :class:`TrainingResult`.

    Raises:
        TrainingError: The configuration, data or checkpoint do not allow training.
        WeightsError: An initialisation or fine-tuning file is unusable.
        CancelledError: ``should_stop`` returned True.
        DeviceError: The device is not available.
    """
    plan, state = _prepare(config, train_data, val_data)
    _seed_everything(config.seed)
    started = time.monotonic()
    with _deterministic():
        run = _setup(plan, train_data, state)
        normaliser = make_normaliser(run.spec)
        train_view = PreparedDataset(train_data, normaliser, plan.recipe.augmentation, config.seed)
        val_view = PreparedDataset(val_data, normaliser, None) if val_data is not None else None
        last_plot = time.monotonic()
        finished = (
            run.stopped_early or run.global_step >= plan.total_steps or run.epoch >= plan.epochs
        )
        while not finished:
            row, steps, epoch_start = _train_epoch(
                plan, run, train_view, started, progress, should_stop
            )
            if val_view is not None:
                _validate(plan, run, val_view, row)
            row["seconds"] = round(time.monotonic() - epoch_start, 3)
            finished = _end_epoch(plan, run, row, validated=val_view is not None)
            if time.monotonic() - last_plot >= PLOT_INTERVAL_S:
                plot_learning_curves(run.history, plan.out / PLOT_NAME, plan.monitor)
                last_plot = time.monotonic()
            _report_epoch(plan, run, row, steps, started, progress)
    return _finish(plan, run, train_data, val_data)


def _train_epoch(
    plan: _RunPlan,
    run: _RunState,
    train_view: PreparedDataset,
    started: float,
    progress: Optional[Callable[[TrainingProgress], None]],
    should_stop: Optional[Callable[[], bool]],
) -> tuple[dict[str, Any], int, float]:
    """The optimiser steps of epoch ``run.epoch`` (0-based: the epochs finished so far).

    Args:
        plan: The run's plan.
        run: The network and counters (``global_step``, ``steps_this_call`` advance).
        train_view: The normalised, augmented training samples.
        started: ``time.monotonic()`` when :func:`train` started (for the elapsed time).
        progress: See :func:`train`.
        should_stop: See :func:`train`.

    Returns:
        The epoch's row so far (epoch, global step, learning rate, training loss), the number
        of steps taken and when the first one started (``time.monotonic()``).

    Raises:
        TrainingError: The loss is not finite.
        CancelledError: ``should_stop`` returned True.
    """
    recipe, model, optimizer, epoch = plan.recipe, run.model, run.optimizer, run.epoch
    train_view.set_epoch(epoch)
    generator = torch.Generator()
    generator.manual_seed(_derive_seed(plan.config.seed, epoch))
    loader = torch.utils.data.DataLoader(
        train_view,
        batch_size=recipe.batch_size,
        shuffle=True,
        generator=generator,
        drop_last=recipe.drop_last,
        num_workers=recipe.num_workers,
    )
    epoch_lr = float(optimizer.param_groups[0]["lr"])
    model.train()
    loss_sum, loss_n = 0.0, 0
    epoch_start = time.monotonic()
    for step, batch in enumerate(loader, start=1):
        inputs = [x.to(plan.device, non_blocking=True) for x in batch["inputs"]]
        label = batch["label"].to(plan.device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss = training_loss(model(*inputs), label, recipe)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"The loss became {float(loss)} at epoch {epoch + 1}, step {step}; lower "
                "the learning rate, or check the inputs for extreme or nodata values."
            )
        loss.backward()
        optimizer.step()
        if recipe.schedule_unit == "iteration":
            run.scheduler.step()
        run.global_step += 1
        run.steps_this_call += 1
        loss_sum += float(loss.detach())
        loss_n += 1
        if progress is not None:
            elapsed = time.monotonic() - started
            eta = elapsed / run.steps_this_call * (plan.total_steps - run.global_step)
            progress(
                TrainingProgress(
                    "train", epoch + 1, plan.epochs, step, plan.steps_per_epoch, run.global_step,
                    plan.total_steps, loss_sum / loss_n,
                    float(optimizer.param_groups[0]["lr"]), elapsed, eta,
                )
            )  # fmt: skip
        if should_stop is not None and should_stop():
            raise CancelledError(
                f"Training cancelled during epoch {epoch + 1}. The checkpoint of epoch "
                f"{epoch} is in {plan.out}; continue with --resume."
            )
        if run.global_step >= plan.total_steps:
            break
    if recipe.schedule_unit == "epoch":
        run.scheduler.step()
    row: dict[str, Any] = {
        "epoch": epoch + 1,
        "global_step": run.global_step,
        "learning_rate": epoch_lr,
        "train_loss": loss_sum / max(1, loss_n),
    }
    return row, loss_n, epoch_start


def _validate(
    plan: _RunPlan, run: _RunState, val_view: PreparedDataset, row: dict[str, Any]
) -> None:
    """Score epoch ``run.epoch + 1`` on the validation data into ``row``; keep it if the best.

    Raises:
        TrainingError: The monitored score is not one of the report's.
    """
    recipe = plan.recipe
    val_batch = recipe.validation_batch_size or recipe.batch_size
    report, val_loss = _run_evaluation(
        run.model, val_view, run.spec, plan.device, val_batch, recipe.ignore_index, recipe
    )
    row["val_loss"] = val_loss
    row.update(report.scalars())
    score = row.get(plan.monitor)
    if score is None:
        raise TrainingError(
            f"Unknown validation score '{plan.monitor}'; use one of {', '.join(report.scalars())}."
        )
    if math.isfinite(score) and (
        run.best_score is None or score > run.best_score + recipe.min_delta
    ):
        run.best_score, run.best_epoch, run.since_best = float(score), run.epoch + 1, 0
        run.best_state = _cpu_state(run.model)
        run.best_report = report.to_dict()
    else:
        run.since_best += 1


def _end_epoch(plan: _RunPlan, run: _RunState, row: dict[str, Any], validated: bool) -> bool:
    """Close an epoch: its row, early stopping, the checkpoint and the CSV log.

    Returns:
        Whether the run is over (stopped early, or the planned steps or epochs are done).
    """
    recipe = plan.recipe
    run.history.append(row)
    run.epoch += 1
    if recipe.patience is not None and validated and run.since_best >= recipe.patience:
        run.stopped_early = True
        logger.info(
            "Early stop after epoch %d: %s has not improved for %d epochs.",
            run.epoch, plan.monitor, run.since_best,
        )  # fmt: skip
    finished = run.stopped_early or run.global_step >= plan.total_steps or run.epoch >= plan.epochs
    _save_run(plan, run)
    write_history_csv(run.history, plan.out / LOG_NAME)
    return finished


def _report_epoch(
    plan: _RunPlan,
    run: _RunState,
    row: dict[str, Any],
    steps: int,
    started: float,
    progress: Optional[Callable[[TrainingProgress], None]],
) -> None:
    """Log the epoch just closed and hand its row to the progress callback."""
    logger.info(
        "Epoch %d/%d: %s",
        run.epoch,
        plan.epochs,
        ", ".join(f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float)),
    )
    if progress is not None:
        elapsed = time.monotonic() - started
        eta = elapsed / max(1, run.steps_this_call) * (plan.total_steps - run.global_step)
        progress(
            TrainingProgress(
                "epoch", run.epoch, plan.epochs, steps, plan.steps_per_epoch, run.global_step,
                plan.total_steps, row["train_loss"], float(run.optimizer.param_groups[0]["lr"]),
                elapsed, eta, dict(row),
            )
        )  # fmt: skip


def _finish(
    plan: _RunPlan,
    run: _RunState,
    train_data: LabelledDataset,
    val_data: Optional[LabelledDataset],
) -> TrainingResult:
    """The best epoch's weights into the network, the final log, plot and weights file."""
    model, out = run.model, plan.out
    if run.best_state is not None:
        model.load_state_dict(run.best_state)
    model.eval()
    log_path = write_history_csv(run.history, out / LOG_NAME)
    plot_path = plot_learning_curves(run.history, out / PLOT_NAME, plan.monitor)
    metadata = _weights_metadata(plan, run, train_data, val_data)
    weights_path = out / plan.config.weights_name
    sha = weights_io.save_weights(weights_path, model, metadata)
    return TrainingResult(
        weights_path=weights_path,
        sha256=sha,
        model=model,
        metadata=metadata,
        spec=run.spec,
        history=tuple(run.history),
        best_epoch=run.best_epoch,
        best_score=run.best_score,
        monitor=plan.monitor,
        stopped_early=run.stopped_early,
        epochs_run=len(run.history),
        checkpoint_path=plan.checkpoint_path,
        log_path=log_path,
        plot_path=plot_path,
        report=run.best_report,
    )


def _chip_size(data: LabelledDataset) -> Optional[int]:
    """The edge of the training samples when they are square chips of one size, else None."""
    size = getattr(data, "chip_size", None) or getattr(
        getattr(data, "base", None), "chip_size", None
    )
    if size:
        return int(size)
    if not len(data):
        return None
    height, width = data.read(0).label.shape[-2:]
    return int(height) if height == width else None


def _weights_metadata(
    plan: _RunPlan,
    run: _RunState,
    train_data: LabelledDataset,
    val_data: Optional[LabelledDataset],
) -> weights_io.WeightsMetadata:
    """The metadata saved with the final weights: provenance of the run and its scores."""
    config, spec, history = plan.config, run.spec, run.history
    training_info = {
        "task": spec.task,
        "data": {
            "description": config.data_description,
            "train_samples": plan.n_train,
            "validation_samples": len(val_data) if val_data is not None else 0,
            "train_dataset": type(train_data).__name__,
        },
        "recipe": plan.recipe.to_dict(),
        # Networks with image pooling see a tile's context: mapping with the tile size they
        # learnt on gives the maps the validation scored (the engine's default tile).
        "chip_size": _chip_size(train_data),
        "seed": config.seed,
        "encoder": spec.encoder,
        "epochs_planned": plan.epochs,
        "epochs_run": len(history),
        "steps": run.global_step,
        "best_epoch": run.best_epoch,
        "stopped_early": run.stopped_early,
        "normalisation": run.norm_note,
        "device": str(plan.device),
        "torch": torch.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": config.command,
        **run.provenance_extra,
    }
    metrics: dict[str, Any] = {"monitor": plan.monitor, "best_score": run.best_score}
    if run.best_report is not None:
        metrics["validation"] = run.best_report
    if history:
        metrics["last_epoch"] = to_jsonable(history[-1])
    return weights_io.WeightsMetadata(
        model_name=spec.name,
        architecture=spec.architecture,
        config=dict(getattr(run.model, "config")),  # noqa: B009 - every network has .config
        modalities=spec.modalities,
        classes=spec.classes,
        training=to_jsonable(training_info),
        metrics=to_jsonable(metrics),
    )
