"""FROC: a hand-made three-patient case under both hit criteria, and a brute-force threshold loop."""

import math

import numpy as np
import pytest

from harness.metrics import FROC_RATES, froc
from harness.metrics.froc import rate_key
from harness.metrics.plots import plot_froc


def pred(boxes, scores) -> dict:
    n = len(scores)
    return {
        "boxes": np.asarray(boxes, float).reshape(-1, 4),
        "scores": np.asarray(scores, float),
        "labels": np.ones(n, dtype=int),
    }


def gt(boxes) -> dict:
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    return {"boxes": boxes, "labels": np.ones(len(boxes), dtype=int)}


# Patients A and B node-positive, C node-negative; four lesions g1..g4.
PATIENTS = ["A", "A", "B", "C"]
GTS = [
    gt([[10, 10, 20, 20], [40, 40, 50, 50]]),  # A, image 0: g1, g2 (g2 never found)
    gt([[10, 10, 20, 20]]),  # A, image 1: g3
    gt([[30, 30, 40, 40]]),  # B: g4
    gt([]),  # C: no nodes
]
PREDS = [
    # 0.9 hits g1 (centre in, IoU 0.64); 0.8 hits g1 again (centre in, IoU 0.47): a duplicate; 0.3 hits nothing.
    pred([[11, 11, 19, 19], [12, 12, 22, 22], [60, 60, 70, 70]], [0.9, 0.8, 0.3]),
    # 0.5 misses g3; 0.1 is exactly g3.
    pred([[0, 0, 8, 8], [10, 10, 20, 20]], [0.5, 0.1]),
    # 0.7: centre (41, 35) outside g4, IoU 0.25 -> a hit only by IoU;
    # 0.4: centre (35, 35) inside g4, IoU 0.0625 -> a hit only by centre.
    pred([[36, 30, 46, 40], [15, 15, 55, 55]], [0.7, 0.4]),
    pred([[0, 0, 10, 10], [5, 5, 15, 15]], [0.6, 0.2]),  # C: two false positives
]


