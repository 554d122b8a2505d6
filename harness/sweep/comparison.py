"""``harness compare``: a sweep's trials side by side, read back from MLflow (the layout of `harness.tracking`).

The latest parent run of the sweep's experiment is compared: one table per task, trials sorted by sequence, augment
and backbone, with each trial's DeLong p-value against the best trial of its task (best = highest ``val_auc`` for
classifiers, highest ``val_map50`` for detectors), computed on the validation patients both trials scored.

A detector's patient score is its highest detection score over the patient's slices (what ``val_patient_auc`` is
computed from), and its truth the manifest's ``lnm`` column of ``predictions.csv``. Never ``n_targets > 0``: targets
may include benign nodes (``data.targets: all``) and an LNM+ patient may have no metastatic node boxed on the
detector's sequence. A detector run without the ``lnm`` column (written before it existed) gets '—'.

The runs come from `harness.tracking` (the only module that talks to MLflow). Tables, Markdown and HTML output:
`harness.sweep.report`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness import tracking
from harness.tracking import STUDY_TAG, SWEEP_TAG, TRIAL_TAG, ExperimentNotFoundError, RunRecord

DASH = "—"
BEST_METRIC = {"classification": "val_auc", "detection": "val_map50"}
GROUP_KEYS = ("sequence", "augment", "backbone")

__all__ = ["Comparison", "ExperimentNotFoundError", "Trial", "load_comparison"]


@dataclass
class Trial:
    """One child run: its identity, params, final metrics and (classifiers) validation predictions."""

    run_id: str
    name: str
    status: str
    task: str
    key: str | None = None
    study: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    val_predictions: pd.DataFrame | None = None  # columns patient, dl_score, lnm (one row per val patient)
    p_value: float = math.nan  # DeLong against the best trial of the task; NaN when not computable
    is_best: bool = False

    def metric(self, name: str) -> float | None:
        """A metric's value, None when missing or not finite."""
        value = self.metrics.get(name)
        return value if value is not None and math.isfinite(value) else None

    def group(self) -> tuple[str, str, str]:
        """(sequence, augment, backbone); '—' where a param is missing."""
        return tuple(self.params.get(k) or DASH for k in GROUP_KEYS)  # type: ignore[return-value]


@dataclass
class Comparison:
    """The trials of one sweep execution (a parent run) of one experiment."""

    tracking_uri: str
    experiment: str
    sweep: str
    parent_run_id: str
    trials: list[Trial]

    def tasks(self) -> dict[str, list[Trial]]:
        """Trials per task (classification first), sorted by sequence, augment, backbone and run name."""
        order = {"classification": 0, "detection": 1}
        by_task: dict[str, list[Trial]] = {}
        for trial in sorted(self.trials, key=lambda t: (order.get(t.task, 2), t.task, t.group(), t.name)):
            by_task.setdefault(trial.task, []).append(trial)
        return by_task

    def best(self, task: str) -> Trial | None:
        """The best trial of ``task`` (see `pick_best`)."""
        return next((t for t in self.trials if t.task == task and t.is_best), None)


def load_comparison(tracking_uri: str, experiment: str | None) -> Comparison:
    """Read the latest sweep execution of ``experiment`` from MLflow and compute the DeLong p-values.

    Args:
        tracking_uri: MLflow tracking URI (e.g. ``sqlite:///.../mlflow.db``).
        experiment: experiment (= sweep) name; None picks the most recently created experiment that holds a sweep
            parent run (``benchmarks`` excluded).

    Returns:
        The `Comparison` of the children of the latest parent run.

    Raises:
        ExperimentNotFoundError: no such experiment, or it holds no sweep parent run (the message lists the
            experiments the store knows).
    """
    runs = tracking.latest_sweep_runs(tracking_uri, experiment)
    trials = [_trial(tracking_uri, run) for run in runs.children]
    _fill_unknown_tasks(trials)
    for task in {t.task for t in trials}:
        _compare_to_best(trials, task)
    sweep = runs.parent.tags.get(SWEEP_TAG, runs.experiment)
    return Comparison(tracking_uri, runs.experiment, sweep, runs.parent.run_id, trials)


