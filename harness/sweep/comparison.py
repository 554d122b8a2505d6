"""``harness compare``: a sweep's configurations side by side, read back from MLflow (through `harness.tracking`, the
only module that talks to MLflow).

A configuration is one grid point of a study; its trials are its folds x repeats. Every patient outside the test set
is validated by exactly one fold, so the validation rows of a configuration's trials pool into one out-of-fold (OOF)
score per patient and repeat; averaged over repeats they give the configuration's patient scores. All
configurations of a study share the folds (`harness.sweep.plan`), so they score the same patients and comparisons
between them are paired on patients (`harness.sweep.factors`).

A detector's patient score is its highest detection score over the patient's slices (what ``val_patient_auc`` is
computed from), and its truth the manifest's ``lnm`` column of ``predictions.csv``, never ``n_targets > 0``: targets
may include benign nodes and an LNM+ patient may have no metastatic node boxed on the detector's sequence. A
detector configuration also carries its pooled out-of-fold detections, FROC and precision-recall curve
(`harness.sweep.detections`).

Runs logged before configurations existed (one run per trial, one split) read as configurations of one trial.
Tables, Markdown and HTML: `harness.sweep.report`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from harness import tracking
from harness.metrics.classification import bootstrap_auc_ci, roc_auc
from harness.tracking import (
    CONFIGURATION_TAG,
    KIND_TAG,
    POINT_TAG,
    STUDY_TAG,
    SWEEP_TAG,
    TRIAL_TAG,
    ExperimentNotFoundError,
    RunRecord,
)

from .detections import PooledDetections, pool_detections

DASH = "—"
TASK_ORDER = {"classification": 0, "detection": 1}

__all__ = ["DASH", "Comparison", "Configuration", "ExperimentNotFoundError", "Trial", "load_comparison"]


def finite_metric(metrics: dict[str, float], name: str) -> float | None:
    """``metrics[name]``, None when missing or not finite."""
    value = metrics.get(name)
    return value if value is not None and math.isfinite(value) else None


@dataclass
class Trial:
    """One trial run: its fold and repeat, final metrics and patient-level predictions (val and test rows)."""

    run_id: str
    name: str
    status: str
    task: str
    key: str | None = None
    fold: int | None = None
    repeat: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    predictions: pd.DataFrame | None = None  # columns split, patient, score, lnm: one row per patient and split

    def metric(self, name: str) -> float | None:
        """A metric's value, None when missing or not finite."""
        return finite_metric(self.metrics, name)


@dataclass
class Configuration:
    """A grid point of a study and its trials, with the pooled out-of-fold scores and the aggregate metrics."""

    key: str
    name: str
    study: str
    task: str
    point: dict[str, str]
    params: dict[str, str]
    run_id: str | None
    trials: list[Trial]
    labels: pd.Series | None = None  # patient -> lnm, the OOF patients (sorted)
    oof: pd.DataFrame | None = None  # patients x repeats: each patient's out-of-fold score per repeat
    test: pd.Series | None = None  # patient -> test score averaged over folds and repeats
    test_labels: pd.Series | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # why it is left out of paired tests, or caveats
    detections: PooledDetections | None = None  # a detector's pooled OOF detections, FROC and PR curve

    @property
    def complete(self) -> bool:
        """Every trial finished and every patient has an OOF score in every repeat: fit for paired tests."""
        return self.oof is not None and not any(p.startswith("incomplete") for p in self.problems)

    @property
    def scores(self) -> pd.Series | None:
        """Patient -> OOF score averaged over repeats."""
        return None if self.oof is None else self.oof.mean(axis=1)

    def metric(self, name: str) -> float | None:
        """An aggregate's value, None when missing or not finite."""
        return finite_metric(self.metrics, name)


@dataclass
class Comparison:
    """The configurations of one sweep execution (a parent run) of one experiment."""

    tracking_uri: str
    experiment: str
    sweep: str
    parent_run_id: str
    configurations: list[Configuration]
    n_boot: int = 1000

    def studies(self) -> dict[str, list[Configuration]]:
        """Configurations per study (classifier studies first), in plan order."""
        ordered = sorted(self.configurations, key=lambda c: (TASK_ORDER.get(c.task, 2), c.study, c.key))
        groups: dict[str, list[Configuration]] = {}
        for configuration in ordered:
            groups.setdefault(configuration.study, []).append(configuration)
        return groups


