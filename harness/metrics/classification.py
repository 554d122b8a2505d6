"""Patient-level classifier metrics as reported by Wu 2020 (JAMA Netw Open, supplement).

DL-score = mean slice probability per patient; ROC AUC (scikit-learn) with a stratified bootstrap CI (scipy.stats);
Youden threshold chosen on the training cohort and applied unchanged to validation; sensitivity, specificity,
accuracy; DL-score median (IQR) by nodal status with the Mann-Whitney U test; the same within MR-LN subgroups.
DeLong's test between two models lives in `harness.metrics.delong`. Labels are 0/1 with 1 = node-positive (LNM).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

NAN = float("nan")


def as_array(values: Any, dtype: Any = None) -> np.ndarray:
    """A 1-D numpy array from a list, numpy array or torch tensor (detached, on the CPU)."""
    if hasattr(values, "detach"):  # torch.Tensor, without importing torch here
        values = values.detach().cpu().numpy()
    out = np.asarray(values, dtype=dtype)
    if out.ndim == 2 and out.shape[1] == 1:  # (N, 1) model outputs, e.g. sigmoid of a one-logit head
        out = out[:, 0]
    if out.ndim != 1:
        raise ValueError(f"expected a 1-D array, got shape {out.shape}")
    return out


def binary_labels(labels: Any) -> np.ndarray:
    """Labels as an int array of 0/1; anything else (2, -1, 0.5, NaN) is an error rather than a silent wrong AUC."""
    y = as_array(labels)
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 or 1, got values {np.unique(y)[:10].tolist()}")
    return y.astype(np.int64)


def _check_pair(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y, s = binary_labels(labels), as_array(scores, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} vs {s.shape[0]}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf")
    return y, s


def _both_classes(y: np.ndarray) -> bool:
    return bool(y.size) and 0 < int(y.sum()) < y.size


@dataclass(frozen=True)
class PatientScores:
    """One row per patient: id, DL-score (mean slice probability), label (1 = node-positive), number of slices."""

    patients: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    n_slices: np.ndarray

    def __len__(self) -> int:
        return int(self.patients.shape[0])

    def subset(self, mask: np.ndarray) -> PatientScores:
        """The patients where ``mask`` is true."""
        return PatientScores(self.patients[mask], self.scores[mask], self.labels[mask], self.n_slices[mask])


def patient_scores(slice_probs: Any, patient_ids: Any, labels: Any) -> PatientScores:
    """Aggregates slice probabilities into one DL-score per patient (Wu 2020: the mean over the tumour's slices).

    Args:
        slice_probs: predicted LNM probability of every slice.
        patient_ids: the patient of every slice.
        labels: the patient's label on every slice (0/1).

    Returns:
        PatientScores with patients sorted by id.

    Raises:
        ValueError: on length mismatch, or when one patient's slices carry different labels.
    """
    probs = as_array(slice_probs, dtype=np.float64)
    ids = as_array(patient_ids)
    y = binary_labels(labels)
    if not probs.shape == ids.shape == y.shape:
        raise ValueError(f"lengths differ: {probs.shape[0]} probs, {ids.shape[0]} patient ids, {y.shape[0]} labels")
    patients, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    means = np.bincount(inverse, weights=probs, minlength=len(patients)) / counts
    positives = np.bincount(inverse, weights=y, minlength=len(patients))
    mixed = (positives > 0) & (positives < counts)
    if mixed.any():
        raise ValueError(f"{int(mixed.sum())} patient(s) have slices with both labels, e.g. {patients[mixed][0]!r}")
    return PatientScores(patients, means, (positives > 0).astype(np.int64), counts)


def roc_auc(labels: Any, scores: Any) -> float:
    """ROC AUC (scikit-learn's ``roc_auc_score``); NaN when only one class is present, where it is undefined."""
    y, s = _check_pair(labels, scores)
    return float(roc_auc_score(y, s)) if _both_classes(y) else NAN


def slice_auc(slice_probs: Any, slice_labels: Any) -> float:
    """Slice-level ROC AUC: every slice counts as one case (slices of one patient are not independent)."""
    return roc_auc(slice_labels, slice_probs)


def _auc_from_groups(pos: np.ndarray, neg: np.ndarray, axis: int = -1) -> np.ndarray:
    """AUC = P(pos > neg) + P(tie)/2 via the rank-sum (Mann-Whitney U) identity; vectorised over leading axes."""
    n_pos, n_neg = pos.shape[axis], neg.shape[axis]
    ranks = stats.rankdata(np.concatenate([pos, neg], axis=axis), axis=axis)  # midranks for ties
    rank_sum = np.take(ranks, np.arange(n_pos), axis=axis).sum(axis=axis)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


class ConfidenceInterval(NamedTuple):
    """A two-sided confidence interval."""

    low: float
    high: float


def bootstrap_auc_ci(
    labels: Any, scores: Any, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> ConfidenceInterval:
    """Percentile bootstrap CI of the ROC AUC, resampling patients stratified by label.

    Positives and negatives are resampled separately, each with replacement and at its own size (``scipy.stats.
    bootstrap`` with the two classes as two samples), so every resample holds both classes and the class balance
    of the cohort: the AUC is defined in every replicate, even with very few patients. A class with a single
    patient cannot be resampled (scipy needs two observations) and is held fixed.

    Args:
        labels: 0/1 per patient.
        scores: score per patient (e.g. the DL-score).
        n_boot: number of bootstrap resamples.
        level: confidence level.
        seed: seed of the resampling generator.

    Returns:
        (low, high); (NaN, NaN) when a class is absent.
    """
    y, s = _check_pair(labels, scores)
    if not _both_classes(y):
        return ConfidenceInterval(NAN, NAN)
    pos, neg = s[y == 1], s[y == 0]
    auc = float(_auc_from_groups(pos, neg))
    varying = [g for g in (pos, neg) if g.size >= 2]
    if not varying:
        return ConfidenceInterval(auc, auc)

    def statistic(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        it = iter(samples)
        groups = [next(it) if g.size >= 2 else g for g in (pos, neg)]
        shape = np.broadcast_shapes(*(g.shape[:-1] for g in groups))
        p, n = (np.broadcast_to(g, (*shape, g.shape[-1])) for g in groups)
        return _auc_from_groups(p, n, axis=-1)

    result = stats.bootstrap(
        tuple(varying),
        statistic,
        n_resamples=n_boot,
        confidence_level=level,
        method="percentile",
        vectorized=True,
        axis=-1,
        batch=max(1, 2_000_000 // s.size),  # bounds memory: batch x patients floats per rank call
        rng=np.random.default_rng(seed),
    )
    return ConfidenceInterval(float(result.confidence_interval.low), float(result.confidence_interval.high))


def youden_threshold(labels: Any, scores: Any) -> float:
    """The score threshold maximising Youden's J = sensitivity + specificity - 1 over scikit-learn's ROC curve.

    The threshold is one of the observed scores (``roc_curve``'s thresholds, ``score >= threshold`` is positive);
    among equal J the highest threshold wins (the first in ``roc_curve``'s decreasing order). NaN when a class is
    absent.
    """
    y, s = _check_pair(labels, scores)
    if not _both_classes(y):
        return NAN
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    finite = np.isfinite(thresholds)  # sklearn >= 1.3 starts the curve at threshold inf (nothing positive)
    j = np.where(finite, tpr - fpr, -np.inf)
    # Equal J in exact arithmetic can differ in the last bit (1 - 1/3 vs 2/3 - 0): compare with a tolerance so
    # the documented tie rule (highest threshold) holds.
    return float(thresholds[int(np.flatnonzero(j >= j.max() - 1e-12)[0])])


def _ratio(num: float, den: float) -> float:
    return num / den if den else NAN


def threshold_metrics(labels: Any, scores: Any, threshold: float) -> dict[str, float]:
    """Sensitivity, specificity, accuracy, PPV and NPV with ``score >= threshold`` called positive.

    Returns:
        dict with keys ``sensitivity, specificity, accuracy, ppv, npv``; a ratio with a zero denominator is NaN.
    """
    y, s = _check_pair(labels, scores)
    if math.isnan(threshold):
        return dict.fromkeys(("sensitivity", "specificity", "accuracy", "ppv", "npv"), NAN)
    called = s >= threshold
    tp, fp = int((called & (y == 1)).sum()), int((called & (y == 0)).sum())
    fn, tn = int((~called & (y == 1)).sum()), int((~called & (y == 0)).sum())
    return {
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "accuracy": _ratio(tp + tn, y.size),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
    }


def score_distribution(labels: Any, scores: Any) -> dict[str, float]:
    """Median and IQR of the scores per class and the two-sided Mann-Whitney U test between the classes.

    Quartiles are numpy's default (linear interpolation, R's type 7). The test is ``scipy.stats.mannwhitneyu``
    (two-sided, ``method="auto"``: exact for small samples without ties, else the normal approximation with
    continuity correction).

    Returns:
        dict with ``median_pos, iqr_low_pos, iqr_high_pos, n_pos`` (and ``_neg``), ``mannwhitney_u`` (U of the
        positives) and ``mannwhitney_p``; NaN for an empty class.
    """
    y, s = _check_pair(labels, scores)
    out: dict[str, float] = {}
    for name, group in (("pos", s[y == 1]), ("neg", s[y == 0])):
        q25, q50, q75 = np.percentile(group, [25, 50, 75]) if group.size else (NAN, NAN, NAN)
        out |= {f"median_{name}": float(q50), f"iqr_low_{name}": float(q25), f"iqr_high_{name}": float(q75)}
        out[f"n_{name}"] = float(group.size)
    if _both_classes(y):
        test = stats.mannwhitneyu(s[y == 1], s[y == 0], alternative="two-sided")
        out |= {"mannwhitney_u": float(test.statistic), "mannwhitney_p": float(test.pvalue)}
    else:
        out |= {"mannwhitney_u": NAN, "mannwhitney_p": NAN}
    return out


# Key suffixes of classifier_report, in order; `{prefix}_` goes in front. Documented in docs/metrics.md.
REPORT_KEYS = (
    "auc",
    "auc_ci_low",
    "auc_ci_high",
    "threshold",
    "sensitivity",
    "specificity",
    "accuracy",
    "ppv",
    "npv",
    "dl_score_median_pos",
    "dl_score_iqr_low_pos",
    "dl_score_iqr_high_pos",
    "dl_score_median_neg",
    "dl_score_iqr_low_neg",
    "dl_score_iqr_high_neg",
    "mannwhitney_p",
    "n_patients",
    "n_positive",
)
SUBGROUP_KEYS = ("auc", "sensitivity", "specificity", "accuracy", "mannwhitney_p", "n_patients", "n_positive")
SUBGROUPS = ("mrln_pos", "mrln_neg")


def classifier_report_keys(prefix: str = "val", *, mr_ln: bool = False, slices: bool = False) -> list[str]:
    """The exact keys `classifier_report` returns for these options."""
    keys = [f"{prefix}_{k}" for k in REPORT_KEYS]
    if mr_ln:
        keys += [f"{prefix}_{g}_{k}" for g in SUBGROUPS for k in SUBGROUP_KEYS]
    if slices:
        keys.append(f"{prefix}_slice_auc")
    return keys


def _mr_ln_array(status: Any, patients: np.ndarray) -> np.ndarray:
    if isinstance(status, Mapping):
        missing = [p for p in patients if p not in status]
        if missing:
            raise ValueError(f"MR-LN status missing for {len(missing)} patient(s), e.g. {missing[0]!r}")
        status = [status[p] for p in patients]
    out = binary_labels(status)
    if out.shape != patients.shape:
        raise ValueError(f"MR-LN status has {out.shape[0]} entries for {patients.shape[0]} patients")
    return out


def classifier_report(
    train: PatientScores,
    val: PatientScores,
    *,
    val_mr_ln_status: Mapping[str, int] | Sequence[int] | np.ndarray | None = None,
    val_slice_probs: Any = None,
    val_slice_labels: Any = None,
    prefix: str = "val",
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Wu 2020's patient-level evaluation of one cohort as a flat dict of floats with stable names.

    The Youden threshold is chosen on ``train`` and applied unchanged to ``val`` (the paper's protocol). Pass the
    training cohort as ``val`` with ``prefix="train"`` to report the training cohort itself.

    Args:
        train: training (primary) cohort; only its Youden threshold is used.
        val: the cohort to report.
        val_mr_ln_status: MR-LN status (0/1) per ``val`` patient, as an array aligned with ``val.patients`` or a
            mapping from patient id; adds the ``{prefix}_mrln_pos_*`` and ``{prefix}_mrln_neg_*`` keys.
        val_slice_probs: slice probabilities of ``val``; with ``val_slice_labels`` adds ``{prefix}_slice_auc``.
        val_slice_labels: slice labels of ``val``.
        prefix: key prefix.
        n_boot: bootstrap resamples for the AUC CI.
        level: confidence level of the CI.
        seed: bootstrap seed.

    Returns:
        ``classifier_report_keys(prefix, mr_ln=..., slices=...)`` mapped to floats; NaN where a metric is undefined
        (a class absent from the cohort or subgroup, a zero denominator). Never raises for a degenerate cohort.
    """
    threshold = youden_threshold(train.labels, train.scores)
    y, s = val.labels, val.scores
    ci = bootstrap_auc_ci(y, s, n_boot=n_boot, level=level, seed=seed)
    at = threshold_metrics(y, s, threshold)
    dist = score_distribution(y, s)
    row: dict[str, float] = {"auc": roc_auc(y, s), "auc_ci_low": ci.low, "auc_ci_high": ci.high}
    row |= {"threshold": threshold, **at}
    for cls in ("pos", "neg"):
        for stat in ("median", "iqr_low", "iqr_high"):
            row[f"dl_score_{stat}_{cls}"] = dist[f"{stat}_{cls}"]
    row |= {"mannwhitney_p": dist["mannwhitney_p"], "n_patients": float(len(val)), "n_positive": float(y.sum())}
    report = {f"{prefix}_{k}": float(row[k]) for k in REPORT_KEYS}
    if val_mr_ln_status is not None:
        status = _mr_ln_array(val_mr_ln_status, val.patients)
        for name, mask in zip(SUBGROUPS, (status == 1, status == 0), strict=True):
            ys, ss = y[mask], s[mask]
            sub = {"auc": roc_auc(ys, ss), **threshold_metrics(ys, ss, threshold)}
            sub |= {"mannwhitney_p": score_distribution(ys, ss)["mannwhitney_p"]}
            sub |= {"n_patients": float(ys.size), "n_positive": float(ys.sum())}
            report |= {f"{prefix}_{name}_{k}": float(sub[k]) for k in SUBGROUP_KEYS}
    if (val_slice_probs is None) != (val_slice_labels is None):
        raise ValueError("give both val_slice_probs and val_slice_labels, or neither")
    if val_slice_probs is not None:
        report[f"{prefix}_slice_auc"] = slice_auc(val_slice_probs, val_slice_labels)
    return report
