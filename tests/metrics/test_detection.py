"""Detector metrics: Lu's AP on hand-computed cases, COCO mAP on known answers, VOC vs COCO agreement, reports."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torchvision.ops import box_iou as tv_box_iou

from harness.metrics import (
    average_precision_per_class,
    coco_map,
    detection_pr_curve,
    detector_report,
    detector_report_keys,
    image_level_auc,
    mean_ap,
    patient_level_auc,
)
from harness.metrics._boxes import box_iou
from harness.metrics.plots import plot_pr_curves


def pred(boxes, scores, labels) -> dict:
    return {
        "boxes": np.asarray(boxes, float).reshape(-1, 4),
        "scores": np.asarray(scores, float),
        "labels": np.asarray(labels, int),
    }


def gt(boxes, labels) -> dict:
    return {"boxes": np.asarray(boxes, float).reshape(-1, 4), "labels": np.asarray(labels, int)}


EMPTY_PRED = pred([], [], [])
EMPTY_GT = gt([], [])

# Hand-made case (see the AP test for the arithmetic). Image 0: class-1 nodes g1, g2 and a class-2 node g5;
# image 1: class-1 nodes g3, g4.
HAND_GTS = [
    gt([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 60, 60]], [1, 1, 2]),
    gt([[0, 0, 10, 10], [30, 0, 40, 10]], [1, 1]),
]
HAND_PREDS = [
    pred(
        [[0, 0, 10, 10], [1, 1, 11, 11], [20, 21, 30, 31], [40, 40, 60, 60], [20, 20, 30, 30]],
        [0.9, 0.8, 0.6, 0.5, 0.99],
        [1, 1, 1, 2, 2],
    ),
    pred([[0, 0, 10, 9], [100, 100, 110, 110], [40, 40, 60, 60], [0, 0, 5, 5]], [0.7, 0.3, 0.95, 0.4], [1, 1, 2, 3]),
]


def test_box_iou_equals_torchvision():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 50, (2, 7, 2))
    a = np.concatenate([xy[0], xy[0] + rng.uniform(0, 20, (7, 2))], axis=1)
    b = np.concatenate([xy[1], xy[1] + rng.uniform(0, 20, (7, 2))], axis=1)
    np.testing.assert_allclose(box_iou(a, b), tv_box_iou(torch.tensor(a), torch.tensor(b)).numpy(), atol=1e-12)


def test_voc_ap_hand_computed():
    # Class 1 (4 GT), detections by score: 0.9 TP g1; 0.8 FP (second hit on g1); 0.7 TP g3; 0.6 TP g2 (IoU 0.82);
    # 0.3 FP; g4 missed. Precision 1, 1/2, 2/3, 3/4, 3/5 at recall 1/4, 1/4, 1/2, 3/4, 3/4.
    #   all-point: envelope 1, 3/4, 3/4 over the three recall steps -> (1 + 3/4 + 3/4) / 4 = 0.625
    #   Eq. A literally: (1 + 2/3 + 3/4) / 4 = 0.6041667
    # Class 2 (1 GT, g5 in image 0): 0.99 FP (class-2 box on a class-1 node), 0.95 FP (image 1), 0.5 TP -> 1/3.
    # Class 3: a detection but no GT -> NaN, left out of the mean.
    ap = average_precision_per_class(HAND_PREDS, HAND_GTS, class_ids=[1, 2, 3])
    assert ap[1] == pytest.approx(0.625) and ap[2] == pytest.approx(1 / 3) and math.isnan(ap[3])
    assert mean_ap(ap) == pytest.approx((0.625 + 1 / 3) / 2)
    literal = average_precision_per_class(HAND_PREDS, HAND_GTS, class_ids=[1, 2], interpolation="none")
    assert literal == pytest.approx({1: (1 + 2 / 3 + 3 / 4) / 4, 2: 1 / 3})
    # At IoU 0.85 the 0.6 detection (IoU 0.82) becomes a FP: TP FP TP FP FP -> (1 + 2/3) / 4.
    strict = average_precision_per_class(HAND_PREDS, HAND_GTS, iou_threshold=0.85, class_ids=[1])
    assert strict[1] == pytest.approx((1 + 2 / 3) / 4)
    # Default classes: the labels in the ground truth.
    assert set(average_precision_per_class(HAND_PREDS, HAND_GTS)) == {1, 2}


def test_pr_curve_of_the_hand_case():
    recall, precision, scores = detection_pr_curve(HAND_PREDS, HAND_GTS, cls=1)
    np.testing.assert_allclose(scores, [0.9, 0.8, 0.7, 0.6, 0.3])
    np.testing.assert_allclose(recall, [0.25, 0.25, 0.5, 0.75, 0.75])
    np.testing.assert_allclose(precision, [1, 0.5, 2 / 3, 0.75, 0.6])


def test_a_detection_takes_the_best_unmatched_gt():
    # Two overlapping nodes: the second detection's best GT (a) is taken, b still passes IoU 0.5 (0.74): a TP under
    # the pycocotools rule used here (the VOC devkit would call it a FP). Both APs must agree on it.
    gts = [gt([[0, 0, 10, 10], [2, 0, 12, 10]], [1, 1])]
    preds = [pred([[0, 0, 10, 10], [0.5, 0, 10.5, 10]], [0.9, 0.8], [1, 1])]
    assert average_precision_per_class(preds, gts)[1] == pytest.approx(1.0)
    assert coco_map(preds, gts)["map50"] == pytest.approx(1.0)


def test_coco_map_known_answers():
    perfect = coco_map(
        [pred([[0, 0, 10, 10], [20, 20, 28, 30]], [0.9, 0.8], [1, 2]), EMPTY_PRED],
        [gt([[0, 0, 10, 10], [20, 20, 28, 30]], [1, 2]), EMPTY_GT],
    )
    assert perfect == pytest.approx({"map": 1.0, "map50": 1.0, "map75": 1.0})
    # One of two GT found exactly, no FP: precision 1 up to recall 0.5, then nothing. COCO's 101 recall points
    # 0, 0.01, ..., 0.50 get precision 1 and the 50 above get 0 -> 51/101 at every IoU; all-point VOC gives 0.5.
    half_preds, half_gts = [pred([[0, 0, 10, 10]], [0.9], [1])], [gt([[0, 0, 10, 10], [50, 50, 60, 60]], [1, 1])]
    assert coco_map(half_preds, half_gts) == pytest.approx(dict.fromkeys(("map", "map50", "map75"), 51 / 101))
    assert average_precision_per_class(half_preds, half_gts)[1] == pytest.approx(0.5)
    # A FP on an image without nodes, scored above the TP, halves the precision at every recall.
    fp_first = coco_map([*half_preds, pred([[0, 0, 9, 9]], [0.95], [1])], [*half_gts, EMPTY_GT])
    assert fp_first["map50"] == pytest.approx(0.5 * 51 / 101)


def test_coco_map_edge_cases():
    assert coco_map([EMPTY_PRED], [gt([[0, 0, 10, 10]], [1])]) == {"map": 0.0, "map50": 0.0, "map75": 0.0}
    assert all(math.isnan(v) for v in coco_map([pred([[0, 0, 5, 5]], [0.5], [1])], [EMPTY_GT]).values())
    assert all(math.isnan(v) for v in coco_map([], []).values())


def realistic(seed: int, n_images: int = 150, n_classes: int = 3) -> tuple[list, list, list]:
    """Nodes of 8-30 px on 256 px slices, most found with a jittered box, some missed, random false positives."""
    rng = np.random.default_rng(seed)
    preds, gts, patients = [], [], []
    for i in range(n_images):
        k = int(rng.integers(0, 4)) if i % 3 else 0
        xy, wh = rng.uniform(0, 220, (k, 2)), rng.uniform(8, 30, (k, 2))
        boxes, labels = np.column_stack([xy, xy + wh]), rng.integers(1, n_classes + 1, k)
        found = rng.random(k) < 0.8
        n_fp = int(rng.integers(0, 4))
        fp_xy, fp_wh = rng.uniform(0, 220, (n_fp, 2)), rng.uniform(8, 30, (n_fp, 2))
        p_boxes = np.concatenate([boxes[found] + rng.normal(0, 2.5, (found.sum(), 4)), np.c_[fp_xy, fp_xy + fp_wh]])
        swap = rng.random(found.sum()) < 0.1  # a wrong location class now and then
        p_labels = np.concatenate(
            [
                np.where(swap, rng.integers(1, n_classes + 1, found.sum()), labels[found]),
                rng.integers(1, n_classes + 1, n_fp),
            ]
        )
        p_scores = np.concatenate([rng.uniform(0.4, 1.0, found.sum()), rng.uniform(0.0, 0.8, n_fp)])
        p_boxes[:, 2:] = np.maximum(p_boxes[:, 2:], p_boxes[:, :2])
        preds.append(pred(p_boxes, p_scores, p_labels))
        gts.append(gt(boxes, labels))
        patients.append(f"p{i // 10:02d}")
    return preds, gts, patients


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_voc_ap50_and_coco_ap50_agree_on_realistic_data(seed):
    preds, gts, _ = realistic(seed)
    voc = average_precision_per_class(preds, gts)
    for cls, value in voc.items():
        coco = coco_map(preds, gts, class_ids=[cls])["map50"]
        assert value == pytest.approx(coco, abs=0.02)  # they differ only by the interpolation
        assert 0.2 < value < 0.95  # a realistic, non-trivial AP
    assert mean_ap(voc) == pytest.approx(coco_map(preds, gts)["map50"], abs=0.02)
    literal = average_precision_per_class(preds, gts, interpolation="none")
    assert all(literal[c] <= voc[c] + 1e-12 for c in voc)  # the envelope never lowers precision


def test_image_and_patient_auc_from_highest_score():
    preds = [
        pred([[0, 0, 5, 5], [1, 1, 6, 6]], [0.2, 0.7], [1, 1]),
        EMPTY_PRED,
        pred([[0, 0, 5, 5]], [0.4], [2]),
        pred([[0, 0, 5, 5]], [0.1], [1]),
    ]
    gts = [gt([[0, 0, 5, 5]], [1]), gt([[0, 0, 5, 5]], [1]), EMPTY_GT, EMPTY_GT]
    assert image_level_auc(preds, gts) == pytest.approx(roc_auc_score([1, 1, 0, 0], [0.7, 0.0, 0.4, 0.1]))
    patients = ["a", "a", "b", "c"]
    labels = {"a": 1, "b": 0, "c": 1}
    assert patient_level_auc(preds, patients, labels) == pytest.approx(roc_auc_score([1, 0, 1], [0.7, 0.4, 0.1]))
    with pytest.raises(ValueError, match="1 without a label"):
        patient_level_auc(preds, patients, {"a": 1, "b": 0})
    assert math.isnan(image_level_auc(preds[2:], gts[2:]))  # no image with nodes


def test_torch_inputs_and_validation():
    t_preds = [{k: torch.as_tensor(v) for k, v in p.items()} for p in HAND_PREDS]
    t_gts = [{k: torch.as_tensor(v) for k, v in g.items()} for g in HAND_GTS]
    assert average_precision_per_class(t_preds, t_gts) == average_precision_per_class(HAND_PREDS, HAND_GTS)
    with pytest.raises(ValueError, match="2 predictions for 1"):
        coco_map(HAND_PREDS, HAND_GTS[:1])
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        coco_map([pred([], [], [])], [{"boxes": np.zeros((2, 3)), "labels": [1, 1]}])
    with pytest.raises(ValueError, match="x_max >= x_min"):
        coco_map([EMPTY_PRED], [gt([[10, 0, 0, 10]], [1])])


CLASSES = ["background", "superior_rectal", "mesorectal", "internal_iliac"]


def test_detector_report_keys_and_values():
    preds, gts, patients = realistic(5)
    labels = {p: int(any(len(g["boxes"]) for g, q in zip(gts, patients, strict=True) if q == p)) for p in set(patients)}
    labels["p00"] = labels["p01"] = 0  # give the patient AUC two classes
    rep = detector_report(preds, gts, patients, labels, class_names=CLASSES)
    assert list(rep) == detector_report_keys(CLASSES)
    assert "val_froc_fp0_125" in rep and "val_froc_fp8" in rep and "val_ap50_mesorectal" in rep
    assert all(isinstance(v, float) and math.isfinite(v) for v in rep.values())
    assert rep["val_map50"] == pytest.approx(coco_map(preds, gts)["map50"])
    ap = average_precision_per_class(preds, gts)
    assert rep["val_ap50_internal_iliac"] == ap[3] and rep["val_voc_map50"] == pytest.approx(mean_ap(ap))
    assert rep["val_n_images"] == 150 and rep["val_n_patients"] == 15


def test_detector_report_nan_not_crash_when_undefined():
    preds = [pred([[0, 0, 5, 5]], [0.3], [1]), EMPTY_PRED]
    rep = detector_report(
        preds, [EMPTY_GT, EMPTY_GT], ["a", "b"], {"a": 0, "b": 0}, prefix="test", class_names={1: "node"}
    )
    assert list(rep) == detector_report_keys({1: "node"}, prefix="test")
    for key in (
        "test_map50",
        "test_map",
        "test_voc_map50",
        "test_ap50_node",
        "test_image_auc",
        "test_patient_auc",
        "test_froc",
        "test_froc_fp1",
    ):
        assert math.isnan(rep[key]), key
    assert rep["test_n_lesions"] == 0 and rep["test_n_patients"] == 2
    none_found = detector_report(
        [EMPTY_PRED, EMPTY_PRED],
        [gt([[0, 0, 5, 5]], [1]), EMPTY_GT],
        ["a", "b"],
        {"a": 1, "b": 0},
        class_names={1: "node"},
    )
    assert none_found["val_map50"] == 0.0 and none_found["val_froc"] == 0.0 and none_found["val_image_auc"] == 0.5


def test_pr_plot_writes_a_png(tmp_path):
    curves = {name: detection_pr_curve(HAND_PREDS, HAND_GTS, cls=c)[:2] for c, name in ((1, "a"), (2, "b"), (3, "c"))}
    path = plot_pr_curves(curves, tmp_path / "pr.png", ap={"a": 0.625})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
