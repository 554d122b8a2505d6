"""Detector metrics as in Lu 2018 (Cancer Res): AP per class (Eq. A), mAP, COCO mAP, image/patient ROC AUC, FROC.

Inputs are torchvision-style: per image a prediction ``{"boxes": (N, 4) XYXY, "scores": (N,), "labels": (N,)}``
and a ground truth ``{"boxes": (M, 4), "labels": (M,)}`` (numpy, lists or torch tensors), in two lists of the same
length; an image is identified by its position. Patients are given as one id per image.

Two APs are reported because they answer different readers: Lu's Eq. A is the area under the precision-recall
curve, computed here VOC-style (all-point interpolation, hand-written and tested on hand-made cases); the COCO
numbers come from pycocotools (101-point interpolation), the reference everyone else quotes.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ._boxes import Image, as_images, box_iou
from .classification import NAN, binary_labels, roc_auc
from .froc import FROC_RATES, froc, rate_key


def _class_ids(images: Sequence[Image], class_ids: Sequence[int] | None, with_preds: bool = False) -> list[int]:
    if class_ids is not None:
        return [int(c) for c in class_ids]
    labels = [im.gt_labels for im in images] + ([im.pred_labels for im in images] if with_preds else [])
    return sorted({int(c) for c in np.concatenate(labels)}) if labels else []


def _match_class(images: Sequence[Image], cls: int, iou_threshold: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Greedy matching of one class: (scores, is_tp) of every detection in decreasing score order, and #GT.

    Within an image, detections are taken in decreasing score order; each takes the unmatched GT box of its class
    with the highest IoU, if that IoU >= ``iou_threshold`` (a TP), else it is a FP. Each GT matches at most once, so
    a second detection of a matched node is a FP. This is pycocotools' rule (the VOC devkit differs only when a
    detection's best-IoU GT is already taken but another unmatched GT still passes the threshold). Detections of
    all images are then merged by a stable sort on score (images in order, as pycocotools does for ties).
    """
    scores, tps, n_gt = [], [], 0
    for im in images:
        det = np.flatnonzero(im.pred_labels == cls)
        det = det[np.argsort(-im.pred_scores[det], kind="mergesort")]
        gt = im.gt_boxes[im.gt_labels == cls]
        n_gt += len(gt)
        tp = np.zeros(len(det), dtype=bool)
        if len(det) and len(gt):
            ious = box_iou(im.pred_boxes[det], gt)
            taken = np.zeros(len(gt), dtype=bool)
            for k in range(len(det)):  # sequential by nature: each match changes what the next may take
                candidates = np.where(taken | (ious[k] < iou_threshold), -1.0, ious[k])
                best = int(np.argmax(candidates))
                if candidates[best] >= 0:
                    tp[k], taken[best] = True, True
        scores.append(im.pred_scores[det])
        tps.append(tp)
    s = np.concatenate(scores) if scores else np.zeros(0)
    t = np.concatenate(tps) if tps else np.zeros(0, dtype=bool)
    order = np.argsort(-s, kind="mergesort")
    return s[order], t[order], n_gt