def _trial(uri: str, run: RunRecord) -> Trial:
    task = run.params.get("task") or _task_from_metrics(run.metrics)
    trial = Trial(
        run_id=run.run_id,
        name=run.name,
        status=run.status,
        task=task,
        key=run.tags.get(TRIAL_TAG),
        study=run.tags.get(STUDY_TAG),
        params=run.params,
        metrics=run.metrics,
    )
    if task in ("classification", "detection"):
        trial.val_predictions = tracking.read_artifact(uri, run.run_id, "predictions.csv", _read_predictions)
    return trial


def _task_from_metrics(metrics: dict[str, float]) -> str:
    if "val_map50" in metrics:
        return "detection"
    return "classification" if "val_auc" in metrics else "unknown"


def _fill_unknown_tasks(trials: list[Trial]) -> None:
    """A run that failed before logging anything takes the task of its study's other trials."""
    by_study = {t.study: t.task for t in trials if t.task != "unknown" and t.study}
    for trial in trials:
        if trial.task == "unknown" and trial.study in by_study:
            trial.task = by_study[trial.study]


def _read_predictions(path: Path) -> pd.DataFrame | None:
    """The validation patients of a run's ``predictions.csv``: columns patient, dl_score, lnm (None when unreadable
    or without patient truth). A detector's per-slice rows become one row per patient with its highest slice
    score."""
    try:
        frame = pd.read_csv(path, dtype={"patient": str, "split": str})
    except (OSError, ValueError):
        return None
    if {"split", "patient", "max_score", "lnm"} <= set(frame.columns):  # a detector: slices -> patients
        frame = frame.rename(columns={"max_score": "dl_score"})
        frame["dl_score"] = pd.to_numeric(frame["dl_score"], errors="coerce")
        frame = frame.groupby(["split", "patient"], as_index=False).agg(
            dl_score=("dl_score", "max"), lnm=("lnm", "first")
        )
    if not {"split", "patient", "dl_score", "lnm"} <= set(frame.columns):
        return None
    val = frame.loc[frame["split"] == "val", ["patient", "dl_score", "lnm"]].copy()
    for column in ("dl_score", "lnm"):  # a malformed value drops its row instead of failing the whole comparison
        val[column] = pd.to_numeric(val[column], errors="coerce")
    val = val[val["lnm"].isin([0, 1]) & val["dl_score"].map(math.isfinite)].dropna()
    return val.drop_duplicates("patient").reset_index(drop=True)


def pick_best(trials: Iterable[Trial], task: str) -> Trial | None:
    """The trial with the highest best-metric of ``task``; on a tie a FINISHED trial wins, then the first by name."""
    metric = BEST_METRIC.get(task)
    scored = [t for t in trials if t.task == task and metric and t.metric(metric) is not None]
    if not scored:
        return None
    return max(sorted(scored, key=lambda t: t.name), key=lambda t: (t.metric(metric), t.status == "FINISHED"))


def _compare_to_best(trials: list[Trial], task: str) -> None:
    best = pick_best(trials, task)
    if best is None:
        return
    best.is_best = True
    for trial in trials:
        if trial.task == task and trial is not best:
            trial.p_value = delong_p(trial.val_predictions, best.val_predictions)


def shared_patients(a: pd.DataFrame, b: pd.DataFrame) -> tuple[list[int], list[float], list[float]] | None:
    """(labels, scores of a, scores of b) on the validation patients both scored, sorted by patient.

    None when a patient's truth differs between the two files: they were not scored on the same cohort.
    """
    merged = a.merge(b, on="patient", suffixes=("_a", "_b")).sort_values("patient")
    if (merged["lnm_a"].astype(int) != merged["lnm_b"].astype(int)).any():
        return None
    return merged["lnm_a"].astype(int).tolist(), merged["dl_score_a"].tolist(), merged["dl_score_b"].tolist()


def delong_p(a: pd.DataFrame | None, b: pd.DataFrame | None) -> float:
    """DeLong's two-sided p between two classifiers' validation predictions on their shared patients (NaN if
    either is missing, they share no patients, their truths disagree or a class has fewer than two patients)."""
    from harness.metrics.delong import delong_test

    if a is None or b is None:
        return math.nan
    shared = shared_patients(a, b)
    if shared is None or not shared[0]:
        return math.nan
    try:
        return float(delong_test(*shared).p_value)
    except ValueError:  # e.g. scores of another length; a comparison with a gap beats no comparison
        return math.nan
