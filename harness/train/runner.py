"""`run_training`: one training run from a `TrialConfig`, the same for ``harness train`` and a sweep's trial.

Writes into ``output_dir/name/``: ``config.yaml`` (resolved, file paths replaced by placeholders),
``checkpoints/last.pt`` (every epoch; deleted when the run completes, unless ``keep_last``: only an interrupted run
resumes from it) and ``checkpoints/best.pt`` (the model the final metrics are computed on: the best epoch by the
early-stopping metric, or the last epoch without early stopping), ``metrics.json``, ``history.csv``, predictions and
plots. Neither ``config.yaml`` nor the checkpoints hold a file path (`TrialConfig.shareable`): both reach MLflow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from torch.utils.data import DataLoader

from harness.config import TrialConfig
from harness.datasets.detection import class_names, collate_detection
from harness.models import create_model

from . import classifier as cls
from . import detector as det
from .checkpoint import load_checkpoint, save_checkpoint
from .distributed import Distributed, set_epoch
from .engine import (
    LoopState,
    amp_dtype,
    improved,
    make_optimizer,
    progress_bar,
    seed_everything,
    seed_worker,
    select_device,
    train_one_epoch,
)
from .evaluation import final_evaluation, write_history
from .hooks import EpochInfo, HookList, Hooks

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a run produced."""

    metrics: dict[str, float]
    output_dir: Path
    best_checkpoint: Path
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False


def build_model(config: TrialConfig) -> torch.nn.Module:
    """The registry model with the config's kwargs (detectors get num_classes from ``data.label_mode``)."""
    kwargs = dict(config.model_kwargs)
    if config.task == "detection":
        expected = len(class_names(config.data.label_mode))
        if kwargs.setdefault("num_classes", expected) != expected:
            raise ValueError(
                f"model_kwargs.num_classes={kwargs['num_classes']} disagrees with data.label_mode="
                f"{config.data.label_mode!r} ({expected} classes with the background)"
            )
    return create_model(config.model, **kwargs)