def load_comparison(tracking_uri: str, experiment: str | None, *, n_boot: int = 1000) -> Comparison:
    """Read the latest execution of a sweep from MLflow and pool each configuration's out-of-fold predictions.

    Args:
        tracking_uri: MLflow tracking URI (e.g. ``sqlite:///.../mlflow.db``).
        experiment: experiment (= sweep) name; None picks the most recently created experiment that holds a sweep
            parent run (``benchmarks`` excluded).
        n_boot: bootstrap resamples of the AUC CIs.

    Raises:
        ExperimentNotFoundError: no database, no such experiment, or it holds no sweep parent run.
    """
    runs = tracking.latest_sweep_runs(tracking_uri, experiment)
    configuration_runs = {
        r.tags.get(CONFIGURATION_TAG): r for r in runs.children if r.tags.get(KIND_TAG) == "configuration"
    }
    trials_by_configuration: dict[str, list[tuple[RunRecord, Trial]]] = {}
    for run in runs.children:
        if run.tags.get(KIND_TAG) == "configuration":
            continue
        key = run.tags.get(CONFIGURATION_TAG) or run.tags.get(TRIAL_TAG) or run.run_id  # older runs: one per trial
        trials_by_configuration.setdefault(key, []).append((run, _trial(tracking_uri, run)))
    configurations = []
    for key in sorted(set(configuration_runs) | set(trials_by_configuration)):
        pairs = trials_by_configuration.get(key, [])
        configurations.append(_configuration(key, configuration_runs.get(key), pairs, n_boot))
    _fill_unknown_tasks(configurations)
    for configuration in configurations:
        if configuration.task == "detection":
            folds = int(configuration.params["folds"]) if configuration.params.get("folds") else None
            configuration.detections = pool_detections(tracking_uri, configuration.trials, folds)
    sweep = runs.parent.tags.get(SWEEP_TAG, runs.experiment)
    return Comparison(tracking_uri, runs.experiment, sweep, runs.parent.run_id, configurations, n_boot)


def _int_tag(value: str | None) -> int | None:
    return int(value) if value not in (None, "", "none") else None


def _trial(uri: str, run: RunRecord) -> Trial:
    task = run.params.get("task") or _task_from_metrics(run.metrics)
    trial = Trial(
        run_id=run.run_id,
        name=run.name,
        status=run.status,
        task=task,
        key=run.tags.get(TRIAL_TAG),
        fold=_int_tag(run.tags.get("harness.fold")),
        repeat=_int_tag(run.tags.get("harness.repeat")) or 0,
        metrics=run.metrics,
    )
    if task in ("classification", "detection"):
        trial.predictions = tracking.read_artifact(uri, run.run_id, "predictions.csv", read_patient_predictions)
    return trial


def _task_from_metrics(metrics: dict[str, float]) -> str:
    if "val_map50" in metrics:
        return "detection"
    return "classification" if "val_auc" in metrics else "unknown"


