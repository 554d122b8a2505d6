"""DeLong's nonparametric covariance of correlated ROC AUCs, the test between two models and a DeLong AUC CI.

No well-kept Python library implements DeLong's test (scikit-learn does not; pROC is R), so it is written here,
following the fast algorithm of Sun & Xu (2014) and tested against a direct O(m*n) implementation of DeLong's
placement values and against a bootstrap (tests/metrics/test_classification.py).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from scipy import stats

from .classification import NAN, ConfidenceInterval, as_array, binary_labels, roc_auc


class DeLongResult(NamedTuple):
    """DeLong's test of H0: AUC_a = AUC_b on the same patients; z > 0 when model a has the larger AUC."""

    auc_a: float
    auc_b: float
    z: float
    p_value: float
    se: float  # standard error of auc_a - auc_b


def delong_covariance(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of k models scored on the same patients and DeLong's covariance matrix of those AUCs.

    DeLong, DeLong & Clarke-Pearson (1988), Biometrics 44:837-845, computed with the midrank algorithm of Sun & Xu
    (2014), IEEE Signal Process Lett 21:1389-1393: for m positives X and n negatives Y, the placement value of a
    positive is V10(X_i) = mean_j psi(X_i, Y_j) and that of a negative V01(Y_j) = mean_i psi(X_i, Y_j), with
    psi = 1 if X > Y, 1/2 on a tie, 0 otherwise. Midranks give them in O((m+n) log(m+n)): V10(X_i) = (Z_i - X_i)/n
    and V01(Y_j) = 1 - (Z_j - Y_j)/m, where Z is the midrank among all scores and X (Y) the midrank within the
    positives (negatives). Cov(AUC) = S10/m + S01/n with S10, S01 the sample covariances (ddof=1) of the placement
    values across models.

    Args:
        labels: 0/1 per patient.
        scores: (k, N) or (N,) scores, one row per model.

    Returns:
        aucs (k,) and covariance (k, k); all NaN when a class has fewer than two patients.
    """
    y = binary_labels(labels)
    s = np.asarray(scores.detach().cpu().numpy() if hasattr(scores, "detach") else scores, dtype=np.float64)
    s = np.atleast_2d(s)
    if s.ndim != 2 or s.shape[1] != y.size:
        raise ValueError(f"scores must be (k, {y.size}) or ({y.size},), got {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf")
    k = s.shape[0]
    pos, neg = s[:, y == 1], s[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    if m < 2 or n < 2:
        return np.full(k, NAN), np.full((k, k), NAN)
    tx = stats.rankdata(pos, axis=1)
    ty = stats.rankdata(neg, axis=1)
    tz = stats.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


def delong_test(labels: Any, scores_a: Any, scores_b: Any) -> DeLongResult:
    """DeLong's test for two correlated ROC curves (two models scored on the same patients), two-sided.

    DeLong et al. (1988), fast algorithm of Sun & Xu (2014); see `delong_covariance`. z = (AUC_a - AUC_b) / SE with
    SE^2 = Var(AUC_a) + Var(AUC_b) - 2 Cov(AUC_a, AUC_b), and p = 2 (1 - Phi(|z|)). When SE is 0 (e.g. the same
    scores twice, or both models separate the classes perfectly) z = 0 and p = 1 if the AUCs are equal, otherwise
    both are NaN; with fewer than two patients in a class everything but the AUCs is NaN.

    Args:
        labels: 0/1 per patient.
        scores_a: model a's score per patient.
        scores_b: model b's score per patient, same patients in the same order.

    Returns:
        DeLongResult(auc_a, auc_b, z, p_value, se).
    """
    a, b = as_array(scores_a, dtype=np.float64), as_array(scores_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"scores_a and scores_b differ in length: {a.shape[0]} vs {b.shape[0]}")
    aucs, cov = delong_covariance(labels, np.stack([a, b]))
    if np.isnan(aucs).any():  # a class with < 2 patients: no variance; still report the AUCs when defined
        return DeLongResult(roc_auc(labels, a), roc_auc(labels, b), NAN, NAN, NAN)
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    # Rounding can leave a tiny negative or positive variance for identical curves; treat |var| ~ 0 as zero.
    if var <= 1e-15:
        z, p = (0.0, 1.0) if abs(diff) <= 1e-12 else (NAN, NAN)
        return DeLongResult(float(aucs[0]), float(aucs[1]), z, p, 0.0)
    se = var**0.5
    z = diff / se
    return DeLongResult(float(aucs[0]), float(aucs[1]), z, float(2 * stats.norm.sf(abs(z))), se)


def delong_auc_ci(labels: Any, scores: Any, level: float = 0.95) -> ConfidenceInterval:
    """Wald CI of one AUC with DeLong's variance: AUC +- z_(1+level)/2 * SE, clipped to [0, 1] (as pROC does).

    Returns:
        (low, high); NaN when a class has fewer than two patients.
    """
    aucs, cov = delong_covariance(labels, as_array(scores, dtype=np.float64))
    if np.isnan(aucs[0]):
        return ConfidenceInterval(NAN, NAN)
    half = float(stats.norm.ppf(0.5 + level / 2) * max(float(cov[0, 0]), 0.0) ** 0.5)
    return ConfidenceInterval(max(0.0, float(aucs[0]) - half), min(1.0, float(aucs[0]) + half))
