"""Paired comparison of configurations: DeLong CI against a paired bootstrap, false-alarm rate under the null, power,
repeats, Holm against closed testing by brute force, the MDD, degenerate input and the verdict text.

Measured numbers quoted in docs/metrics.md print with ``-s``:
``.venv/bin/python -m pytest -q tests/metrics/test_paired.py -k "null or power" -s``.
"""

import dataclasses
import itertools
import math
import warnings

import numpy as np
import pytest

from harness.metrics import (
    best_set,
    compare_auc,
    delong_test,
    format_p,
    holm,
    minimum_detectable_difference,
    roc_auc,
    verdict,
)

Z_975, Z_80 = 1.959963984540054, 0.8416212335729143  # standard normal quantiles, written out (not from scipy)


def cohorts(
    n_sims: int,
    n: int,
    repeats: int,
    seed: int,
    shift_a: float = 1.0,
    shift_b: float = 1.0,
    seed_noise: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n_sims`` cohorts of ``n`` patients (~40% positive), scored by two configurations over ``repeats`` seeds.

    score = shift * label + 0.8 * patient effect (shared by both configurations: what makes them correlated)
    + 0.6 * the configuration's own patient effect (the same in every repeat) + ``seed_noise`` * per-repeat noise.
    Equal shifts: the same distribution given the label (the null). Returns labels (n_sims, n) and scores
    (n_sims, repeats, n) of a and of b. Every cohort has at least two patients of each class.
    """
    rng = np.random.default_rng(seed)
    y = (rng.random((n_sims, n)) < 0.4).astype(np.int64)
    y[:, :2], y[:, 2:4] = 1, 0
    shared = rng.normal(size=(n_sims, 1, n))

    def scores(shift: float) -> np.ndarray:
        own = rng.normal(size=(n_sims, 1, n))
        return shift * y[:, None, :] + 0.8 * shared + 0.6 * own + seed_noise * rng.normal(size=(n_sims, repeats, n))

    return y, scores(shift_a), scores(shift_b)


# --- compare_auc ----------------------------------------------------------------------------------------------------


def test_point_estimate_is_delong_on_repeat_averaged_scores():
    y, a, b = cohorts(1, 90, repeats=4, seed=1, shift_a=1.3)
    y, a, b = y[0], a[0], b[0]
    r = compare_auc(y, a, b, n_boot=0)
    plain = delong_test(y, a.mean(axis=0), b.mean(axis=0))
    assert r.auc_a == pytest.approx(roc_auc(y, a.mean(axis=0)), abs=1e-12)
    assert (r.diff, r.p_value, r.se, r.z) == pytest.approx(
        (plain.auc_a - plain.auc_b, plain.p_value, plain.se, plain.z)
    )
    assert (r.ci_low, r.ci_high) == pytest.approx((r.diff - Z_975 * r.se, r.diff + Z_975 * r.se))
    per_repeat = [roc_auc(y, row) for row in a]
    np.testing.assert_allclose(r.auc_a_repeats, per_repeat, atol=1e-12)
    assert r.auc_a_repeats_mean == pytest.approx(np.mean(per_repeat))
    assert r.auc_a_repeats_sd == pytest.approx(np.std(per_repeat, ddof=1))
    assert (r.n_patients, r.n_positive, r.n_repeats) == (90, int(y.sum()), 4)
    assert math.isnan(r.boot_ci_low) and "bootstrap" not in r.method and r.note == ""
    # Swapping the configurations negates the difference and its CI; the test is symmetric.
    s = compare_auc(y, b, a, n_boot=0)
    assert (s.diff, s.ci_low, s.ci_high, s.p_value) == pytest.approx((-r.diff, -r.ci_high, -r.ci_low, r.p_value))


def test_one_repeat_accepts_1d_scores():
    y, a, b = cohorts(1, 50, repeats=1, seed=2)
    one = compare_auc(y[0], a[0, 0], b[0, 0], n_boot=0)
    assert one == compare_auc(y[0], a[0], b[0], n_boot=0)
    assert one.n_repeats == 1 and math.isnan(one.auc_a_repeats_sd)  # no seed variance from one seed


@pytest.mark.parametrize("seed", [100, 101, 102])
def test_delong_ci_agrees_with_paired_bootstrap_ci(seed):
    """n = 200, 3 repeats, AUCs ~0.76-0.81 against ~0.74-0.79: the endpoints of the two 95% CIs differ by < 0.004
    (measured over seeds 100-104, CIs 0.10-0.13 wide); the tolerance, 0.015, is ~12% of the width."""
    y, a, b = cohorts(1, 200, repeats=3, seed=seed, shift_a=1.2)
    r = compare_auc(y[0], a[0], b[0], n_boot=2000, seed=seed)
    np.testing.assert_allclose([r.boot_ci_low, r.boot_ci_high], [r.ci_low, r.ci_high], atol=0.015)
    assert r.boot_ci_low < r.diff < r.boot_ci_high
    assert compare_auc(y[0], a[0], b[0], n_boot=2000, seed=seed).boot_ci == r.boot_ci  # reproducible


def test_null_false_alarm_rate_is_nominal():
    """Under the null (same score distribution given the label, correlated through a shared patient effect,
    3 repeats), 1000 cohorts of 60 patients: DeLong rejects at alpha 0.05 in 4.6% of them (measured: 46/1000).
    The paired bootstrap CI, on the first 200 with 500 resamples, excludes 0 in 5.5% (11/200)."""
    y, a, b = cohorts(1000, 60, repeats=3, seed=1)
    p = np.array([compare_auc(y[i], a[i], b[i], n_boot=0).p_value for i in range(len(y))])
    rate = float(np.mean(p < 0.05))
    boot = [compare_auc(y[i], a[i], b[i], n_boot=500, seed=i).boot_ci for i in range(200)]
    boot_rate = float(np.mean([ci.low > 0 or ci.high < 0 for ci in boot]))
    print(
        f"\nnull, 60 patients x 3 repeats: DeLong p < 0.05 in {int(np.sum(p < 0.05))}/1000 = {rate:.3f}; "
        f"paired bootstrap CI excludes 0 in {round(boot_rate * 200)}/200 = {boot_rate:.3f}"
    )
    assert 0.02 <= rate <= 0.09
    assert 0.01 <= boot_rate <= 0.10
    # The p-values are roughly uniform under the null, not only right at 0.05.
    assert 0.07 <= np.mean(p < 0.1) <= 0.14 and 0.45 <= np.mean(p < 0.5) <= 0.55


def test_power_planted_difference_is_detected():
    """One configuration informative (shift 1, mean AUC 0.75), the other pure noise (AUC 0.50), 60 patients,
    3 repeats: p < 0.01 in 82.7% of 300 cohorts (measured: 248/300; p < 0.05 in 287/300); a is the better one
    whenever the difference is detected."""
    y, a, b = cohorts(300, 60, repeats=3, seed=2, shift_a=1.0, shift_b=0.0)
    results = [compare_auc(y[i], a[i], b[i], n_boot=0) for i in range(len(y))]
    p = np.array([r.p_value for r in results])
    power = float(np.mean(p < 0.01))
    print(f"\nplanted difference, 60 patients x 3 repeats: p < 0.01 in {int(np.sum(p < 0.01))}/300 = {power:.3f}")
    assert power >= 0.75
    assert all(r.diff > 0 for r in results if r.p_value < 0.01)


def test_averaging_repeats_narrows_the_ci():
    """Large seed noise (SD 1.5 against a class shift of 1): averaging 5 repeats gives a CI ~0.76 times as wide as
    one repeat alone (median over 30 cohorts of 80 patients, measured), narrower in every cohort."""
    y, a, b = cohorts(30, 80, repeats=5, seed=3, seed_noise=1.5)
    ratios = []
    for i in range(len(y)):
        five = compare_auc(y[i], a[i], b[i], n_boot=0)
        one = compare_auc(y[i], a[i, 0], b[i, 0], n_boot=0)
        ratios.append((five.ci_high - five.ci_low) / (one.ci_high - one.ci_low))
        assert five.auc_a_repeats_sd > 0
    assert max(ratios) < 1 and np.median(ratios) < 0.85


# --- minimum detectable difference ----------------------------------------------------------------------------------


def test_mdd_equals_the_formula():
    assert minimum_detectable_difference(0.05) == pytest.approx((Z_975 + Z_80) * 0.05, rel=1e-12)
    assert minimum_detectable_difference(0.05, alpha=0.01, power=0.9) == pytest.approx(
        (2.5758293035489004 + 1.2815515655446004) * 0.05, rel=1e-12
    )
    assert minimum_detectable_difference(0.0) == 0.0 and math.isnan(minimum_detectable_difference(math.nan))
    y, a, b = cohorts(1, 70, repeats=2, seed=4)
    r = compare_auc(y[0], a[0], b[0], n_boot=0, alpha=0.1)
    assert r.mdd == pytest.approx(minimum_detectable_difference(r.se, alpha=0.1))
    with pytest.raises(ValueError, match="se must be >= 0"):
        minimum_detectable_difference(-0.1)
    with pytest.raises(ValueError, match="power"):
        minimum_detectable_difference(0.1, power=1.0)


def test_mdd_shrinks_like_one_over_sqrt_n():
    """Mean MDD over 8 cohorts: 0.141, 0.066, 0.032 at 100, 400, 1600 patients (measured): halves per 4x patients."""
    mdds = []
    for n in (100, 400, 1600):
        y, a, b = cohorts(8, n, repeats=3, seed=n)
        mdds.append(np.mean([compare_auc(y[i], a[i], b[i], n_boot=0).mdd for i in range(len(y))]))
    ratios = np.array(mdds[1:]) / np.array(mdds[:-1])
    np.testing.assert_allclose(ratios, 0.5, atol=0.08)


# --- degenerate input -----------------------------------------------------------------------------------------------


def test_degenerate_input_raises_naming_the_problem():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.linspace(0, 1, 6)
    with pytest.raises(ValueError, match=r"differ in shape.*\(2, 6\) vs \(3, 6\)"):
        compare_auc(y, np.tile(s, (2, 1)), np.tile(s, (3, 1)))
    with pytest.raises(ValueError, match="scores_b has 5 patients per repeat but labels has 6"):
        compare_auc(y, s, s[:5])
    with pytest.raises(ValueError, match=r"scores_a has 1 non-finite score.*\[0, 2\]"):
        compare_auc(y, np.where(np.arange(6) == 2, np.nan, s), s)
    with pytest.raises(ValueError, match="non-finite"):
        compare_auc(y, s, np.where(np.arange(6) == 0, np.inf, s))
    with pytest.raises(ValueError, match="at least 2 patients of each class, got 1 positive and 5 negative"):
        compare_auc([0, 0, 0, 0, 0, 1], s, s[::-1])
    with pytest.raises(ValueError, match="0 or 1"):
        compare_auc([0, 0, 2, 1, 1, 1], s, s)
    with pytest.raises(ValueError, match=r"\(patients,\) or \(repeats, patients\)"):
        compare_auc(y, s.reshape(1, 1, 6), s)
    with pytest.raises(ValueError, match="alpha"):
        compare_auc(y, s, s, alpha=0)
    with pytest.raises(ValueError, match="n_boot"):
        compare_auc(y, s, s, n_boot=-1)


@pytest.mark.parametrize(
    "scores",
    [
        np.array([[0.1, 0.4, 0.35, 0.8, 0.3, 0.9], [0.2, 0.5, 0.3, 0.7, 0.4, 0.6]]),  # identical configurations
        np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]),  # both perfect (different scores, same AUC 1)
    ],
)
def test_zero_variance_gives_p_one_and_a_zero_width_ci(scores):
    y = np.array([0, 0, 0, 1, 1, 1]) if scores.ndim == 1 else np.array([0, 1, 0, 1, 0, 1])
    other = scores if scores.ndim == 2 else scores**2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by zero, no invalid-value warning
        r = compare_auc(y, scores, other, n_boot=200)
    assert (r.diff, r.se, r.z, r.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert r.ci_low == r.ci_high == 0.0 and r.boot_ci_low == r.boot_ci_high == 0.0 and r.mdd == 0.0
    assert "zero width" in r.note and "p = 1" in r.note
    assert verdict("A", "B", r, holm([r.p_value])[0]).endswith(
        "the CI has zero width (identical scores, or both perfect)"
    )


def test_zero_variance_with_a_difference_has_no_p_value():
    y = np.array([0, 0, 0, 1, 1, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = compare_auc(y, [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], np.full(6, 0.5), n_boot=0)
    assert r.diff == 0.5 and r.se == 0.0 and math.isnan(r.p_value) and "no p-value" in r.note
    assert verdict("A", "B", r, math.nan).startswith("A vs B: no test possible: diff 0.50 AUC; DeLong's variance")


# --- Holm -----------------------------------------------------------------------------------------------------------


def closed_testing_rejections(p: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """(alphas, m) decisions of the closed testing procedure with Bonferroni local tests, by enumeration.

    H_i is rejected at alpha when every intersection hypothesis H_S with i in S is rejected by Bonferroni's test:
    |S| * min_{j in S} p_j <= alpha. NaN p-values take no part (their decision is False). Independent of `holm`.
    """
    idx = np.flatnonzero(~np.isnan(p))
    out = np.zeros((alphas.size, p.size), dtype=bool)
    subsets = [s for k in range(1, idx.size + 1) for s in itertools.combinations(idx.tolist(), k)]
    for col in idx:
        containing = [s for s in subsets if col in s]
        local = np.array([len(s) * min(p[j] for j in s) for s in containing])  # Bonferroni on H_S
        out[:, col] = (local[None, :] <= alphas[:, None]).all(axis=1)
    return out


def test_holm_matches_closed_testing_on_random_p_values():
    rng = np.random.default_rng(7)
    alphas = np.linspace(0.0005, 0.5, 400)
    for trial in range(150):
        m = int(rng.integers(1, 8))
        p = rng.beta(0.4, 1.0, m)  # many small p-values, as in a sweep with real effects
        if trial % 3 == 0:
            p = np.round(p, 2)  # ties
        if trial % 5 == 0 and m > 1:
            p[rng.integers(m)] = np.nan
        adjusted = holm(p)
        decisions = adjusted[None, :] <= alphas[:, None]
        np.testing.assert_array_equal(decisions, closed_testing_rejections(p, alphas))
        assert np.array_equal(np.isnan(adjusted), np.isnan(p))


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        # sorted 0.005, 0.01, 0.03, 0.04 -> 4x, 3x, 2x, 1x = 0.02, 0.03, 0.06, 0.04 -> running max 0.06 for the last
        ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02]),
        ([0.01, math.nan, 0.04], [0.02, math.nan, 0.04]),  # NaN not counted: m = 2
        ([0.02, 0.02, 0.5], [0.06, 0.06, 0.5]),  # ties: 3 x 0.02, then max(0.06, 2 x 0.02)
        ([0.3, 0.6, 0.9], [0.9, 1.0, 1.0]),  # capped at 1, and monotone
        ([0.04], [0.04]),
        ([], []),
        ([math.nan, math.nan], [math.nan, math.nan]),
    ],
)
def test_holm_hand_examples(p, expected):
    np.testing.assert_allclose(holm(p), expected, rtol=1e-12)


def test_holm_rejects_invalid_p_values():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.1, 1.2])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([-0.01])
    with pytest.raises(ValueError, match="1-D"):
        holm([[0.1, 0.2]])


# --- best set and verdict -------------------------------------------------------------------------------------------


def test_best_set_keeps_those_not_significantly_worse_than_the_top():
    names = ["T2WI", "ADC", "CET1WI", "DWI", "broken"]
    aucs = [0.80, 0.84, 0.62, 0.79, math.nan]
    adjusted = [0.40, math.nan, 0.003, math.nan, 0.9]  # vs the top (ADC); DWI's comparison could not be made
    assert best_set(names, aucs, adjusted) == ["ADC", "T2WI", "DWI"]
    assert best_set(names, aucs, adjusted, alpha=0.001) == ["ADC", "T2WI", "DWI", "CET1WI"]
    assert best_set(["a", "b"], [0.7, 0.7], [math.nan, 0.01]) == ["a"]  # tie for the top: the first
    with pytest.raises(ValueError, match="lengths differ"):
        best_set(["a"], [0.7, 0.6], [0.1])
    with pytest.raises(ValueError, match="unique"):
        best_set(["a", "a"], [0.7, 0.6], [0.1, 0.1])


def test_format_p():
    assert [format_p(p) for p in (0.0004, 0.001, 0.0493, 0.62, 1.0)] == [
        "p < 0.001",
        "p = 0.001",
        "p = 0.049",
        "p = 0.62",
        "p = 1.00",
    ]
    assert format_p(math.nan) == "p not computable"


def test_verdict_text():
    y, a, b = cohorts(1, 60, repeats=2, seed=5)
    r = compare_auc(y[0], a[0], b[0], n_boot=0)
    win = dataclasses.replace(r, diff=0.21, ci_low=0.12, ci_high=0.30)
    assert (
        verdict("T2WI", "CET1WI", win, 0.001) == "T2WI beats CET1WI by 0.21 AUC (95% CI 0.12 to 0.30), p = 0.001 (Holm)"
    )
    lose = dataclasses.replace(r, diff=-0.21, ci_low=-0.30, ci_high=-0.12)
    assert verdict("CET1WI", "T2WI", lose, 0.0002) == (
        "T2WI beats CET1WI by 0.21 AUC (95% CI 0.12 to 0.30), p < 0.001 (Holm)"
    )
    none = dataclasses.replace(r, diff=0.02, ci_low=-0.05, ci_high=0.09, mdd=0.151)
    assert verdict("T2WI", "ADC", none, 0.62) == (
        "no difference detectable between T2WI and ADC: diff 0.02 (95% CI -0.05 to 0.09), p = 0.62 (Holm); "
        "these patients could detect about 0.15 AUC"
    )
    # Significant before adjustment but not after: no claim.
    assert verdict("T2WI", "ADC", win, 0.08).startswith("no difference detectable")
    assert "90% CI" in verdict("A", "B", compare_auc(y[0], a[0], b[0], n_boot=0, alpha=0.1), 0.5)
