"""What a sweep's comparison concludes: per factor, the paired difference between its levels, and the best set.

For each study, a factor is a grid key whose value varies between its configurations (sequence, augment, backbone,
``train.stage2_lr``...). Two levels a and b of a factor are compared on the configurations that differ in that
factor only (matched on every other factor); with several such pairs (e.g. sequence a vs b under each augmentation
set) the difference is the mean of the pairs' AUC differences, a contrast of correlated AUCs whose variance comes
from DeLong's covariance matrix of all the configurations' AUCs on the same patients (DeLong et al. 1988 test such
contrasts). With one pair it is `harness.metrics.paired.compare_auc` (DeLong on repeat-averaged out-of-fold scores,
with a paired bootstrap check). All the p-values shown are Holm-adjusted together.

The best set of a study is the configurations not significantly worse than the top one (highest pooled OOF AUC):
each compared with the top by `compare_auc`, Holm over those comparisons. Configurations whose trials did not all
finish are named and left out of paired tests instead of comparing unequal patient sets. docs/metrics.md,
"Comparing configurations", defines every number.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats
from scipy.special import ndtri

from harness.metrics.delong import delong_covariance
from harness.metrics.paired import (
    PairedComparison,
    best_set,
    compare_auc,
    holm,
    minimum_detectable_difference,
    verdict,
)

from .comparison import Comparison, Configuration

ALPHA = 0.05


@dataclass
class FactorComparison:
    """Level a against level b of one factor of one study (``result.diff`` > 0: a is better)."""

    study: str
    factor: str
    level_a: str
    level_b: str
    pairs: int  # matched configuration pairs the difference averages over
    result: PairedComparison
    adjusted_p: float = math.nan
    text: str = ""

    @property
    def significant(self) -> bool:
        return self.adjusted_p < ALPHA and self.result.diff != 0


@dataclass
class StudyVerdict:
    """A study's conclusions: its factor comparisons, best set and what was left out."""

    study: str
    task: str
    top: str | None = None
    best: list[str] = field(default_factory=list)  # configuration names not significantly worse than the top
    versus_top: dict[str, tuple[PairedComparison, float]] = field(default_factory=dict)  # name -> (result, Holm p)
    comparisons: list[FactorComparison] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)  # configuration name -> why it is not in paired tests
    notes: list[str] = field(default_factory=list)
    n_patients: int = 0
    n_positive: int = 0
    labels: np.ndarray | None = field(default=None, repr=False)  # the patients of the paired tests
    scores: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # name -> (repeats, patients) OOF


def conclude(comparison: Comparison, alpha: float = ALPHA) -> list[StudyVerdict]:
    """Per study: factor comparisons (Holm over every comparison of every study shown) and the best set."""
    verdicts = [
        _study(name, configurations, comparison.n_boot) for name, configurations in comparison.studies().items()
    ]
    shown = [c for v in verdicts for c in v.comparisons]
    for item, adjusted in zip(shown, holm([c.result.p_value for c in shown]) if shown else [], strict=True):
        item.adjusted_p = float(adjusted)
        item.text = verdict(item.level_a, item.level_b, item.result, item.adjusted_p, alpha)
    for study in verdicts:
        _best_set(study, [c for c in comparison.studies()[study.study] if c.name not in study.excluded], alpha)
    return verdicts


def _study(name: str, configurations: list[Configuration], n_boot: int) -> StudyVerdict:
    study = StudyVerdict(name, configurations[0].task)
    usable = []
    for configuration in configurations:
        if not configuration.complete:
            study.excluded[configuration.name] = "; ".join(configuration.problems) or "no predictions"
        else:
            usable.append(configuration)
    for configuration in usable:
        study.notes += [f"{configuration.name}: {p}" for p in configuration.problems]
    if not usable:
        return study
    patients = sorted(set.intersection(*(set(c.oof.index) for c in usable)))
    if any(len(c.oof.index) != len(patients) for c in usable):
        study.notes.append(f"paired tests use the {len(patients)} patients every configuration scored")
    labels = usable[0].labels.loc[patients].to_numpy()
    study.n_patients, study.n_positive = len(patients), int(labels.sum())
    if min(study.n_positive, len(patients) - study.n_positive) < 2:
        study.notes.append("fewer than two patients of a class: no paired test")
        return study
    scores = {c.name: c.oof.loc[patients].to_numpy().T for c in usable}  # (repeats, patients)
    for factor, level_a, level_b, pairs in _level_pairs(usable):
        if len(pairs) == 1:
            a, b = pairs[0]
            result = compare_auc(labels, scores[a.name], scores[b.name], n_boot=n_boot)
        else:
            result = contrast_auc(labels, scores, pairs)
        study.comparisons.append(FactorComparison(name, factor, level_a, level_b, len(pairs), result))
    study.labels, study.scores = labels, scores  # kept for the best set
    return study