def test_froc_hand_made_centre_criterion():
    # FPs: 0.7 (B, centre outside), 0.6, 0.5, 0.3, 0.2; lesions found at 0.9 (g1), 0.4 (g4), 0.1 (g3); 3 patients.
    # threshold: 0.9 0.7 0.6 0.5 0.4 0.3 0.2 0.1
    # FP/pt:     0   1/3 2/3 1   1   4/3 5/3 5/3
    # sens:      1/4 1/4 1/4 1/4 2/4 2/4 2/4 3/4
    res = froc(PREDS, GTS, PATIENTS, hit="center")
    assert (res.n_lesions, res.n_patients, res.n_images) == (4, 3, 4)
    np.testing.assert_allclose(res.fp_rates, FROC_RATES)
    np.testing.assert_allclose(res.sensitivities, [0.25, 0.25, 0.25, 0.5, 0.75, 0.75, 0.75])
    assert res.mean_sensitivity == pytest.approx(3.5 / 7)
    np.testing.assert_allclose(res.curve_thresholds, [np.inf, 0.9, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    np.testing.assert_allclose(res.curve_fp_per_patient, np.array([0, 0, 1, 2, 3, 3, 4, 5, 5]) / 3)
    np.testing.assert_allclose(res.curve_sensitivity, np.array([0, 1, 1, 1, 1, 2, 2, 2, 3]) / 4)


def test_froc_hand_made_iou_criterion():
    # IoU >= 0.1: 0.7 now finds g4 and 0.4 becomes a FP. FPs 0.6, 0.5, 0.4, 0.3, 0.2; lesions at 0.9, 0.7, 0.1.
    # threshold: 0.9 0.7 0.6 0.5 0.4 0.3 0.2 0.1
    # FP/pt:     0   0   1/3 2/3 1   4/3 5/3 5/3
    # sens:      1/4 2/4 2/4 2/4 2/4 2/4 2/4 3/4
    res = froc(PREDS, GTS, PATIENTS, hit="iou", iou_threshold=0.1)
    np.testing.assert_allclose(res.sensitivities, [0.5, 0.5, 0.5, 0.5, 0.75, 0.75, 0.75])
    assert res.mean_sensitivity == pytest.approx(4.25 / 7)
    # A stricter IoU loses g4 (0.25) and the duplicate on g1 (0.47) turns into a FP.
    strict = froc(PREDS, GTS, PATIENTS, fp_rates=(0.5, 1, 2), hit="iou", iou_threshold=0.5)
    # FPs 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2 (FP/patient 1/3, 2/3, ..., 7/3); lesions at 0.9 (g1) and 0.1 (g3, only
    # reached at 7/3): 1/4 at every rate up to 2.
    np.testing.assert_allclose(strict.sensitivities, [0.25, 0.25, 0.25])


def test_duplicates_counted_once_and_negative_patients_in_the_denominator():
    # Only the hit on g1 and its duplicate: one lesion of three found, no FP at any threshold.
    res = froc([pred(PREDS[0]["boxes"][:2], [0.9, 0.8]), pred([], [])], GTS[:2], ["A", "A"], fp_rates=(0.125,))
    np.testing.assert_allclose(res.sensitivities, [1 / 3])
    assert res.curve_fp_per_patient.max() == 0
    # Node-negative patient C counts: with C the curve reaches only 4/3 FP/patient before g3 (sensitivity 1/2 at
    # 1.5); without C (FPs 0.7, 0.5, 0.3 over 2 patients) it reaches g3 at 3/2 (3/4).
    rates = (1.5,)
    assert froc(PREDS, GTS, PATIENTS, fp_rates=rates).sensitivities[0] == 0.5
    without_c = froc(PREDS[:3], GTS[:3], PATIENTS[:3], fp_rates=rates)
    assert without_c.n_patients == 2 and without_c.sensitivities[0] == 0.75


def test_sensitivity_at_a_rate_is_a_step_not_an_interpolation():
    # Patient A: FP 0.9, lesion g1 at 0.8, then a tie at 0.5 between a FP and lesion g2; patient B: nothing.
    # Curve (FP/patient, sensitivity): (0, 0), (1/2, 0), (1/2, 1/2), (1, 1). At 0.75 FP/patient the reachable
    # operating point is (1/2, 1/2); a linear interpolation would claim 3/4.
    preds = [
        pred([[60, 60, 70, 70], [0, 0, 10, 10], [80, 80, 90, 90], [20, 20, 30, 30]], [0.9, 0.8, 0.5, 0.5]),
        pred([], []),
    ]
    gts = [gt([[0, 0, 10, 10], [20, 20, 30, 30]]), gt([])]
    res = froc(preds, gts, ["A", "B"], fp_rates=(0.25, 0.5, 0.75, 1.0))
    np.testing.assert_allclose(res.curve_fp_per_patient, [0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(res.sensitivities, [0, 0.5, 0.5, 1.0])


def test_class_aware_hits():
    preds = [{"boxes": np.array([[10.0, 10, 20, 20]]), "scores": np.array([0.9]), "labels": np.array([2])}]
    gts = [gt([[10, 10, 20, 20]])]
    assert froc(preds, gts, ["A"], fp_rates=(1,)).sensitivities[0] == 1.0
    aware = froc(preds, gts, ["A"], fp_rates=(1,), class_aware=True)
    assert aware.sensitivities[0] == 0.0 and aware.curve_fp_per_patient[-1] == 1.0


def brute_force(preds, gts, patients, thresholds, hit, iou_threshold):
    """Direct definition, one threshold at a time, with plain loops."""
    n_patients, n_lesions = len(set(patients)), sum(len(g["boxes"]) for g in gts)
    points = []
    for t in thresholds:
        found, fps = 0, 0
        for p, g in zip(preds, gts, strict=True):
            kept = [(b, s) for b, s in zip(p["boxes"], p["scores"], strict=True) if s >= t]

            def hits(b, gb):
                if hit == "center":
                    cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
                    return gb[0] <= cx <= gb[2] and gb[1] <= cy <= gb[3]
                ix = max(0.0, min(b[2], gb[2]) - max(b[0], gb[0]))
                iy = max(0.0, min(b[3], gb[3]) - max(b[1], gb[1]))
                union = (b[2] - b[0]) * (b[3] - b[1]) + (gb[2] - gb[0]) * (gb[3] - gb[1]) - ix * iy
                return ix * iy / union >= iou_threshold

            found += sum(any(hits(b, gb) for b, _ in kept) for gb in g["boxes"])
            fps += sum(not any(hits(b, gb) for gb in g["boxes"]) for b, _ in kept)
        points.append((fps / n_patients, found / n_lesions))
    return np.array(points)


@pytest.mark.parametrize("hit", ["center", "iou"])
def test_froc_curve_matches_brute_force(hit):
    rng = np.random.default_rng(7)
    preds, gts, patients = [], [], []
    for i in range(40):
        k = int(rng.integers(0, 3)) if i % 4 else 0
        xy = rng.uniform(0, 100, (k, 2))
        g = np.c_[xy, xy + rng.uniform(5, 20, (k, 2))]
        found = rng.random(k) < 0.7
        jitter = g[found] + rng.normal(0, 3, (int(found.sum()), 4))
        fp_xy = rng.uniform(0, 100, (int(rng.integers(0, 3)), 2))
        boxes = np.concatenate([jitter, np.c_[fp_xy, fp_xy + 10]])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        preds.append(pred(boxes, np.round(rng.uniform(0, 1, len(boxes)), 2)))  # rounded: tied scores
        gts.append(gt(g))
        patients.append(i // 5)
    res = froc(preds, gts, patients, hit=hit)
    expected = brute_force(preds, gts, patients, res.curve_thresholds[1:], hit, 0.1)
    np.testing.assert_allclose(res.curve_fp_per_patient[1:], expected[:, 0], atol=1e-12)
    np.testing.assert_allclose(res.curve_sensitivity[1:], expected[:, 1], atol=1e-12)
    # The read-out: best sensitivity among brute-force operating points within each rate.
    for rate, sens in zip(res.fp_rates, res.sensitivities, strict=True):
        within = expected[expected[:, 0] <= rate + 1e-12, 1]
        assert sens == pytest.approx(max(within, default=0.0))


def test_froc_without_lesions_or_predictions():
    empty = froc([pred([[0, 0, 5, 5]], [0.4])], [gt([])], ["A"])
    assert empty.n_lesions == 0 and math.isnan(empty.mean_sensitivity) and np.isnan(empty.sensitivities).all()
    silent = froc([pred([], [])], [gt([[0, 0, 5, 5]])], ["A"])
    assert silent.mean_sensitivity == 0.0
    with pytest.raises(ValueError, match="hit must be"):
        froc(PREDS, GTS, PATIENTS, hit="overlap")


def test_rate_keys():
    assert [rate_key(r) for r in FROC_RATES] == ["0_125", "0_25", "0_5", "1", "2", "4", "8"]


def test_froc_plot_writes_a_png(tmp_path):
    res = {"centre": froc(PREDS, GTS, PATIENTS), "iou": froc(PREDS, GTS, PATIENTS, hit="iou")}
    path = plot_froc(res, tmp_path / "froc.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_froc(res["iou"], tmp_path / "one.png").exists()