class _Run:
    """The state of one run between epochs: model, device, loop state, checkpoints, early stopping, hooks."""

    def __init__(self, config: TrialConfig, hooks: Hooks, out: Path, progress: bool, dist: Distributed | None):
        self.config, self.hooks, self.out, self.dist = config, hooks, out, dist
        self.device = select_device(config.device)
        self.dtype = amp_dtype(config.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None
        self.generator = seed_everything(config.training_seed)
        self.model = build_model(config).to(self.device)
        self.state = LoopState()
        self.progress = progress_bar(progress)
        self.last = out / "checkpoints" / "last.pt"
        self.best = out / "checkpoints" / "best.pt"
        self.resume_payload: dict | None = None
        self.stopped_early = False  # early stopping or a hook's request ended a stage before its last epoch
        self.stop_requested = False  # a hook asked to end the whole run

    def loop_arguments(self) -> dict:
        """What every ``train_one_epoch`` call of this run shares: state, device, precision, hooks, progress."""
        return {
            "state": self.state,
            "device": self.device,
            "dtype": self.dtype,
            "scaler": self.scaler,
            "hooks": self.hooks,
            "progress": self.progress,
        }

    def restore(self) -> None:
        """Continue from ``last.pt``: weights, loop state, RNG; the optimiser state is restored by its stage."""
        payload = load_checkpoint(self.last, map_location=self.device)
        self.model.load_state_dict(payload["model_state"])
        self.state = LoopState(**payload["loop"])
        torch.set_rng_state(payload["rng"])
        self.resume_payload = payload
        log.warning("resuming %s after epoch %d", self.out, self.state.epoch)

    @property
    def is_main(self) -> bool:
        """The process that writes checkpoints and files (the only one unless training data-parallel)."""
        return self.dist is None or self.dist.is_main

    def training_model(self) -> torch.nn.Module:
        """The model the optimiser steps through: DDP-wrapped (over what trains now) when data-parallel."""
        return self.model if self.dist is None else self.dist.wrap(self.model, self.device)

    def optimizer_state_for(self, stage: str) -> dict | None:
        payload = self.resume_payload
        return payload["optimizer"] if payload and payload.get("stage") == stage else None

    def _track_best(self, metrics: dict[str, float]) -> tuple[bool, bool]:
        """(is this epoch the best so far, has the early-stopping patience run out)."""
        rule = self.config.early_stopping
        if not rule or rule.metric not in metrics:
            return False, False
        if improved(self.state, metrics[rule.metric], rule.mode, rule.min_delta):
            self.state.best_metric, self.state.best_epoch = metrics[rule.metric], self.state.epoch
            self.state.bad_epochs = 0
            return True, False
        self.state.bad_epochs += 1
        return False, self.state.bad_epochs >= rule.patience

    def end_epoch(self, stage: str, metrics: dict[str, float], optimizer, early_stopping: bool, last: bool) -> bool:
        """Bookkeeping after an epoch: epoch counts, best model, checkpoints, history, hooks.

        The stage's progress is recorded before the checkpoint is written, so a resumed run knows where it is.

        Returns:
            True to leave the current stage: early stopping (the next stage, if any, still runs) or a hook's stop
            request (then ``stop_requested`` is set and the whole run ends).
        """
        self.state.epoch += 1
        self.state.stage_epochs[stage] = self.state.stage_epochs.get(stage, 0) + 1
        if self.dist is not None and "train_loss" in metrics:
            metrics = {**metrics, "train_loss": self.dist.mean(metrics["train_loss"])}
        metrics = {"epoch": self.state.epoch, **metrics}
        if self.state.stage_epochs[stage] == 1:
            self.state.bad_epochs = 0  # patience counts within a stage; the best model is over the whole run
        is_best, patience_out = self._track_best(metrics) if early_stopping else (False, False)
        if last or patience_out:
            self.state.finished_stages.append(stage)
        self.state.history.append({"stage": stage, **metrics})
        extra = {
            "loop": self.state.as_dict(),
            "stage": stage,
            "optimizer": optimizer.state_dict(),
            "rng": torch.get_rng_state(),
        }
        if self.is_main:
            save_checkpoint(self.last, model=self.model, config=self.config.shareable(), **extra)
            if is_best:
                save_checkpoint(self.best, model=self.model, config=self.config.shareable(), **extra)
            write_history(self.out, self.state.history)
        if self.hooks.after_epoch(EpochInfo(stage, self.state.epoch, metrics, is_best, str(self.last))):
            self.stop_requested = self.stopped_early = True
            return True
        if patience_out:
            rule = self.config.early_stopping
            log.warning("early stopping: %s did not improve for %d epochs", rule.metric, rule.patience)
            self.stopped_early = True
        return patience_out

    def loader(self, dataset, batch_size: int, shuffle: bool, collate_fn=None) -> DataLoader:
        """Batches for training; data-parallel: this worker's shard, ``batch_size`` split over the workers."""
        if self.dist is not None:
            return DataLoader(
                dataset,
                batch_size=self.dist.per_worker_batch(batch_size),
                collate_fn=collate_fn,
                sampler=self.dist.sampler(dataset, shuffle, self.config.training_seed),
                num_workers=self.config.num_workers,
                worker_init_fn=seed_worker,
            )
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            generator=self.generator,
            collate_fn=collate_fn,
            num_workers=self.config.num_workers,
            worker_init_fn=seed_worker,
        )


def _train_classifier(run: _Run, data) -> None:
    train = run.config.train
    for stage in cls.classifier_stages(train, cls.is_hybrid(run.model)):
        if stage.name in run.state.finished_stages:
            continue
        groups = cls.trainable_parameters(run.model, stage, train.hybrid_l2)
        loss_fn = cls.classification_loss(run.training_model(), run.device)  # after freezing: DDP wraps what trains
        momentum = train.momentum if stage.optimizer == "sgd" else 0.0
        optimizer = make_optimizer(stage.optimizer, groups, stage.lr, momentum, train.weight_decay)
        if (saved := run.optimizer_state_for(stage.name)) is not None:
            optimizer.load_state_dict(saved)
        if stage.mlp_only:  # full-batch Rprop steps on frozen features: one "epoch" in the history
            optimizer.param_groups[-1]["l2"] = train.hybrid_l2
            cached = cls.frozen_features(run.model, data.train_eval, run.device, train.batch_size)
            losses = [cls.mlp_full_batch_step(run.model, optimizer, cached) for _ in range(stage.epochs)]
            metrics = {"train_loss": losses[-1], **_classifier_validation(run, data)}
            run.end_epoch(stage.name, metrics, optimizer, early_stopping=False, last=True)
        else:
            loader = run.loader(data.train, train.batch_size, shuffle=True)
            with run.progress:
                while run.state.stage_epochs.get(stage.name, 0) < stage.epochs:
                    run.model.train()
                    set_epoch(loader, run.state.epoch)
                    loss = train_one_epoch(
                        stage=stage.name, loader=loader, loss_fn=loss_fn, optimizer=optimizer, **run.loop_arguments()
                    )
                    metrics = {"train_loss": loss, **_classifier_validation(run, data)}
                    last = run.state.stage_epochs.get(stage.name, 0) + 1 == stage.epochs
                    if run.end_epoch(stage.name, metrics, optimizer, not stage.freeze_subnetwork1, last):
                        break
        if run.stop_requested:
            return


