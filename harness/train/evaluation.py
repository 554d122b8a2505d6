"""The end of a run: final metrics on the chosen model, predictions (pseudonyms only), plots, ``metrics.json``."""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from harness.config import TrialConfig
from harness.explain import draw_detections, grad_cam, gradient_saliency, save_attention_png
from harness.metrics.classification import classifier_report
from harness.metrics.detection import detection_pr_curve
from harness.metrics.froc import froc
from harness.metrics.plots import plot_froc, plot_pr_curves, plot_roc_curves

from . import classifier as cls
from . import detector as det

DETECTIONS_FILE = "detections.json.gz"  # the val slices' boxes, read back by harness.sweep.detections
DETECTIONS_FORMAT = 1
DETECTION_SCORE_FLOOR = 0.01  # detections below it are left out of DETECTIONS_FILE (a slice's best one stays)


def write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=_json_default))
    os.replace(tmp, path)


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def write_history(out: Path, history: list[dict]) -> None:
    """``history.csv``: one row per epoch, every metric seen (blank where an epoch did not compute it)."""
    columns = list(dict.fromkeys(key for row in history for key in row))
    tmp = out / f".history.csv.tmp-{os.getpid()}"
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
    os.replace(tmp, out / "history.csv")


def finite(metrics: dict[str, float]) -> dict[str, float | None]:
    """NaN becomes None (null in JSON), so that metrics.json stays valid JSON."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


def _classifier_final(model, config: TrialConfig, data, device, dtype, out: Path) -> dict[str, float]:
    batch = config.train.batch_size
    train = cls.predict_slices(model, data.train_eval, device, dtype, batch)
    metrics: dict[str, float] = {}
    rows, curves = [], {}
    cohorts = [("val", data.val)] + ([("test", data.test)] if data.test is not None else [])
    train_scores = train.patient_level()
    for prefix, dataset in cohorts:
        slices = cls.predict_slices(model, dataset, device, dtype, batch)
        if prefix == "val":
            val_slices = slices
        scores = slices.patient_level()
        mr_ln = slices.patient_mr_ln(scores)
        report = classifier_report(
            train_scores,
            scores,
            val_mr_ln_status=mr_ln if (mr_ln >= 0).all() else None,
            val_slice_probs=slices.probs,
            val_slice_labels=slices.labels,
            prefix=prefix,
            n_boot=config.n_boot,
            seed=config.seed,
        )
        metrics.update(report)
        curves[prefix] = (scores.labels, scores.scores)
        rows += [(prefix, p, s, y) for p, s, y in zip(scores.patients, scores.scores, scores.labels, strict=True)]
    rows += [
        ("train", p, s, y)
        for p, s, y in zip(train_scores.patients, train_scores.scores, train_scores.labels, strict=True)
    ]
    with (out / "predictions.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["split", "patient", "dl_score", "lnm"])
        writer.writerows((split, p, f"{s:.6f}", int(y)) for split, p, s, y in rows)
    plot_roc_curves(curves, out / "roc.png")
    _attention_maps(model, data.val, val_slices, out / "attention")
    return metrics


def _attention_maps(model, dataset, slices, folder: Path, per_class: int = 2) -> None:
    """Gradient saliency (Wu eMethods 5) and Grad-CAM PNGs of the most confident val slices of each class."""
    order = np.argsort(-slices.probs)
    positives = [i for i in order if slices.labels[i] == 1][:per_class]  # most confident LNM+ slices
    negatives = [i for i in order[::-1] if slices.labels[i] == 0][:per_class]  # most confident LNM- slices
    for i in positives + negatives:
        sample = dataset[int(i)]
        clinical = None
        if cls.is_hybrid(model):
            clinical = torch.tensor([[float(sample["mr_ln_status"])]])
        image = sample["image"]
        saliency = gradient_saliency(model, image, clinical=clinical)
        cam = grad_cam(model, image, clinical=clinical)
        name = f"{sample['patient']}_z{sample['slice_position']:+.1f}_lnm{sample['label']}.png"
        title = f"{sample['patient']} z={sample['slice_position']:.1f} mm, LNM {sample['label']}"
        save_attention_png(
            image, folder / name, saliency=saliency, cam=cam, title=title, probability=float(slices.probs[i])
        )


def _detector_final(model, config: TrialConfig, data, device, dtype, out: Path) -> dict[str, float]:
    metrics: dict[str, float] = {}
    rows = []
    cohorts = [("val", data.val)] + ([("test", data.test)] if data.test is not None else [])
    for prefix, dataset in cohorts:
        preds, gts, fields = det.predict_detections(model, dataset, device, dtype)
        metrics.update(det.detection_metrics(preds, gts, fields, dataset.classes, prefix))
        if prefix == "val":
            plot_froc(froc(preds, gts, [f["patient"] for f in fields]), out / "froc.png")
            _pr_plot(preds, gts, dataset.classes, metrics, out / "pr.png")
            _drawn_detections(dataset, preds, gts, fields, out / "detections", config.train.score_threshold)
            write_detections(out / DETECTIONS_FILE, preds, gts, fields, dataset.classes)
        for pred, gt, item, score in zip(preds, gts, fields, det.highest_scores(preds), strict=True):
            rows.append(
                (
                    prefix,
                    item["patient"],
                    f"{item['slice_position']:.3f}",
                    f"{score:.6f}",
                    len(gt["boxes"]),
                    len(pred["boxes"]),
                    int(item["lnm"]),
                )
            )
    with (out / "predictions.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        # lnm: the patient's nodal status from the manifest (not n_targets > 0: the truth of val_patient_auc)
        writer.writerow(["split", "patient", "slice_position_mm", "max_score", "n_targets", "n_detections", "lnm"])
        writer.writerows(rows)
    return metrics


def write_detections(
    path: Path, preds: list[dict], gts: list[dict], fields: list[dict], classes: list[str], split: str = "val"
) -> Path:
    """Write the slices' targets and detections as gzipped JSON, atomically (a temporary file, then ``os.replace``).

    One entry per slice, in dataset order: ``patient`` (the pseudonym of ``predictions.csv``), ``slice_position_mm``,
    ``lnm``, ``gt_boxes`` / ``gt_labels``, and ``boxes`` / ``scores`` / ``labels`` of the detections scoring at least
    ``DETECTION_SCORE_FLOOR`` plus the slice's highest-scoring one, so that each slice's highest score equals its
    ``max_score`` in ``predictions.csv``. Boxes are rounded to 0.01 pixel, scores to 6 decimals. No paths, no ids.
    """
    slices = [_slice_entry(pred, gt, item) for pred, gt, item in zip(preds, gts, fields, strict=True)]
    payload = {
        "format": DETECTIONS_FORMAT,
        "split": split,
        "score_floor": DETECTION_SCORE_FLOOR,
        "classes": list(classes),
        "slices": slices,
    }
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with gzip.open(tmp, "wt", encoding="utf-8") as handle:
        json.dump(payload, handle, separators=(",", ":"))
    os.replace(tmp, path)
    return path


def _slice_entry(pred: dict, gt: dict, item: dict) -> dict:
    """One slice of `write_detections`: its truth and its detections above the floor (its best one always)."""
    scores = np.asarray(pred["scores"], dtype=np.float64)
    keep = scores >= DETECTION_SCORE_FLOOR
    if scores.size:
        keep[int(np.argmax(scores))] = True
    return {
        "patient": item["patient"],
        "slice_position_mm": round(float(item["slice_position"]), 3),
        "lnm": int(item["lnm"]),
        "gt_boxes": np.round(np.asarray(gt["boxes"], dtype=np.float64), 2).reshape(-1, 4).tolist(),
        "gt_labels": np.asarray(gt["labels"], dtype=np.int64).tolist(),
        "boxes": np.round(np.asarray(pred["boxes"], dtype=np.float64)[keep], 2).reshape(-1, 4).tolist(),
        "scores": [float(f"{s:.6f}") for s in scores[keep]],  # as predictions.csv writes max_score
        "labels": np.asarray(pred["labels"], dtype=np.int64)[keep].tolist(),
    }


def _pr_plot(preds, gts, classes: list[str], metrics: dict[str, float], path: Path) -> None:
    """Precision-recall curve per class at IoU 0.5, AP (Lu's Eq. A, all-point) in the legend."""
    curves = {name: detection_pr_curve(preds, gts, cls=c)[:2] for c, name in enumerate(classes) if c > 0}
    ap = {name: metrics[f"val_ap50_{name}"] for name in curves if f"val_ap50_{name}" in metrics}
    plot_pr_curves(curves, path, title="Precision-recall (IoU 0.5)", ap=ap)


def _drawn_detections(dataset, preds, gts, fields, folder: Path, threshold: float, count: int = 4) -> None:
    """PNGs of a few val slices with their targets (green) and detections above ``threshold`` (red)."""
    with_targets = [i for i, gt in enumerate(gts) if len(gt["boxes"])]
    without = [i for i, gt in enumerate(gts) if not len(gt["boxes"])]
    for i in with_targets[:count] + without[:1]:
        item = fields[i]
        name = f"{item['patient']}_z{item['slice_position']:+.1f}.png"
        draw_detections(
            dataset[i]["image"],
            folder / name,
            prediction=preds[i],
            target=gts[i],
            class_names=dataset.classes,
            score_threshold=threshold,
            title=f"{item['patient']} z={item['slice_position']:.1f} mm",
        )


def final_evaluation(model, config: TrialConfig, data, device, dtype, out: Path) -> dict[str, float]:
    """Compute the final metrics of ``model``, write predictions, plots and ``metrics.json``; return the metrics."""
    final = _classifier_final if config.task == "classification" else _detector_final
    metrics = final(model, config, data, device, dtype, out)
    metrics["n_train_patients"] = float(len(data.split.train))
    write_json_atomic(out / "metrics.json", finite(metrics))
    return metrics