def read_patient_predictions(path: Path) -> pd.DataFrame | None:
    """A run's ``predictions.csv`` as one row per split and patient: columns split, patient, score, lnm (None when
    unreadable or without patient truth). A detector's per-slice rows become one row per patient with its highest
    slice score."""
    try:
        frame = pd.read_csv(path, dtype={"patient": str, "split": str})
    except (OSError, ValueError):
        return None
    if {"split", "patient", "max_score", "lnm"} <= set(frame.columns):  # a detector: slices -> patients
        frame["max_score"] = pd.to_numeric(frame["max_score"], errors="coerce")
        frame = frame.groupby(["split", "patient"], as_index=False).agg(
            dl_score=("max_score", "max"), lnm=("lnm", "first")
        )
    if not {"split", "patient", "dl_score", "lnm"} <= set(frame.columns):
        return None
    frame = frame.loc[frame["split"].isin(["val", "test"]), ["split", "patient", "dl_score", "lnm"]]
    frame = frame.rename(columns={"dl_score": "score"})
    for column in ("score", "lnm"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    bad = ~frame["lnm"].isin([0, 1]) | ~np.isfinite(frame["score"].to_numpy(dtype=float))
    if bad.any():  # said, not dropped silently: a malformed row makes the run's predictions unusable
        return None
    return frame.drop_duplicates(["split", "patient"]).reset_index(drop=True)


def _configuration(key: str, run: RunRecord | None, pairs: list[tuple[RunRecord, Trial]], n_boot: int) -> Configuration:
    first = pairs[0][0] if pairs else run
    tags = (run or first).tags
    point = json.loads(tags[POINT_TAG]) if POINT_TAG in tags else _legacy_point(first.params if first else {})
    trials = sorted((t for _, t in pairs), key=lambda t: (t.fold if t.fold is not None else -1, t.repeat))
    task = (run.params.get("task") if run else None) or next((t.task for t in trials), "unknown")
    configuration = Configuration(
        key=key,
        name=(run or first).name if (run or first) else key,
        study=tags.get(STUDY_TAG) or key.rsplit("-", 1)[0],
        task=task,
        point={k: str(v) for k, v in point.items()},
        params=dict((run or first).params) if (run or first) else {},
        run_id=run.run_id if run else None,
        trials=trials,
    )
    expected = _expected_trials(run, trials)
    _pool(configuration, expected, n_boot)
    return configuration


def _legacy_point(params: dict[str, str]) -> dict[str, str]:
    """Runs logged before configurations carried their point: the comparison axes from the params."""
    return {k: params[k] for k in ("sequence", "augment", "backbone") if k in params}


def _expected_trials(run: RunRecord | None, trials: list[Trial]) -> int:
    if run is not None and "folds" in run.params and "repeats" in run.params:
        return int(run.params["folds"]) * int(run.params["repeats"])
    return max(1, len(trials))


def _pool(configuration: Configuration, expected: int, n_boot: int) -> None:
    """The OOF score matrix (patients x repeats), the test scores, the aggregate metrics and the problems."""
    trials = configuration.trials
    usable = [t for t in trials if t.status == "FINISHED" and t.predictions is not None]
    missing = expected - len(usable)
    if missing:
        names = ", ".join(f"{t.name} ({t.status})" for t in trials if t not in usable) or "never started"
        configuration.problems.append(f"incomplete: {missing} of {expected} trials without predictions: {names}")
    if not usable:
        return
    val = pd.concat([t.predictions.assign(repeat=t.repeat)[lambda f: f["split"] == "val"] for t in usable])
    labels = val.groupby("patient")["lnm"].agg(["min", "max"])
    if (labels["min"] != labels["max"]).any():
        configuration.problems.append("incomplete: a patient's truth differs between trials")
        return
    oof = val.pivot_table(index="patient", columns="repeat", values="score", aggfunc="first").sort_index()
    configuration.labels = labels["min"].astype(int).loc[oof.index]
    if oof.isna().any().any():
        configuration.problems.append(
            f"incomplete: {int(oof.isna().any(axis=1).sum())} patients lack an OOF score in some repeat"
        )
        oof = oof.dropna()
        configuration.labels = configuration.labels.loc[oof.index]
    configuration.oof = oof
    test = pd.concat([t.predictions[t.predictions["split"] == "test"] for t in usable])
    if not test.empty:
        configuration.test = test.groupby("patient")["score"].mean().sort_index()
        configuration.test_labels = test.groupby("patient")["lnm"].first().astype(int).loc[configuration.test.index]
    for trial in usable:
        folds_labels = trial.predictions.loc[trial.predictions["split"] == "val", "lnm"]
        if folds_labels.nunique() < 2:
            configuration.problems.append(f"{trial.name}: its validation fold holds one class (no per-fold AUC)")
    configuration.metrics = aggregate_metrics(configuration, n_boot)


def aggregate_metrics(configuration: Configuration, n_boot: int = 1000) -> dict[str, float]:
    """A configuration's numbers: pooled OOF AUC with a patient-bootstrap CI, the AUC of each repeat (mean, SD), the
    test AUC with its CI, the patients behind them, and the mean over trials of the per-trial metrics."""
    metrics: dict[str, float] = {}
    y, scores = configuration.labels.to_numpy(), configuration.scores.to_numpy()
    metrics["oof_auc"] = roc_auc(y, scores)
    low, high = bootstrap_auc_ci(y, scores, n_boot=n_boot, seed=0)
    metrics.update(oof_auc_ci_low=low, oof_auc_ci_high=high)
    per_repeat = [roc_auc(y, configuration.oof[r].to_numpy()) for r in configuration.oof.columns]
    metrics["oof_auc_repeat_mean"] = float(np.mean(per_repeat))
    metrics["oof_auc_repeat_sd"] = float(np.std(per_repeat, ddof=1)) if len(per_repeat) > 1 else math.nan
    metrics.update(n_patients=float(y.size), n_positive=float(y.sum()), n_repeats=float(len(per_repeat)))
    if configuration.test is not None:
        ty, ts = configuration.test_labels.to_numpy(), configuration.test.to_numpy()
        metrics["test_auc"] = roc_auc(ty, ts)
        low, high = bootstrap_auc_ci(ty, ts, n_boot=n_boot, seed=0)
        metrics.update(
            test_auc_ci_low=low, test_auc_ci_high=high, n_test=float(ty.size), n_test_positive=float(ty.sum())
        )
    keys = ("val_map50", "val_map", "val_froc", "val_sensitivity", "val_specificity", "val_auc")
    for key in keys:
        values = [v for t in configuration.trials if (v := t.metric(key)) is not None]
        if values:
            metrics[f"{key}_mean"] = float(np.mean(values))
            metrics[f"{key}_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
    return metrics


def _fill_unknown_tasks(configurations: list[Configuration]) -> None:
    """A configuration whose runs failed before logging anything takes the task of its study's others."""
    by_study = {c.study: c.task for c in configurations if c.task != "unknown"}
    for configuration in configurations:
        if configuration.task == "unknown" and configuration.study in by_study:
            configuration.task = by_study[configuration.study]