def _level_pairs(configurations: list[Configuration]):
    """(factor, level a, level b, [(config at a, config at b), ...] matched on every other factor)."""
    keys = sorted({k for c in configurations for k in c.point})
    factors = [k for k in keys if len({c.point.get(k) for c in configurations}) > 1]
    for factor in factors:
        levels = list(dict.fromkeys(c.point.get(factor) for c in configurations))
        for level_a, level_b in itertools.combinations(levels, 2):
            rest = [k for k in keys if k != factor]
            at_b = {tuple(c.point.get(k) for k in rest): c for c in configurations if c.point.get(factor) == level_b}
            pairs = [
                (c, at_b[other])
                for c in configurations
                if c.point.get(factor) == level_a and (other := tuple(c.point.get(k) for k in rest)) in at_b
            ]
            if pairs:
                yield factor, str(level_a), str(level_b), pairs


def contrast_auc(labels: np.ndarray, scores: dict[str, np.ndarray], pairs) -> PairedComparison:
    """The mean of the matched pairs' AUC differences, tested with DeLong's covariance of all their AUCs.

    Each configuration's patient score is its OOF score averaged over repeats. With weights w (+1/m on the a side,
    -1/m on the b side of m pairs), diff = w . AUC and SE = sqrt(w' S w), S being DeLong's covariance of the AUCs.
    """
    names = list(dict.fromkeys(c.name for pair in pairs for c in pair))
    matrix = np.stack([scores[n].mean(axis=0) for n in names])
    aucs, covariance = delong_covariance(labels, matrix)
    weights = np.zeros(len(names))
    for a, b in pairs:
        weights[names.index(a.name)] += 1 / len(pairs)
        weights[names.index(b.name)] -= 1 / len(pairs)
    diff = float(weights @ aucs)
    se = float(math.sqrt(max(0.0, weights @ covariance @ weights)))
    if se > 0:
        z = diff / se
        p = float(2 * stats.norm.sf(abs(z)))
        note = ""
    else:
        z, p = (0.0, 1.0) if diff == 0 else (math.nan, math.nan)
        note = "DeLong's variance of the contrast is zero: the CI has zero width"
    half = float(ndtri(1 - ALPHA / 2)) * se
    side_a = float(np.mean([aucs[names.index(a.name)] for a, _ in pairs]))
    side_b = float(np.mean([aucs[names.index(b.name)] for _, b in pairs]))
    return PairedComparison(
        auc_a=side_a,
        auc_b=side_b,
        diff=diff,
        ci_low=max(-1.0, diff - half),
        ci_high=min(1.0, diff + half),
        z=z,
        p_value=p,
        se=se,
        n_patients=int(labels.size),
        n_positive=int(labels.sum()),
        n_repeats=int(scores[names[0]].shape[0]),
        auc_a_repeats=(),
        auc_b_repeats=(),
        auc_a_repeats_mean=math.nan,
        auc_a_repeats_sd=math.nan,
        auc_b_repeats_mean=math.nan,
        auc_b_repeats_sd=math.nan,
        boot_ci_low=math.nan,
        boot_ci_high=math.nan,
        mdd=minimum_detectable_difference(se, alpha=ALPHA),
        alpha=ALPHA,
        n_boot=0,
        method=f"DeLong contrast: mean AUC difference over {len(pairs)} matched configuration pairs, paired on "
        f"{labels.size} patients, scores averaged over repeats",
        note=note,
    )


def _best_set(study: StudyVerdict, usable: list[Configuration], alpha: float) -> None:
    """The top configuration by pooled OOF AUC and those not significantly worse (Holm over these comparisons)."""
    if not usable:
        return
    aucs = [c.metric("oof_auc") if c.metric("oof_auc") is not None else math.nan for c in usable]
    if not np.isfinite(aucs).any():
        return
    top = usable[int(np.nanargmax(aucs))]
    study.top = top.name
    scores = study.scores
    if not scores:  # no paired test possible: the top alone is named, ties with it said by the report
        study.best = [top.name]
        return
    others = [c for c in usable if c is not top]
    results = [compare_auc(study.labels, scores[top.name], scores[c.name], n_boot=0) for c in others]
    adjusted = holm([r.p_value for r in results]) if results else []
    study.versus_top = {c.name: (r, float(p)) for c, r, p in zip(others, results, adjusted, strict=True)}
    p_vs_top = [math.nan if c is top else study.versus_top[c.name][1] for c in usable]
    study.best = best_set([c.name for c in usable], aucs, p_vs_top, alpha)