def _classifier_validation(run: _Run, data) -> dict[str, float]:
    predictions = cls.predict_slices(run.model, data.val, run.device, run.dtype, run.config.train.batch_size)
    return cls.quick_validation(predictions)


def _train_detector(run: _Run, data) -> None:
    train = run.config.train
    loader = run.loader(data.train, train.batch_size, shuffle=True, collate_fn=collate_detection)
    lr_at = det.lr_schedule(train, train.epochs * len(loader))
    params = [p for p in run.model.parameters() if p.requires_grad]
    optimizer = make_optimizer("sgd", params, train.lr, train.momentum, train.weight_decay)
    if (saved := run.optimizer_state_for("detector")) is not None:
        optimizer.load_state_dict(saved)
    loss_fn = det.detection_loss(run.training_model(), run.device)
    with run.progress:
        while "detector" not in run.state.finished_stages:
            run.model.train()
            set_epoch(loader, run.state.epoch)
            loss = train_one_epoch(
                stage="detector",
                loader=loader,
                loss_fn=loss_fn,
                optimizer=optimizer,
                lr_at=lr_at,
                grad_clip=train.grad_clip,
                **run.loop_arguments(),
            )
            metrics = {"train_loss": loss}
            done = run.state.stage_epochs.get("detector", 0) + 1
            last = done == train.epochs
            if train.eval_every and (done % train.eval_every == 0 or last):
                preds, gts, fields = det.predict_detections(run.model, data.val, run.device, run.dtype)
                metrics.update(det.detection_metrics(preds, gts, fields, data.train.classes))
            if run.end_epoch("detector", metrics, optimizer, early_stopping=True, last=last):
                return


def run_training(
    config: TrialConfig,
    *,
    hooks: list[Hooks] | tuple[Hooks, ...] = (),
    data_root: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    distributed: Distributed | None = None,
    keep_last: bool = False,
) -> TrainResult:
    """Train and evaluate one configuration (see the module docstring for what is written where).

    Args:
        config: the validated trial config.
        hooks: called after each step and epoch (Tune reporting, MLflow logging attach here).
        data_root: a dataset folder that overrides ``config.data`` (``harness train --data``).
        resume: continue from ``checkpoints/last.pt`` when it exists.
        progress: show progress bars.
        distributed: this worker's rank when training data-parallel (the process group is already set up); only
            rank 0 writes files and evaluates, the others return empty metrics.
        keep_last: keep ``checkpoints/last.pt`` after the run completes (to extend its schedule with ``resume``);
            by default it is deleted then, and kept only when the run is interrupted or a hook stopped it.
    """
    from .data import build_data

    # The data first: a dataset that cannot be used fails here, before anything is written under output_dir.
    data = build_data(config, root=data_root, progress=progress)
    out = (Path(config.output_dir) / config.name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if distributed is None or distributed.is_main:
        (out / "config.yaml").write_text(yaml.safe_dump(config.shareable(), sort_keys=False))
    run = _Run(config, HookList(hooks), out, progress, distributed)
    if resume and run.last.is_file():
        run.restore()
        run.hooks.after_resume([dict(entry) for entry in run.state.history])
    elif resume and run.best.is_file():
        log.warning("%s: no checkpoints/last.pt (deleted when the run completed): training from the start", out)
    (_train_classifier if config.task == "classification" else _train_detector)(run, data)
    if not run.is_main:
        return TrainResult({}, out, run.best, run.state.history, run.stopped_early)
    if not (config.early_stopping and run.best.is_file()):
        extra = {"loop": run.state.as_dict(), "rng": torch.get_rng_state()}
        save_checkpoint(run.best, model=run.model, config=config.shareable(), **extra)
    else:
        run.model.load_state_dict(load_checkpoint(run.best, map_location=run.device)["model_state"])
    metrics = final_evaluation(run.model, config, data, run.device, run.dtype, out)
    if not (keep_last or run.stop_requested):
        run.last.unlink(missing_ok=True)  # complete: best.pt is the model; last.pt (optimiser state too) only resumes
    return TrainResult(metrics, out, run.best, run.state.history, run.stopped_early)
