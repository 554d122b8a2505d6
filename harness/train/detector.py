"""Training and evaluating the Lu 2018 Faster R-CNN detectors.

Approximate joint training, torchvision's way: the RPN and box-head losses are summed and back-propagated together
(Lu used py-faster-rcnn's four-step alternating training; the difference is in the optimisation path, not the model).
The learning rate follows Lu's Table 2: ``lr`` until ``lr_drop_at`` of all iterations, then ``lr * lr_drop_factor``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from harness.config import DetectorTraining
from harness.datasets.detection import collate_detection
from harness.metrics.detection import detector_report

from .engine import autocast


def detection_loss(model: torch.nn.Module, device: torch.device):
    """``loss_fn`` for `train_one_epoch`: the sum of torchvision's four Faster R-CNN losses."""

    def loss_fn(batch) -> tuple[torch.Tensor, dict[str, float]]:
        images, targets, _ = batch
        images = [image.to(device, non_blocking=True) for image in images]
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        losses = model(images, targets)
        total = sum(losses.values())
        return total, {name: float(value.item()) for name, value in losses.items()}

    return loss_fn


def lr_schedule(train: DetectorTraining, total_iterations: int) -> Callable[[int], float]:
    """Lu's step schedule (plus an optional linear warm-up) as a function of the global iteration."""
    drop_at = int(round(train.lr_drop_at * total_iterations))

    def lr_at(iteration: int) -> float:
        lr = train.lr if iteration < drop_at else train.lr * train.lr_drop_factor
        if train.warmup_iters and iteration < train.warmup_iters:
            lr *= (iteration + 1) / train.warmup_iters
        return lr

    return lr_at


def detection_loader(dataset: Dataset, batch_size: int, shuffle: bool, generator=None, num_workers: int = 0):
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=collate_detection,
        generator=generator,
        num_workers=num_workers,
        drop_last=False,
    )


@torch.no_grad()
def predict_detections(
    model: torch.nn.Module, dataset: Dataset, device: torch.device, dtype: torch.dtype | None, batch_size: int = 4
) -> tuple[list[dict], list[dict], list[dict]]:
    """Detections, ground truth and item fields (patient, lnm...) of every slice, in dataset order, on the CPU."""
    was_training = model.training
    model.eval()
    preds, gts, rest = [], [], []
    for images, targets, fields in detection_loader(dataset, batch_size, shuffle=False):
        with autocast(device, dtype):
            outputs = model([image.to(device) for image in images])
        preds += [{k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in o.items()} for o in outputs]
        gts += targets
        rest += fields
    model.train(was_training)
    return preds, gts, rest


def detection_metrics(
    preds: list[dict], gts: list[dict], fields: list[dict], class_names: list[str], prefix: str = "val"
) -> dict[str, float]:
    """Lu/COCO metrics of one cohort (``detector_report``), patients' truth = their ``lnm``."""
    patients = [f["patient"] for f in fields]
    labels = {f["patient"]: int(f["lnm"]) for f in fields}
    return detector_report(preds, gts, patients, labels, prefix=prefix, class_names=class_names)


def highest_scores(preds: list[dict]) -> np.ndarray:
    """Each slice's highest detection score (0 without detections): the image-level score."""
    return np.array([float(p["scores"].max()) if len(p["scores"]) else 0.0 for p in preds])
