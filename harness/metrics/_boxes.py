"""Detection inputs as plain numpy, and the box geometry the detection metrics share.

Boxes are torchvision's XYXY in continuous pixel coordinates (docs/data-format.md): width = x_max - x_min, with no
+1 (the VOC devkit's +1 belongs to its inclusive integer boxes, not to ours; pycocotools uses no +1 either).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def _np(value: Any, dtype: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch here
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


@dataclass(frozen=True)
class Image:
    """One image's detections and ground truth: boxes (N, 4) float64 XYXY, scores (N,), labels (N,) int64."""

    pred_boxes: np.ndarray
    pred_scores: np.ndarray
    pred_labels: np.ndarray
    gt_boxes: np.ndarray
    gt_labels: np.ndarray


def _boxes(value: Any, what: str) -> np.ndarray:
    boxes = _np(value, np.float64)
    if boxes.size == 0:
        return np.zeros((0, 4))
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{what} boxes must be (N, 4) XYXY, got shape {boxes.shape}")
    if not np.isfinite(boxes).all():
        raise ValueError(f"{what} boxes contain NaN or inf")
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        raise ValueError(f"{what} boxes must be XYXY with x_max >= x_min and y_max >= y_min")
    return boxes


def _vector(value: Any, n: int, dtype: Any, what: str) -> np.ndarray:
    out = _np(value, dtype).reshape(-1)
    if out.shape[0] != n:
        raise ValueError(f"{what} has {out.shape[0]} entries for {n} boxes")
    return out


def as_images(preds: Sequence[Mapping[str, Any]], gts: Sequence[Mapping[str, Any]]) -> list[Image]:
    """Checks and converts per-image predictions and ground truth (numpy arrays, lists or torch tensors).

    Args:
        preds: per image ``{"boxes": (N, 4), "scores": (N,), "labels": (N,)}``.
        gts: per image ``{"boxes": (M, 4), "labels": (M,)}``, same images in the same order.

    Returns:
        One `Image` per image; the image id used by the metrics is the position in these lists.
    """
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions for {len(gts)} ground-truth images: give one of each per image")
    images = []
    for i, (pred, gt) in enumerate(zip(preds, gts, strict=True)):
        for key, d, what in (("scores", pred, "prediction"), ("labels", pred, "prediction"), ("labels", gt, "gt")):
            if key not in d and len(d.get("boxes", ())) > 0:
                raise ValueError(f"image {i}: {what} has boxes but no {key!r}")
        pb, gb = _boxes(pred.get("boxes", ()), f"image {i}: prediction"), _boxes(gt.get("boxes", ()), f"image {i}: gt")
        ps = _vector(pred.get("scores", ()), len(pb), np.float64, f"image {i}: prediction scores")
        if not np.isfinite(ps).all():
            raise ValueError(f"image {i}: prediction scores contain NaN or inf")
        pl = _vector(pred.get("labels", ()), len(pb), np.int64, f"image {i}: prediction labels")
        gl = _vector(gt.get("labels", ()), len(gb), np.int64, f"image {i}: gt labels")
        images.append(Image(pb, ps, pl, gb, gl))
    return images


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of XYXY boxes; 0 where the union is empty (two degenerate boxes)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def centre_in_box(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(len(pred), len(gt)) bool: the centre of the predicted box lies in the GT box (edges included)."""
    cx = (pred[:, 0] + pred[:, 2]) / 2
    cy = (pred[:, 1] + pred[:, 3]) / 2
    return (
        (cx[:, None] >= gt[None, :, 0])
        & (cx[:, None] <= gt[None, :, 2])
        & (cy[:, None] >= gt[None, :, 1])
        & (cy[:, None] <= gt[None, :, 3])
    )
