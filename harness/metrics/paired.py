"""Paired comparison of two configurations' AUCs on the same cross-validated patients, as ``harness compare`` needs.

A sweep scores every patient once per repeat (training seed) and configuration with patient-level K-fold
cross-validation, the same folds for every configuration, so two configurations are compared *paired on patients*:
DeLong's test on the repeat-averaged out-of-fold scores, with a paired stratified bootstrap as an independent check
of its CI; Holm's adjustment over all comparisons shown; the minimum detectable difference; the "best set" rule and
a verdict in words. Pure numpy/scipy, no I/O. Rationale and the measured false-alarm rate: docs/metrics.md,
"Comparing configurations".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import ndtri  # the standard normal quantile; scipy.stats.norm.ppf is ~100x slower

from .classification import NAN, ConfidenceInterval, _auc_from_groups, binary_labels
from .delong import delong_covariance, delong_test

__all__ = [
    "PairedComparison",
    "best_set",
    "compare_auc",
    "format_p",
    "holm",
    "minimum_detectable_difference",
    "verdict",
]


@dataclass(frozen=True)
class PairedComparison:
    """Configuration a against configuration b on the same patients; ``diff`` = AUC_a - AUC_b (> 0: a is better).

    The inferential numbers (``diff``, ``ci_*``, ``z``, ``p_value``, ``se``, ``mdd``) are those of the
    repeat-averaged scores; the per-repeat AUCs (seed variance) and the bootstrap CI are descriptive checks.
    """

    auc_a: float  # AUC of the repeat-averaged scores of a
    auc_b: float
    diff: float  # auc_a - auc_b
    ci_low: float  # DeLong (Wald) CI of diff at level 1 - alpha: diff -+ z_(1-alpha/2) * se, clipped to [-1, 1]
    ci_high: float
    z: float  # diff / se; 0 when se == 0 and diff == 0
    p_value: float  # DeLong, two-sided, not adjusted for multiplicity (see `holm`)
    se: float  # DeLong SE of diff
    n_patients: int
    n_positive: int
    n_repeats: int
    auc_a_repeats: tuple[float, ...]  # AUC of each repeat of a alone
    auc_b_repeats: tuple[float, ...]
    auc_a_repeats_mean: float
    auc_a_repeats_sd: float  # SD over repeats (ddof 1): seed variance; NaN with one repeat
    auc_b_repeats_mean: float
    auc_b_repeats_sd: float
    boot_ci_low: float  # paired stratified percentile bootstrap CI of diff; NaN when n_boot == 0
    boot_ci_high: float
    mdd: float  # minimum detectable difference at alpha, power 0.8 (`minimum_detectable_difference`)
    alpha: float
    n_boot: int
    method: str  # one line saying how the numbers were computed
    note: str = ""  # set when the DeLong variance is zero: the CI has zero width, or no p-value exists

    @property
    def ci(self) -> ConfidenceInterval:
        """The DeLong CI of ``diff``."""
        return ConfidenceInterval(self.ci_low, self.ci_high)

    @property
    def boot_ci(self) -> ConfidenceInterval:
        """The paired bootstrap CI of ``diff``."""
        return ConfidenceInterval(self.boot_ci_low, self.boot_ci_high)


def _as_repeats(scores: Any, name: str, n_patients: int) -> np.ndarray:
    """Scores as a (repeats, patients) float array; ValueError naming ``name`` and what is wrong."""
    if hasattr(scores, "detach"):  # torch.Tensor, without importing torch here
        scores = scores.detach().cpu().numpy()
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1:
        s = s[None, :]
    if s.ndim != 2 or s.shape[0] == 0:
        raise ValueError(f"{name} must have shape (patients,) or (repeats, patients) with repeats >= 1, got {s.shape}")
    if s.shape[1] != n_patients:
        raise ValueError(f"{name} has {s.shape[1]} patients per repeat but labels has {n_patients}")
    bad = ~np.isfinite(s)
    if bad.any():
        first = np.argwhere(bad)[0].tolist()
        raise ValueError(
            f"{name} has {int(bad.sum())} non-finite score(s) (NaN or inf), e.g. at (repeat, patient) {first}"
        )
    return s


def _check_alpha(alpha: float, name: str = "alpha") -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {alpha}")


def _paired_bootstrap(
    y: np.ndarray, a: np.ndarray, b: np.ndarray, n_boot: int, alpha: float, seed: int
) -> ConfidenceInterval:
    """Percentile CI of AUC_a - AUC_b, resampling positives and negatives separately with replacement.

    One index resample serves both configurations (the pairing) and, since ``a`` and ``b`` are already averaged
    over repeats per patient, all repeats of a drawn patient at once.
    """
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    batch = max(1, 1_000_000 // y.size)  # bounds memory: batch x patients floats per rank call
    diffs = []
    for start in range(0, n_boot, batch):
        k = min(batch, n_boot - start)
        pi, ni = rng.choice(pos, (k, pos.size)), rng.choice(neg, (k, neg.size))
        diffs.append(_auc_from_groups(a[pi], a[ni]) - _auc_from_groups(b[pi], b[ni]))
    low, high = np.quantile(np.concatenate(diffs), [alpha / 2, 1 - alpha / 2])
    return ConfidenceInterval(float(low), float(high))


def compare_auc(
    labels: Any, scores_a: Any, scores_b: Any, *, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05
) -> PairedComparison:
    """Compares two configurations' ROC AUCs on the same patients (paired), with repeats of the training.

    Each configuration's score of a patient is its out-of-fold score averaged over repeats; the AUC difference of
    those scores is tested with DeLong's test (`harness.metrics.delong.delong_test`), and its CI is the Wald CI
    ``diff -+ z_(1-alpha/2) * se`` with DeLong's SE. Descriptive extras: each repeat's AUC (mean and SD over repeats,
    the seed variance), a paired bootstrap CI over patients stratified by class (the same resample for both
    configurations and all repeats; the independent check of the DeLong CI) and the minimum detectable difference.

    Invalid input raises (the caller decides whether to show a gap): there is no NaN-result mode. A DeLong SE of
    zero (identical scores, or both configurations separating the classes perfectly) is not an error: diff 0 gives
    p = 1 and a zero-width CI, a nonzero diff (e.g. one perfect, the other constant) gives p NaN; ``note`` says
    which. Nothing is divided by zero.

    Args:
        labels: 0/1 per patient (1 = node-positive).
        scores_a: configuration a's scores, shape (patients,) or (repeats, patients).
        scores_b: configuration b's scores, the same shape, the same patients in the same order.
        n_boot: bootstrap resamples; 0 skips the bootstrap (its CI is then NaN).
        seed: seed of the bootstrap's generator.
        alpha: 1 - confidence level of both CIs, and the level of the minimum detectable difference.

    Returns:
        PairedComparison, ``diff`` = AUC_a - AUC_b.

    Raises:
        ValueError: labels not 0/1 or not 1-D; scores not of shape (patients,) or (repeats, patients), of another
            shape than each other or another number of patients than the labels; a NaN or inf score; fewer than two
            patients of a class; ``alpha`` outside (0, 1); a negative ``n_boot``.
    """
    _check_alpha(alpha)
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    y = binary_labels(labels)
    a, b = _as_repeats(scores_a, "scores_a", y.size), _as_repeats(scores_b, "scores_b", y.size)
    if a.shape != b.shape:
        raise ValueError(f"scores_a and scores_b differ in shape (repeats, patients): {a.shape} vs {b.shape}")
    n_pos = int(y.sum())
    if n_pos < 2 or y.size - n_pos < 2:
        # DeLong's variance needs two patients of each class (sample covariances of the placement values).
        raise ValueError(f"need at least 2 patients of each class, got {n_pos} positive and {y.size - n_pos} negative")

    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    test = delong_test(y, mean_a, mean_b)
    diff = test.auc_a - test.auc_b
    note = ""
    if test.se == 0.0:  # delong_test's zero-variance branch; z and p are set (0, 1) or NaN there, nothing divided
        if math.isnan(test.p_value):
            note = (
                "DeLong's variance is zero but the AUCs differ (e.g. one configuration separates the classes "
                "perfectly and the other's scores are constant): no p-value; the CI has zero width"
            )
        else:
            note = "DeLong's variance is zero (identical scores, or both perfect): p = 1 and the CI has zero width"
    half = float(ndtri(1 - alpha / 2)) * test.se
    low, high = max(-1.0, diff - half), min(1.0, diff + half)

    # Per-repeat AUCs: seed variance, descriptive only (one delong_covariance call scores all repeats at once).
    reps_a, reps_b = np.split(delong_covariance(y, np.concatenate([a, b]))[0], 2)
    sd_a, sd_b = (float(np.std(r, ddof=1)) if r.size > 1 else NAN for r in (reps_a, reps_b))

    boot = _paired_bootstrap(y, mean_a, mean_b, n_boot, alpha, seed) if n_boot else ConfidenceInterval(NAN, NAN)
    level = f"{100 * (1 - alpha):g}%"
    method = (
        f"DeLong's test on out-of-fold scores averaged over {a.shape[0]} repeat(s), paired on {y.size} patients "
        f"({n_pos} positive); {level} CI = diff -+ z * SE (DeLong)"
        + (f"; check: paired class-stratified percentile bootstrap, {n_boot} resamples, seed {seed}" if n_boot else "")
    )
    return PairedComparison(
        auc_a=test.auc_a,
        auc_b=test.auc_b,
        diff=diff,
        ci_low=low,
        ci_high=high,
        z=test.z,
        p_value=test.p_value,
        se=test.se,
        n_patients=int(y.size),
        n_positive=n_pos,
        n_repeats=int(a.shape[0]),
        auc_a_repeats=tuple(float(v) for v in reps_a),
        auc_b_repeats=tuple(float(v) for v in reps_b),
        auc_a_repeats_mean=float(reps_a.mean()),
        auc_a_repeats_sd=sd_a,
        auc_b_repeats_mean=float(reps_b.mean()),
        auc_b_repeats_sd=sd_b,
        boot_ci_low=boot.low,
        boot_ci_high=boot.high,
        mdd=minimum_detectable_difference(test.se, alpha=alpha),
        alpha=alpha,
        n_boot=n_boot,
        method=method,
        note=note,
    )


def holm(p_values: Any) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979), in the input order.

    With the m finite p-values sorted, p_(1) <= ... <= p_(m): adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)).
    Rejecting where adjusted p <= alpha controls the family-wise error rate at alpha under any dependence between
    the tests. Tied p-values get the same adjusted value whatever their order. NaN entries (comparisons that could
    not be made) stay NaN and are not counted in m.

    Args:
        p_values: 1-D sequence of p-values in [0, 1] or NaN.

    Returns:
        float array of adjusted p-values, same shape.

    Raises:
        ValueError: not 1-D, or a value outside [0, 1] (inf included).
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p_values must be 1-D, got shape {p.shape}")
    valid = ~np.isnan(p)
    if ((p[valid] < 0) | (p[valid] > 1)).any():
        raise ValueError(
            f"p-values must lie in [0, 1] (or be NaN), got {p[valid][(p[valid] < 0) | (p[valid] > 1)][:5]}"
        )
    out = np.full(p.shape, NAN)
    finite = p[valid]
    m = finite.size
    order = np.argsort(finite, kind="stable")
    stepped = np.minimum(1.0, (m - np.arange(m)) * finite[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(stepped)  # the max over j <= i keeps the adjusted p monotone
    out[valid] = adjusted
    return out


def minimum_detectable_difference(se: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true AUC difference a two-sided level-``alpha`` test with this SE detects with ``power``.

    MDD = (z_(1-alpha/2) + z_power) * se, the normal approximation of DeLong's z (the probability of rejecting in
    the wrong direction is neglected). ``se`` is the *observed* DeLong SE of the difference on these patients and
    repeats, used as if it were the SE under the alternative: a planning number ("these patients could detect about
    0.15 AUC"), not a post-hoc power of the observed difference. With alpha 0.05 and power 0.8: 2.80 * se.

    Args:
        se: standard error of the AUC difference (e.g. ``PairedComparison.se``).
        alpha: two-sided significance level.
        power: probability of detecting a true difference of the MDD.

    Returns:
        The MDD in AUC units; NaN when ``se`` is NaN.

    Raises:
        ValueError: negative ``se``; ``alpha`` or ``power`` outside (0, 1).
    """
    _check_alpha(alpha)
    _check_alpha(power, "power")
    if math.isnan(se):
        return NAN
    if se < 0:
        raise ValueError(f"se must be >= 0, got {se}")
    return float((ndtri(1 - alpha / 2) + ndtri(power)) * se)


