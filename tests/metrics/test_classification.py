"""Classifier metrics: library results reproduced, DeLong checked against placement values and a bootstrap."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import roc_auc_score

from harness.metrics import (
    PatientScores,
    bootstrap_auc_ci,
    classifier_report,
    classifier_report_keys,
    delong_auc_ci,
    delong_covariance,
    delong_test,
    patient_scores,
    roc_auc,
    score_distribution,
    slice_auc,
    threshold_metrics,
    youden_threshold,
)
from harness.metrics.classification import _auc_from_groups
from harness.metrics.plots import plot_roc_curves


def simulate(n: int, seed: int, shift: float = 1.0, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    s = shift * y + rng.normal(size=n)
    return y, (np.round(s, 1) if ties else s)


def correlated(n: int, seed: int, shift_b: float = 0.8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two models sharing part of their noise (correlation ~0.64), model a the better one."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.5).astype(int)
    common, own_a, own_b = rng.normal(size=(3, n))
    a = 1.2 * y + 0.8 * common + 0.6 * own_a
    b = shift_b * y + 0.8 * common + 0.6 * own_b
    return y, a, b


def stratified_resamples(y: np.ndarray, s: np.ndarray, n: int, seed: int, indices: bool = False) -> tuple:
    """(n, m) positive and (n, k) negative score resamples drawn with replacement, class by class."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    pos_idx, neg_idx = rng.choice(pos, (n, pos.size)), rng.choice(neg, (n, neg.size))
    return (s[pos_idx], s[neg_idx], pos_idx, neg_idx) if indices else (s[pos_idx], s[neg_idx])


