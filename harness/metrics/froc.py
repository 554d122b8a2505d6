"""FROC: lesion-level sensitivity against the average number of false positives per patient.

No well-kept library computes FROC for boxes, so it is written here and tested on hand-made cases and against a
brute-force threshold loop (tests/metrics/test_froc.py).

Conventions (docs/metrics.md):
- a lesion is one ground-truth box on one image (boxes of one node on adjacent slices are separate lesions);
- a prediction hits a lesion when the centre of the predicted box lies in the GT box (``hit="center"``, edges
  included) or when their IoU >= ``iou_threshold`` (``hit="iou"``, default 0.1); class labels are ignored unless
  ``class_aware=True`` (the FROC asks "was the node found", the location class is scored by the AP);
- at a score threshold t, a lesion is detected when any prediction with score >= t hits it, so the highest-scoring
  hit is the true positive and further hits on the same lesion are ignored (neither TP nor FP); a prediction is a
  false positive when it hits no lesion at all;
- FP per patient divides by every patient in the evaluation, node-negative patients (no lesions) included;
- the sensitivity at a rate r is a step, not an interpolation: the highest sensitivity reached at a threshold whose
  FP per patient is <= r (an operating point that exists). Past the last point the curve stays flat.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ._boxes import as_images, box_iou, centre_in_box

FROC_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True)
class FrocResult:
    """The FROC curve and its sensitivities at the requested FP-per-patient rates.

    Attributes:
        fp_rates: the requested rates (FP per patient).
        sensitivities: lesion sensitivity at each rate (step convention, see the module docstring).
        mean_sensitivity: mean of ``sensitivities`` (the FROC score; ``val_froc`` over the seven default rates).
        curve_fp_per_patient: FP per patient at each threshold, starting at 0 (threshold +inf), nondecreasing.
        curve_sensitivity: sensitivity at each threshold, starting at 0.
        curve_thresholds: the score thresholds, decreasing, starting at +inf.
        n_lesions: number of GT boxes.
        n_patients: number of patients (the FP denominator).
        n_images: number of images.
    """

    fp_rates: np.ndarray
    sensitivities: np.ndarray
    mean_sensitivity: float
    curve_fp_per_patient: np.ndarray
    curve_sensitivity: np.ndarray
    curve_thresholds: np.ndarray
    n_lesions: int
    n_patients: int
    n_images: int


def froc(
    preds: Sequence[Mapping[str, Any]],
    gts: Sequence[Mapping[str, Any]],
    patient_ids: Sequence[Any],
    fp_rates: Sequence[float] = FROC_RATES,
    hit: Literal["center", "iou"] = "center",
    iou_threshold: float = 0.1,
    class_aware: bool = False,
) -> FrocResult:
    """Free-response ROC over all images of all patients (see the module docstring for every convention).

    Args:
        preds: per image ``{"boxes": (N, 4) XYXY, "scores": (N,), "labels": (N,)}`` (numpy or torch).
        gts: per image ``{"boxes": (M, 4), "labels": (M,)}``; images without nodes have M = 0.
        patient_ids: the patient of every image; every image of every evaluated patient must be included.
        fp_rates: FP-per-patient rates at which to read the sensitivity.
        hit: ``"center"`` (centre of the prediction inside the GT box) or ``"iou"`` (IoU >= ``iou_threshold``).
        iou_threshold: IoU needed for a hit with ``hit="iou"``.
        class_aware: require the predicted label to equal the GT label for a hit.

    Returns:
        FrocResult; sensitivities are NaN when there is no lesion at all.
    """
    if hit not in ("center", "iou"):
        raise ValueError(f"hit must be 'center' or 'iou', got {hit!r}")
    images = as_images(preds, gts)
    if len(patient_ids) != len(images):
        raise ValueError(f"{len(patient_ids)} patient ids for {len(images)} images")
    n_patients = len(set(patient_ids))
    lesion_best: list[np.ndarray] = []  # per lesion: highest score of a prediction hitting it (-inf: never hit)
    fp_scores: list[np.ndarray] = []  # scores of predictions that hit no lesion
    for im in images:
        if hit == "center":
            hits = centre_in_box(im.pred_boxes, im.gt_boxes)
        else:
            hits = box_iou(im.pred_boxes, im.gt_boxes) >= iou_threshold
        if class_aware:
            hits &= im.pred_labels[:, None] == im.gt_labels[None, :]
        scored = np.where(hits, im.pred_scores[:, None], -np.inf)
        lesion_best.append(scored.max(axis=0) if len(im.pred_scores) else np.full(len(im.gt_boxes), -np.inf))
        fp_scores.append(im.pred_scores[~hits.any(axis=1)])
    best = np.sort(np.concatenate(lesion_best)) if lesion_best else np.zeros(0)
    fps = np.sort(np.concatenate(fp_scores)) if fp_scores else np.zeros(0)
    n_lesions = int(best.size)

    # Thresholds where the curve moves: the scores of lesion hits and of false positives (extra hits move nothing).
    thresholds = np.unique(np.concatenate([best[np.isfinite(best)], fps]))[::-1]
    detected = best.size - np.searchsorted(best, thresholds, side="left")  # lesions with best >= t
    false_pos = fps.size - np.searchsorted(fps, thresholds, side="left")  # FPs with score >= t
    curve_thr = np.concatenate([[np.inf], thresholds])
    curve_fp = np.concatenate([[0.0], false_pos / max(n_patients, 1)])
    curve_sens = np.concatenate([[0.0], detected / n_lesions]) if n_lesions else np.full(curve_thr.shape, np.nan)

    rates = np.asarray(fp_rates, dtype=np.float64)
    # The last curve point with FP/patient <= r; the tolerance keeps e.g. 3 FPs / 24 patients at exactly 0.125.
    last = np.searchsorted(curve_fp, rates + 1e-12, side="right") - 1
    sens = curve_sens[last]
    mean = float(sens.mean()) if n_lesions and sens.size else float("nan")
    return FrocResult(rates, sens, mean, curve_fp, curve_sens, curve_thr, n_lesions, n_patients, len(images))


def rate_key(rate: float) -> str:
    """Metric-name form of a rate: 0.125 -> ``0_125``, 1.0 -> ``1``, 8 -> ``8``."""
    return f"{float(rate):g}".replace(".", "_").replace("-", "m")