def best_set(
    names: Sequence[str], aucs: Sequence[float], adjusted_p_vs_top: Sequence[float], alpha: float = 0.05
) -> list[str]:
    """The configurations not significantly worse than the top one: the "best" of a sweep.

    The top is the configuration with the highest AUC (the first in the given order on a tie). Each other one was
    compared with the top (`compare_auc(labels, top, other)`) and its p-value Holm-adjusted (`holm`) over all
    comparisons shown; it is significantly worse when its adjusted p < ``alpha``. The others stay in the set,
    including those whose p is NaN (not shown to be worse). A configuration with a NaN AUC is never in the set.

    Args:
        names: configuration names, unique.
        aucs: AUC of each (``PairedComparison.auc_b`` when the top is a, i.e. of the repeat-averaged scores).
        adjusted_p_vs_top: Holm-adjusted p of each against the top; the top's own entry is ignored.
        alpha: family-wise significance level.

    Returns:
        The names in the set, the top first, then by decreasing AUC (ties in the given order).

    Raises:
        ValueError: lengths differ, names repeat, or no AUC is finite.
    """
    _check_alpha(alpha)
    if not len(names) == len(aucs) == len(adjusted_p_vs_top):
        raise ValueError(f"lengths differ: {len(names)} names, {len(aucs)} AUCs, {len(adjusted_p_vs_top)} p-values")
    if len(set(names)) != len(names):
        raise ValueError("names must be unique")
    auc = np.asarray(aucs, dtype=np.float64)
    if not np.isfinite(auc).any():
        raise ValueError("no configuration has a finite AUC")
    top = int(np.nanargmax(auc))  # the first maximum
    keep = [
        i
        for i in range(len(names))
        if i == top or (math.isfinite(auc[i]) and not float(adjusted_p_vs_top[i]) < alpha)  # NaN p: kept
    ]
    keep.sort(key=lambda i: (i != top, -auc[i], i))
    return [names[i] for i in keep]