def detection_pr_curve(
    preds: Sequence[Mapping[str, Any]], gts: Sequence[Mapping[str, Any]], cls: int, iou_threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision-recall points of one class, one per detection in decreasing score order.

    Returns:
        (recall, precision, scores); recall is NaN when the class has no GT box.
    """
    scores, tp, n_gt = _match_class(as_images(preds, gts), cls, iou_threshold)
    tp_cum = np.cumsum(tp)
    precision = tp_cum / np.arange(1, len(tp) + 1)
    recall = tp_cum / n_gt if n_gt else np.full(len(tp), NAN)
    return recall, precision, scores


def _ap(recall: np.ndarray, precision: np.ndarray, interpolation: str) -> float:
    if interpolation == "none":
        # Lu's Eq. A read literally: sum_k P(k) * (r(k) - r(k-1)), i.e. the mean precision at the true positives.
        return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))
    # VOC 2010+ all-point interpolation: precision replaced by its envelope max_{r' >= r} p(r'), then the exact area
    # under that step function over every recall change (the sentinel (1, 0) adds nothing).
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    return float(np.sum(np.diff(mrec) * mpre[1:]))


def average_precision_per_class(
    preds: Sequence[Mapping[str, Any]],
    gts: Sequence[Mapping[str, Any]],
    iou_threshold: float = 0.5,
    class_ids: Sequence[int] | None = None,
    interpolation: Literal["all_point", "none"] = "all_point",
) -> dict[int, float]:
    """AP per class as the area under the precision-recall curve (Lu 2018, Eq. A).

    Matching: greedy by score, each GT matched at most once (see `_match_class`), IoU >= ``iou_threshold``.
    ``interpolation="all_point"`` (default) is the PASCAL VOC 2010+ AP: the precision envelope integrated over every
    recall step, no fixed recall grid. ``"none"`` is Eq. A literally (sum of P(k) times the recall change), which is
    never larger. Tied scores are taken one detection at a time, in image order.

    Args:
        preds: per image predictions.
        gts: per image ground truth.
        iou_threshold: IoU for a true positive.
        class_ids: classes to score; default the labels present in the ground truth.
        interpolation: ``"all_point"`` or ``"none"``.

    Returns:
        {class id: AP}; NaN for a class without GT boxes (AP is undefined there; `mean_ap` skips it).
    """
    if interpolation not in ("all_point", "none"):
        raise ValueError(f"interpolation must be 'all_point' or 'none', got {interpolation!r}")
    images = as_images(preds, gts)
    out = {}
    for cls in _class_ids(images, class_ids):
        _, tp, n_gt = _match_class(images, cls, iou_threshold)
        if not n_gt:
            out[cls] = NAN
            continue
        tp_cum = np.cumsum(tp)
        out[cls] = _ap(tp_cum / n_gt, tp_cum / np.arange(1, len(tp) + 1), interpolation) if len(tp) else 0.0
    return out


def mean_ap(ap_per_class: Mapping[int, float]) -> float:
    """Mean AP over the classes that have ground truth (the non-NaN entries); NaN if there are none."""
    values = np.array([v for v in ap_per_class.values() if not np.isnan(v)], dtype=np.float64)
    return float(values.mean()) if values.size else NAN


def coco_map(
    preds: Sequence[Mapping[str, Any]], gts: Sequence[Mapping[str, Any]], class_ids: Sequence[int] | None = None
) -> dict[str, float]:
    """COCO box mAP through pycocotools, built in memory (no files).

    Standard COCOeval parameters: IoU 0.50:0.05:0.95, 101 recall points, area "all", at most 100 detections per
    image and class (the highest-scoring ones). Every image is registered, with or without GT, so detections on
    node-free images count as false positives; classes without GT are left out of the mean, as pycocotools does.
    Annotation ids start at 1: pycocotools treats a match with id 0 as "unmatched".

    Args:
        preds: per image predictions.
        gts: per image ground truth.
        class_ids: categories to evaluate; default every label in the ground truth or the predictions.

    Returns:
        ``{"map": AP@[.5:.95], "map50": AP@.5, "map75": AP@.75}``; NaN when there is no GT box at all.
    """
    images = as_images(preds, gts)
    cats = _class_ids(images, class_ids, with_preds=True)
    result = dict.fromkeys(("map", "map50", "map75"), NAN)
    if not cats or not any(np.isin(im.gt_labels, cats).any() for im in images):
        return result

    def xywh(boxes: np.ndarray) -> np.ndarray:
        return np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]])

    gt_anns: list[dict] = []
    dt_anns: list[dict] = []
    for i, im in enumerate(images):
        for box, label in zip(xywh(im.gt_boxes).tolist(), im.gt_labels.tolist(), strict=True):
            ann = {"image_id": i, "category_id": label, "bbox": box, "area": box[2] * box[3], "iscrowd": 0}
            gt_anns.append(ann | {"id": len(gt_anns) + 1})
        for box, label, score in zip(
            xywh(im.pred_boxes).tolist(), im.pred_labels.tolist(), im.pred_scores.tolist(), strict=True
        ):
            ann = {"image_id": i, "category_id": label, "bbox": box, "area": box[2] * box[3], "score": score}
            dt_anns.append(ann | {"iscrowd": 0, "id": len(dt_anns) + 1})
    base = {"images": [{"id": i} for i in range(len(images))], "categories": [{"id": c} for c in cats]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt, coco_dt = COCO(), COCO()
        # Built by hand rather than with loadRes, which fails on an empty detection list.
        coco_gt.dataset, coco_dt.dataset = base | {"annotations": gt_anns}, base | {"annotations": dt_anns}
        coco_gt.createIndex()
        coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.params.catIds = cats
        evaluator.evaluate()
        evaluator.accumulate()
    params = evaluator.params
    area = params.areaRngLbl.index("all")
    # [T, R, K, A, M]: -1 marks a class without GT; the mean over the rest is what COCOeval.summarize prints.
    precision = evaluator.eval["precision"][:, :, :, area, len(params.maxDets) - 1]

    def mean(p: np.ndarray) -> float:
        valid = p[p > -1]
        return float(valid.mean()) if valid.size else NAN

    result["map"] = mean(precision)
    for key, iou in (("map50", 0.5), ("map75", 0.75)):
        result[key] = mean(precision[np.isclose(params.iouThrs, iou)])
    return result


def _max_scores(preds: Sequence[Mapping[str, Any]]) -> np.ndarray:
    images = as_images(preds, [{}] * len(preds))
    return np.array([im.pred_scores.max() if len(im.pred_scores) else 0.0 for im in images])


def image_level_auc(preds: Sequence[Mapping[str, Any]], gts: Sequence[Mapping[str, Any]]) -> float:
    """ROC AUC over images: score = highest detection score (0 without detections), truth = the image has a GT box.

    NaN when every image has GT boxes, or none has.
    """
    truth = np.array([len(im.gt_boxes) > 0 for im in as_images(preds, gts)], dtype=np.int64)
    return roc_auc(truth, _max_scores(preds))


def patient_level_auc(
    preds: Sequence[Mapping[str, Any]], image_patients: Sequence[Any], patient_labels: Mapping[Any, int]
) -> float:
    """ROC AUC over patients: score = highest detection score over the patient's images (0 without detections).

    Args:
        preds: per image predictions.
        image_patients: the patient of every image.
        patient_labels: 0/1 per patient (e.g. ``lnm``), for exactly the patients in ``image_patients``.

    Returns:
        The AUC; NaN when one class is absent.
    """
    if len(image_patients) != len(preds):
        raise ValueError(f"{len(image_patients)} patient ids for {len(preds)} images")
    patients = sorted(set(image_patients), key=str)
    missing = [p for p in patients if p not in patient_labels]
    extra = [p for p in patient_labels if p not in set(patients)]
    if missing or extra:
        raise ValueError(
            f"patient_labels must cover exactly the patients of the images: {len(missing)} without a label, "
            f"{len(extra)} without images"
        )
    index = {p: k for k, p in enumerate(patients)}
    best = np.zeros(len(patients))
    np.maximum.at(best, [index[p] for p in image_patients], _max_scores(preds))
    return roc_auc(binary_labels([patient_labels[p] for p in patients]), best)


def _named_classes(class_names: Sequence[str] | Mapping[int, str] | None, images: Sequence[Image]) -> dict[int, str]:
    if class_names is None:
        return {c: str(c) for c in _class_ids(images, None)}
    if isinstance(class_names, Mapping):
        return {int(k): str(v) for k, v in class_names.items()}
    # A sequence indexed by label, entry 0 the background (harness.datasets.detection.class_names).
    return {i: str(name) for i, name in enumerate(class_names) if i > 0}


def detector_report_keys(
    class_names: Sequence[str] | Mapping[int, str], prefix: str = "val", fp_rates: Sequence[float] = FROC_RATES
) -> list[str]:
    """The exact keys `detector_report` returns for these classes and rates."""
    names = _named_classes(class_names, [])
    keys = ["map50", "map", "voc_map50", *(f"ap50_{n}" for n in names.values()), "image_auc", "patient_auc"]
    keys += ["froc", *(f"froc_fp{rate_key(r)}" for r in fp_rates), "n_images", "n_patients", "n_lesions"]
    return [f"{prefix}_{k}" for k in keys]


def detector_report(
    preds: Sequence[Mapping[str, Any]],
    gts: Sequence[Mapping[str, Any]],
    image_patients: Sequence[Any],
    patient_labels: Mapping[Any, int],
    prefix: str = "val",
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    fp_rates: Sequence[float] = FROC_RATES,
    froc_hit: Literal["center", "iou"] = "center",
    froc_iou_threshold: float = 0.1,
) -> dict[str, float]:
    """Lu 2018's detector evaluation of one cohort as a flat dict of floats with stable names.

    Args:
        preds: per image predictions.
        gts: per image ground truth.
        image_patients: the patient of every image (all images of every patient in the cohort).
        patient_labels: 0/1 per patient (``lnm``) for the patient-level AUC.
        prefix: key prefix.
        class_names: names by label: a sequence indexed by label with index 0 the background, or ``{label: name}``.
            Give it for stable keys; without it the classes are the labels present in the GT, named by number.
        fp_rates: FROC rates (FP per patient).
        froc_hit: FROC hit criterion, ``"center"`` or ``"iou"``.
        froc_iou_threshold: IoU for ``froc_hit="iou"``.

    Returns:
        ``detector_report_keys(class_names, prefix, fp_rates)`` mapped to floats: ``map50``/``map`` (COCO, via
        pycocotools), ``voc_map50`` (Eq. A, all-point, IoU 0.5), ``ap50_<class>``, ``image_auc``, ``patient_auc``,
        ``froc`` (mean sensitivity over ``fp_rates``), ``froc_fp<rate>``, counts. NaN where undefined.
    """
    images = as_images(preds, gts)
    names = _named_classes(class_names, images)
    ap = average_precision_per_class(preds, gts, iou_threshold=0.5, class_ids=list(names))
    coco = coco_map(preds, gts, class_ids=list(names))
    fr = froc(preds, gts, image_patients, fp_rates=fp_rates, hit=froc_hit, iou_threshold=froc_iou_threshold)
    row = {"map50": coco["map50"], "map": coco["map"], "voc_map50": mean_ap(ap)}
    row |= {f"ap50_{name}": ap[c] for c, name in names.items()}
    row |= {
        "image_auc": image_level_auc(preds, gts),
        "patient_auc": patient_level_auc(preds, image_patients, patient_labels),
    }
    row |= {
        "froc": fr.mean_sensitivity,
        **{f"froc_fp{rate_key(r)}": s for r, s in zip(fr.fp_rates, fr.sensitivities, strict=True)},
    }
    row |= {"n_images": float(len(images)), "n_patients": float(fr.n_patients), "n_lesions": float(fr.n_lesions)}
    return {f"{prefix}_{k}": float(v) for k, v in row.items()}
