"""Detector studies in ``harness compare``: a configuration's out-of-fold detections pooled over its folds, and the
FROC and precision-recall curves computed from them with `harness.metrics` (nothing is re-implemented here).

Each detector trial leaves ``detections.json.gz`` in MLflow (`harness.train.evaluation.write_detections`): the
validation slices of its fold with their target boxes and detections, patients as pseudonyms. Every patient outside
the test set is validated by exactly one fold, so the trials of one repeat together cover every patient once. The
curves pool the **first repeat** (the lowest repeat index) of every fold; other repeats are not averaged in (one FROC
curve per configuration, drawn from real operating points). The FROC follows ``val_froc`` (centre hit, FP per
patient over all patients); the precision-recall curve is class-agnostic at IoU 0.5 (every label set to 1: was the
node found, as the FROC asks; the per-location APs stay in the trial metrics).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness import tracking
from harness.metrics.detection import average_precision_per_class, detection_pr_curve
from harness.metrics.froc import FrocResult, froc

DETECTIONS_ARTIFACT = "detections.json.gz"  # harness.train.evaluation.DETECTIONS_FILE
PR_IOU = 0.5


@dataclass
class SliceDetections:
    """One trial's validation slices: per slice a prediction and a target dict (numpy), and its patient."""

    preds: list[dict]
    gts: list[dict]
    patients: list[str]


@dataclass
class PooledDetections:
    """A configuration's pooled out-of-fold detections (one repeat, every fold) and their curves.

    ``n_trials`` is the number of folds; ``froc``, ``recall``, ``precision`` and ``ap`` are None when no fold had
    detections; ``missing`` names the folds of that repeat without ``detections.json.gz`` (runs logged before it
    existed, trials that did not finish). Only a ``complete`` configuration is drawn.
    """

    repeat: int
    n_trials: int
    missing: list[str] = field(default_factory=list)
    froc: FrocResult | None = None
    recall: np.ndarray | None = None
    precision: np.ndarray | None = None
    ap: float | None = None
    n_slices: int = 0
    n_patients: int = 0
    n_lesions: int = 0

    @property
    def complete(self) -> bool:
        """Every fold of the repeat contributed its detections."""
        return not self.missing and self.froc is not None


def read_detections(path: Path) -> SliceDetections | None:
    """A trial's ``detections.json.gz`` (see `harness.train.evaluation.write_detections`); None when unreadable."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            payload = json.load(handle)
        slices = payload["slices"]
        preds = [_prediction(s) for s in slices]
        gts = [{"boxes": _boxes(s["gt_boxes"]), "labels": np.asarray(s["gt_labels"], np.int64)} for s in slices]
        patients = [str(s["patient"]) for s in slices]
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return None
    return SliceDetections(preds, gts, patients)


def _boxes(rows) -> np.ndarray:
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def _prediction(entry: dict) -> dict:
    return {
        "boxes": _boxes(entry["boxes"]),
        "scores": np.asarray(entry["scores"], dtype=np.float64),
        "labels": np.asarray(entry["labels"], dtype=np.int64),
    }


def pool_detections(uri: str, trials: Sequence[Any], folds: int | None = None) -> PooledDetections | None:
    """Read the detections of the first repeat's trials, pool them over the folds, compute FROC and PR.

    Args:
        uri: MLflow tracking URI.
        trials: the configuration's trials (`harness.sweep.comparison.Trial`: status, repeat, run_id, name).
        folds: how many folds the configuration has (its ``folds`` param); None: as many as trials of the repeat.

    Returns:
        None when no trial finished. A fold without detections (trial not finished, never started, or its artifact
        missing or unreadable) is named in ``missing``, never raised.
    """
    finished = [t for t in trials if t.status == "FINISHED"]
    if not finished:
        return None
    repeat = min(t.repeat for t in finished)
    chosen = [t for t in trials if t.repeat == repeat]
    pooled = PooledDetections(repeat=repeat, n_trials=max(folds or 0, len(chosen)))
    parts = []
    for trial in chosen:
        part = None
        if trial.status == "FINISHED":
            part = tracking.read_artifact(uri, trial.run_id, DETECTIONS_ARTIFACT, read_detections)
        if part is None:
            pooled.missing.append(trial.name + ("" if trial.status == "FINISHED" else f" ({trial.status})"))
        else:
            parts.append(part)
    pooled.missing += ["a trial never started"] * (pooled.n_trials - len(chosen))
    if parts:
        _curves(pooled, parts)
    return pooled


def _curves(pooled: PooledDetections, parts: list[SliceDetections]) -> None:
    """FROC (as ``val_froc``) and the class-agnostic precision-recall curve at IoU 0.5 of the concatenated folds."""
    preds = [p for part in parts for p in part.preds]
    gts = [g for part in parts for g in part.gts]
    patients = [p for part in parts for p in part.patients]
    pooled.froc = froc(preds, gts, patients)
    one_class = [{**p, "labels": np.ones_like(p["labels"])} for p in preds]
    one_class_gts = [{**g, "labels": np.ones_like(g["labels"])} for g in gts]
    pooled.recall, pooled.precision, _ = detection_pr_curve(one_class, one_class_gts, cls=1, iou_threshold=PR_IOU)
    ap = average_precision_per_class(one_class, one_class_gts, iou_threshold=PR_IOU, class_ids=[1])[1]
    pooled.ap = None if np.isnan(ap) else ap
    pooled.n_slices, pooled.n_patients, pooled.n_lesions = len(preds), len(set(patients)), pooled.froc.n_lesions