def format_p(p: float) -> str:
    """A p-value for text: 'p < 0.001', 'p = 0.004' below 0.1, 'p = 0.62' above; 'p not computable' for NaN."""
    if math.isnan(p):
        return "p not computable"
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.3f}" if p < 0.1 else f"p = {p:.2f}"  # 3 decimals near alpha, so 0.049 never reads 0.05


def _num(x: float) -> str:
    """Two decimals, without a '-0.00' for a difference that rounds to zero."""
    text = f"{x:.2f}"
    return "0.00" if text == "-0.00" else text


def verdict(name_a: str, name_b: str, result: PairedComparison, adjusted_p: float, alpha: float = 0.05) -> str:
    """The comparison in one sentence, e.g. 'T2WI beats CET1WI by 0.21 AUC (95% CI 0.12 to 0.30), p = 0.001 (Holm)'.

    Significant (``adjusted_p < alpha``): the better configuration "beats" the other, with the difference and its
    DeLong CI oriented so that it is positive. Otherwise: "no difference detectable", with the difference a - b, its
    CI and the minimum detectable difference ("these patients could detect about 0.15 AUC"). The CI is the
    unadjusted DeLong CI at ``result.alpha``; only the p-value is Holm-adjusted.

    Args:
        name_a: label of configuration a (e.g. the factor level "T2WI").
        name_b: label of configuration b.
        result: ``compare_auc(labels, scores_a, scores_b)``.
        adjusted_p: the Holm-adjusted p-value of this comparison (`holm`).
        alpha: family-wise significance level.

    Returns:
        One sentence, no trailing period.
    """
    _check_alpha(alpha)
    level = f"{100 * (1 - result.alpha):g}% CI"
    p_text = f"{format_p(adjusted_p)} (Holm)"
    if math.isnan(adjusted_p):
        return f"{name_a} vs {name_b}: no test possible: diff {_num(result.diff)} AUC; {result.note or 'p is NaN'}"
    if adjusted_p < alpha and result.diff != 0:
        win, lose, d, lo, hi = (
            (name_a, name_b, result.diff, result.ci_low, result.ci_high)
            if result.diff > 0
            else (name_b, name_a, -result.diff, -result.ci_high, -result.ci_low)
        )
        return f"{win} beats {lose} by {_num(d)} AUC ({level} {_num(lo)} to {_num(hi)}), {p_text}"
    text = (
        f"no difference detectable between {name_a} and {name_b}: diff {_num(result.diff)} "
        f"({level} {_num(result.ci_low)} to {_num(result.ci_high)}), {p_text}"
    )
    if result.se == 0:
        return f"{text}; the CI has zero width (identical scores, or both perfect)"
    return f"{text}; these patients could detect about {_num(result.mdd)} AUC"