def mann_whitney_aucs(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUC of each row as U / (m n), from scipy's Mann-Whitney U (independent of harness.metrics)."""
    u = stats.mannwhitneyu(pos, neg, axis=1, method="asymptotic").statistic
    return u / (pos.shape[1] * neg.shape[1])


# --- patient scores -------------------------------------------------------------------------------------------------


def test_patient_scores_are_mean_slice_probabilities():
    probs = [0.2, 0.4, 0.9, 0.1, 0.5]
    ids = ["b", "b", "a", "c", "c"]
    out = patient_scores(torch.tensor(probs), ids, [1, 1, 0, 0, 0])
    assert out.patients.tolist() == ["a", "b", "c"]
    np.testing.assert_allclose(out.scores, [0.9, 0.3, 0.3])
    assert out.labels.tolist() == [0, 1, 0] and out.n_slices.tolist() == [1, 2, 2]


def test_patient_scores_rejects_a_patient_with_two_labels():
    with pytest.raises(ValueError, match="both labels.*'b'"):
        patient_scores([0.1, 0.2, 0.3], ["a", "b", "b"], [0, 0, 1])
    with pytest.raises(ValueError, match="lengths differ"):
        patient_scores([0.1, 0.2], ["a"], [0, 0])


# --- AUC and bootstrap CI -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ties", [False, True])
def test_auc_equals_sklearn_and_rank_formula(ties):
    y, s = simulate(157, seed=3, ties=ties)
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    # The vectorised rank-sum AUC the bootstrap uses, on a batch of resamples, against sklearn one by one.
    rng = np.random.default_rng(0)
    pos, neg = s[y == 1], s[y == 0]
    bp, bn = rng.choice(pos, (5, pos.size)), rng.choice(neg, (5, neg.size))
    expected = [
        roc_auc_score(np.r_[np.ones(pos.size), np.zeros(neg.size)], np.r_[p, n]) for p, n in zip(bp, bn, strict=True)
    ]
    np.testing.assert_allclose(_auc_from_groups(bp, bn), expected, atol=1e-12)


def test_auc_is_nan_with_one_class_and_rejects_bad_labels():
    assert math.isnan(roc_auc([1, 1, 1], [0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="0 or 1"):
        roc_auc([0, 2, 1], [0.1, 0.2, 0.3])
    assert slice_auc([0.1, 0.9, 0.4], [0, 1, 1]) == 1.0


def test_bootstrap_ci_contains_auc_and_shrinks_with_n():
    widths = []
    for n in (60, 600):
        y, s = simulate(n, seed=n)
        low, high = bootstrap_auc_ci(y, s, n_boot=1000)
        assert low < roc_auc(y, s) < high
        widths.append(high - low)
    assert widths[1] < 0.6 * widths[0]  # ~ 1/sqrt(10) in theory


@pytest.mark.parametrize(("n", "shift"), [(120, 1.0), (40, 2.5)])  # AUC ~0.78, and ~0.99 (a skewed distribution)
def test_bootstrap_ci_matches_a_naive_stratified_percentile_bootstrap(n, shift):
    y, s = simulate(n, seed=11, shift=shift)
    low, high = bootstrap_auc_ci(y, s, n_boot=2000, seed=1)
    aucs = mann_whitney_aucs(*stratified_resamples(y, s, 2000, seed=123))
    naive = np.percentile(aucs, [2.5, 97.5])
    np.testing.assert_allclose([low, high], naive, atol=0.015)


@pytest.mark.parametrize(
    ("labels", "scores"),
    [
        ([0, 1], [0.3, 0.2]),
        ([0, 1, 1], [0.1, 0.5, 0.05]),
        ([0, 0, 0, 0, 1], [0.1, 0.2, 0.3, 0.9, 0.25]),
        ([0, 0, 1, 1], [0.5, 0.5, 0.5, 0.5]),
    ],
)
def test_bootstrap_ci_never_fails_on_tiny_cohorts(labels, scores):
    low, high = bootstrap_auc_ci(labels, scores, n_boot=200)
    auc = roc_auc(labels, scores)
    assert 0.0 <= low <= auc <= high <= 1.0


def test_bootstrap_ci_reproducible_and_nan_without_both_classes():
    y, s = simulate(50, seed=5)
    assert bootstrap_auc_ci(y, s, n_boot=300, seed=7) == bootstrap_auc_ci(y, s, n_boot=300, seed=7)
    assert all(math.isnan(v) for v in bootstrap_auc_ci([0, 0, 0], [0.1, 0.2, 0.3]))


# --- DeLong ---------------------------------------------------------------------------------------------------------


def slow_delong(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong 1988 straight from the definition: psi over all (positive, negative) pairs, O(m*n) per model."""
    x, z = scores[:, y == 1], scores[:, y == 0]
    m, n = x.shape[1], z.shape[1]
    psi = (x[:, :, None] > z[:, None, :]) + 0.5 * (x[:, :, None] == z[:, None, :])  # (k, m, n)
    aucs = psi.mean(axis=(1, 2))
    v10, v01 = psi.mean(axis=2), psi.mean(axis=1)  # placement values of positives, of negatives
    s10 = (v10 - aucs[:, None]) @ (v10 - aucs[:, None]).T / (m - 1)
    s01 = (v01 - aucs[:, None]) @ (v01 - aucs[:, None]).T / (n - 1)
    return aucs, s10 / m + s01 / n


@pytest.mark.parametrize("ties", [False, True])
def test_delong_covariance_equals_placement_value_definition(ties):
    y, a, b = correlated(90, seed=2)
    scores = np.stack([a, b, -a + b])
    if ties:
        scores = np.round(scores)
    aucs, cov = delong_covariance(y, scores)
    ref_aucs, ref_cov = slow_delong(y, scores)
    np.testing.assert_allclose(aucs, ref_aucs, atol=1e-12)
    np.testing.assert_allclose(cov, ref_cov, atol=1e-12)
    np.testing.assert_allclose(aucs, [roc_auc_score(y, s) for s in scores], atol=1e-12)


def test_delong_test_equals_slow_implementation_and_sign():
    y, a, b = correlated(70, seed=8)
    res = delong_test(y, a, b)
    aucs, cov = slow_delong(y, np.stack([a, b]))
    z = (aucs[0] - aucs[1]) / math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert res.z == pytest.approx(z, rel=1e-10)
    assert res.p_value == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-10)
    assert res.auc_a > res.auc_b and res.z > 0
    swapped = delong_test(y, b, a)
    assert swapped.z == pytest.approx(-res.z) and swapped.p_value == pytest.approx(res.p_value)


@pytest.mark.parametrize("seed", [2, 3, 4])  # p = 0.10, 0.72, 0.37 with these seeds: far from 0 or 1
def test_delong_agrees_with_a_paired_bootstrap_of_the_auc_difference(seed):
    y, a, b = correlated(400, seed=seed, shift_b=1.05)
    res = delong_test(y, a, b)
    # The same resampled patients for both models: the bootstrap keeps their correlation.
    *_, pos_idx, neg_idx = stratified_resamples(y, a, 3000, seed=0, indices=True)
    diffs = mann_whitney_aucs(a[pos_idx], a[neg_idx]) - mann_whitney_aucs(b[pos_idx], b[neg_idx])
    se_boot = float(np.std(diffs, ddof=1))
    assert res.se == pytest.approx(se_boot, rel=0.06)
    p_boot = 2 * stats.norm.sf(abs((res.auc_a - res.auc_b) / se_boot))
    assert res.p_value == pytest.approx(p_boot, abs=0.03)
    assert np.sign(res.z) == np.sign(np.mean(diffs)) == 1


def test_delong_degenerate_cases():
    y, a, _ = correlated(40, seed=1)
    same = delong_test(y, a, a)
    assert (same.z, same.p_value) == (0.0, 1.0)
    tiny = delong_test([0, 1, 1], [0.1, 0.5, 0.6], [0.2, 0.1, 0.9])
    assert tiny.auc_a == 1.0 and math.isnan(tiny.p_value)


def test_delong_auc_ci_is_close_to_the_bootstrap_ci():
    y, s = simulate(300, seed=21)
    low, high = delong_auc_ci(y, s)
    auc = roc_auc(y, s)
    assert low < auc < high
    b_low, b_high = bootstrap_auc_ci(y, s)
    assert (high - low) == pytest.approx(b_high - b_low, rel=0.15)


# --- threshold, distribution ----------------------------------------------------------------------------------------


def test_youden_threshold_hand_made():
    # Thresholds 0.8: sens 1/3, spec 1; 0.6: sens 2/3, spec 1 (J = 2/3); 0.5: sens 2/3, spec 2/3; 0.4: sens 1, spec
    # 2/3 (J = 2/3, lower threshold: the first maximum, 0.6, wins); 0.3 and below: J <= 1/3.
    labels = [1, 1, 0, 1, 0, 0]
    scores = [0.8, 0.6, 0.5, 0.4, 0.3, 0.1]
    assert youden_threshold(labels, scores) == 0.6
    assert youden_threshold([0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9]) == 0.7
    assert math.isnan(youden_threshold([1, 1], [0.2, 0.3]))


def test_threshold_metrics_counts_score_equal_to_threshold_as_positive():
    m = threshold_metrics([1, 1, 0, 1, 0, 0], [0.8, 0.6, 0.5, 0.4, 0.6, 0.1], threshold=0.6)
    # positives called: 0.8, 0.6 (TP), 0.6 (FP); TP=2 FN=1 FP=1 TN=2
    assert m == pytest.approx(
        {"sensitivity": 2 / 3, "specificity": 2 / 3, "accuracy": 4 / 6, "ppv": 2 / 3, "npv": 2 / 3}
    )
    assert math.isnan(threshold_metrics([0, 0], [0.1, 0.9], 0.5)["sensitivity"])


def test_score_distribution_matches_scipy_and_numpy():
    y, s = simulate(80, seed=9)
    d = score_distribution(y, s)
    ref = stats.mannwhitneyu(s[y == 1], s[y == 0], alternative="two-sided")
    assert d["mannwhitney_p"] == pytest.approx(ref.pvalue) and d["mannwhitney_u"] == ref.statistic
    # U / (m n) is the AUC: ties the test to the ROC analysis
    assert d["mannwhitney_u"] / (d["n_pos"] * d["n_neg"]) == pytest.approx(roc_auc(y, s))
    assert d["median_pos"] == pytest.approx(np.median(s[y == 1]))
    assert (d["iqr_low_neg"], d["iqr_high_neg"]) == pytest.approx(tuple(np.percentile(s[y == 0], [25, 75])))
    assert math.isnan(score_distribution([1, 1], [0.1, 0.2])["median_neg"])


# --- report ---------------------------------------------------------------------------------------------------------


def cohort(n: int, seed: int) -> PatientScores:
    y, s = simulate(n, seed)
    return PatientScores(np.array([f"p{i:03d}" for i in range(n)]), 1 / (1 + np.exp(-s)), y, np.ones(n, dtype=int))


def test_classifier_report_keys_values_and_train_threshold():
    train, val = cohort(120, 1), cohort(60, 2)
    mr_ln = {p: int(i % 3 == 0) for i, p in enumerate(val.patients)}
    rep = classifier_report(
        train, val, val_mr_ln_status=mr_ln, val_slice_probs=val.scores, val_slice_labels=val.labels, n_boot=300
    )
    assert list(rep) == classifier_report_keys("val", mr_ln=True, slices=True)
    assert all(isinstance(v, float) and math.isfinite(v) for v in rep.values())
    threshold = youden_threshold(train.labels, train.scores)
    assert rep["val_threshold"] == threshold  # chosen on train, not on val
    assert threshold != youden_threshold(val.labels, val.scores)
    expected = threshold_metrics(val.labels, val.scores, threshold)
    assert rep["val_sensitivity"] == expected["sensitivity"] and rep["val_specificity"] == expected["specificity"]
    assert rep["val_auc"] == pytest.approx(roc_auc_score(val.labels, val.scores))
    sub = val.subset(np.array([mr_ln[p] == 1 for p in val.patients]))
    assert rep["val_mrln_pos_auc"] == pytest.approx(roc_auc_score(sub.labels, sub.scores))
    assert rep["val_mrln_pos_n_patients"] + rep["val_mrln_neg_n_patients"] == 60


def test_classifier_report_is_nan_not_an_error_for_degenerate_subgroups():
    train = cohort(40, 3)
    val = PatientScores(
        np.array(["a", "b", "c", "d"]), np.array([0.9, 0.2, 0.6, 0.4]), np.array([1, 0, 1, 1]), np.ones(4, dtype=int)
    )
    rep = classifier_report(train, val, val_mr_ln_status=[1, 0, 1, 1], prefix="ext", n_boot=100)
    assert list(rep) == classifier_report_keys("ext", mr_ln=True)
    assert math.isnan(rep["ext_mrln_pos_auc"]) and math.isnan(rep["ext_mrln_pos_specificity"])  # no negatives
    assert math.isnan(rep["ext_mrln_neg_sensitivity"])  # one negative patient, no positive
    assert math.isfinite(rep["ext_auc"]) and rep["ext_n_positive"] == 3
    only_negatives = classifier_report(train, val.subset(val.labels == 0), n_boot=100)
    assert math.isnan(only_negatives["val_auc"]) and math.isnan(only_negatives["val_auc_ci_low"])


def test_roc_plot_writes_a_png(tmp_path):
    y, s = simulate(50, seed=1)
    path = plot_roc_curves({"a": (y, s), "b": (y, -s)}, tmp_path / "sub" / "roc.png", ci={"a": (0.6, 0.8)})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
