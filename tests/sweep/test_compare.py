"""`harness compare` on a real MLflow sqlite store written by `harness.tracking` itself (configuration runs, trial
runs nested under them, predictions.csv artifacts), with predictions whose truth is planted: T2WI informative, ADC
weakly, CET1WI not at all; the augmentation sets equal."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from harness import tracking
from harness.metrics.classification import roc_auc
from harness.metrics.delong import delong_covariance
from harness.metrics.paired import compare_auc, holm
from harness.sweep.compare import compare_command
from harness.sweep.comparison import DASH, ExperimentNotFoundError, load_comparison, read_patient_predictions
from harness.sweep.factors import conclude, contrast_auc
from harness.sweep.report import table_rows

SWEEP = "planted"
SEQUENCES = {"T2WI": 2.5, "ADC": 1.0, "CET1WI": 0.0}  # planted separation in SD units
AUGMENTS = ("none", "flip")
FOLDS, REPEATS, PATIENTS = 3, 2, 72


def _cohort(seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (np.arange(PATIENTS) % 5 < 2).astype(int)  # 40% positive
    patients = [f"p{i:03d}" for i in range(PATIENTS)]
    folds = rng.permutation(np.arange(PATIENTS) % FOLDS)
    return patients, labels, folds


def _scores(rng, labels, strength: float, patient_effect: np.ndarray) -> np.ndarray:
    """One repeat's scores: the planted signal, a patient effect every configuration shares, seed noise."""
    return strength * labels + patient_effect + 0.5 * rng.standard_normal(labels.size)


def _write_sweep(uri: str, folder, *, failed: set[str] = frozenset(), legacy: bool = False) -> dict:
    """A finished sweep laid out as `harness run` writes it; returns what the tests check against."""
    patients, labels, folds = _cohort()
    rng = np.random.default_rng(1)
    shared = rng.standard_normal(PATIENTS)
    sweep = tracking.SweepTracking(uri, SWEEP)
    parent = sweep.parent_run(SWEEP, None, {}, {})
    truth: dict[str, np.ndarray] = {}
    specs, points = {}, {}
    for i, (sequence, augment) in enumerate((s, a) for s in SEQUENCES for a in AUGMENTS):
        key = f"cls-{i:03d}"
        points[key] = {"sequence": sequence, "augment": augment}
        params = {"task": "classification", "sequence": sequence, "augment": augment, "folds": "3", "repeats": "2"}
        tags = {tracking.POINT_TAG: json.dumps(points[key]), tracking.STUDY_TAG: "cls", tracking.SWEEP_TAG: SWEEP}
        specs[key] = {"name": f"{sequence} {augment}", "params": params, "tags": tags}
    runs = {} if legacy else sweep.configuration_runs(parent, specs)
    for key, point in points.items():
        matrix = np.stack([_scores(rng, labels, SEQUENCES[point["sequence"]], shared) for _ in range(REPEATS)])
        truth[key] = matrix
        for fold in range(FOLDS):
            for repeat in range(REPEATS):
                trial_key = f"{key}-f{fold}-r{repeat}"
                rows = [("val", p, matrix[repeat, j], labels[j]) for j, p in enumerate(patients) if folds[j] == fold]
                rows += [("train", p, 0.5, labels[j]) for j, p in enumerate(patients) if folds[j] != fold]
                frame = pd.DataFrame(rows, columns=["split", "patient", "dl_score", "lnm"])
                path = folder / trial_key / "predictions.csv"
                path.parent.mkdir(parents=True)
                frame.to_csv(path, index=False)
                tags = {tracking.STUDY_TAG: "cls", tracking.SWEEP_TAG: SWEEP}
                if not legacy:
                    tags |= {
                        tracking.SWEEP_RUN_TAG: parent,
                        tracking.CONFIGURATION_TAG: key,
                        tracking.KIND_TAG: "trial",
                        "harness.fold": str(fold),
                        "harness.repeat": str(repeat),
                    }
                run = tracking.TrialRun(
                    uri,
                    sweep.experiment_id,
                    parent if legacy else runs[key],
                    trial_key,
                    f"{specs[key]['name']} f{fold} r{repeat}",
                    tags=tags,
                    system_metrics=False,
                )
                run.log_params({"task": "classification", **point})
                run.log_metrics(
                    {
                        "val_auc": roc_auc(
                            frame.query("split == 'val'")["lnm"], frame.query("split == 'val'")["dl_score"]
                        )
                    },
                    step=1,
                )
                run.log_artifacts([(path, None)])
                run.end("FAILED" if trial_key in failed else "FINISHED")
    for run_id in runs.values():
        sweep.end_run(run_id, "FINISHED")
    sweep.end_parent(parent, "FINISHED")
    return {"labels": labels, "patients": patients, "truth": truth, "points": points, "folds": folds}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    return {"uri": uri, **_write_sweep(uri, folder)}


@pytest.fixture(scope="module")
def concluded(store):
    comparison = load_comparison(store["uri"], SWEEP, n_boot=200)
    return comparison, conclude(comparison)


def _by_name(comparison):
    return {c.name: c for c in comparison.configurations}


def test_oof_scores_pool_every_patient_once_per_repeat(store, concluded):
    comparison, _ = concluded
    assert len(comparison.configurations) == 6
    for configuration in comparison.configurations:
        assert configuration.oof.shape == (PATIENTS, REPEATS) and configuration.complete
        expected = store["truth"][configuration.key]  # (repeats, patients), straight from the written rows
        np.testing.assert_allclose(configuration.oof.to_numpy().T, expected, rtol=1e-6)
        assert configuration.metric("oof_auc") == pytest.approx(roc_auc(store["labels"], expected.mean(axis=0)))
        per_repeat = [roc_auc(store["labels"], row) for row in expected]
        assert configuration.metric("oof_auc_repeat_sd") == pytest.approx(np.std(per_repeat, ddof=1))
        assert configuration.metric("n_patients") == PATIENTS and configuration.metric("n_positive") == 30


def test_the_planted_order_is_found_and_equal_levels_are_not_called_different(concluded):
    _, (study,) = concluded
    by_pair = {(c.factor, c.level_a, c.level_b): c for c in study.comparisons}
    assert set(by_pair) == {
        ("sequence", "T2WI", "ADC"),
        ("sequence", "T2WI", "CET1WI"),
        ("sequence", "ADC", "CET1WI"),
        ("augment", "none", "flip"),
    }
    strong = by_pair[("sequence", "T2WI", "CET1WI")]
    assert strong.significant and strong.result.diff > 0.2 and strong.pairs == 2
    assert strong.text.startswith("T2WI beats CET1WI by ") and "(Holm)" in strong.text
    assert not by_pair[("augment", "none", "flip")].significant
    assert "no difference detectable" in by_pair[("augment", "none", "flip")].text
    assert "could detect about" in by_pair[("augment", "none", "flip")].text


def test_p_values_are_holm_adjusted_over_every_comparison_shown(concluded):
    _, (study,) = concluded
    raw = [c.result.p_value for c in study.comparisons]
    np.testing.assert_allclose([c.adjusted_p for c in study.comparisons], holm(raw))


def test_a_matched_pair_factor_is_the_mean_of_pair_differences_with_delong_covariance(store, concluded):
    """Independent computation: the contrast from DeLong's covariance matrix of the four AUCs, and a bootstrap."""
    comparison, (study,) = concluded
    item = next(c for c in study.comparisons if (c.level_a, c.level_b) == ("T2WI", "CET1WI"))
    names = ["T2WI none", "T2WI flip", "CET1WI none", "CET1WI flip"]
    by_name = _by_name(comparison)
    scores = np.stack([by_name[n].oof.mean(axis=1).to_numpy() for n in names])
    aucs, covariance = delong_covariance(store["labels"], scores)
    weights = np.array([0.5, 0.5, -0.5, -0.5])
    assert item.result.diff == pytest.approx(weights @ aucs)
    assert item.result.se == pytest.approx(math.sqrt(weights @ covariance @ weights))
    rng = np.random.default_rng(0)
    y = store["labels"]
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    boot = []
    for _ in range(400):
        pick = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        boot.append(weights @ [roc_auc(y[pick], row[pick]) for row in scores])
    assert np.std(boot, ddof=1) == pytest.approx(item.result.se, rel=0.25)


def test_one_pair_contrast_equals_compare_auc(store, concluded):
    comparison, _ = concluded
    by_name = _by_name(comparison)
    a, b = by_name["ADC none"], by_name["CET1WI none"]
    scores = {n: by_name[n].oof.to_numpy().T for n in (a.name, b.name)}
    contrast = contrast_auc(store["labels"], scores, [(a, b)])
    direct = compare_auc(store["labels"], scores[a.name], scores[b.name], n_boot=0)
    assert contrast.diff == pytest.approx(direct.diff) and contrast.p_value == pytest.approx(direct.p_value)


def test_best_set_is_the_top_and_the_configurations_not_significantly_worse(concluded):
    comparison, (study,) = concluded
    aucs = {c.name: c.metric("oof_auc") for c in comparison.configurations}
    assert study.top == max(aucs, key=aucs.get) and study.top.startswith("T2WI")
    assert {n for n in study.best} <= {"T2WI none", "T2WI flip"} and study.top in study.best
    assert all(study.versus_top[n][1] < 0.05 for n in aucs if n.startswith("CET1WI"))


def test_table_rows_name_ties_and_the_patients_behind_the_numbers(concluded):
    comparison, (study,) = concluded
    header, rows = table_rows(comparison, study)
    cells = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    assert cells[study.top]["Best"] == "top" and cells[study.top]["Trials"] == "6/6"
    assert cells["CET1WI none"]["Best"].startswith("worse, p")
    auc = comparison.configurations[0].metric("oof_auc")
    assert cells[comparison.configurations[0].name]["OOF AUC [95% CI]"].startswith(f"{auc:.3f} [")
    assert cells["ADC none"]["Test AUC"] == DASH  # no test set in this sweep


def test_a_configuration_with_a_failed_trial_is_named_and_left_out_of_paired_tests(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _write_sweep(uri, tmp_path, failed={"cls-005-f1-r0"})  # CET1WI flip
    comparison = load_comparison(uri, SWEEP, n_boot=100)
    (study,) = conclude(comparison)
    assert "CET1WI flip" in study.excluded and "FAILED" in study.excluded["CET1WI flip"]
    augment = next(c for c in study.comparisons if c.factor == "augment")
    assert augment.pairs == 2  # the CET1WI pair is gone, the others stay matched
    header, rows = table_rows(comparison, study)
    assert dict(zip(header, next(r for r in rows if r[0] == "CET1WI flip"), strict=True))["Trials"] == "5/6"


def test_runs_logged_before_configurations_read_as_one_trial_each(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _write_sweep(uri, tmp_path, legacy=True)
    comparison = load_comparison(uri, SWEEP, n_boot=100)
    assert len(comparison.configurations) == 6 * FOLDS * REPEATS
    assert all(c.oof.shape[1] == 1 for c in comparison.configurations)


def test_compare_command_writes_verdicts_forest_plot_and_fits_100_columns(store, tmp_path):
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=False)
    compare_command(SWEEP, store["uri"], tmp_path / "report", console)
    printed = out.getvalue()
    assert "T2WI beats CET1WI" in printed and "no difference detectable between none and flip" in printed
    assert max(len(line) for line in printed.splitlines()) <= 100
    markdown = (tmp_path / "report" / "comparison.md").read_text()
    page = (tmp_path / "report" / "comparison.html").read_text()
    assert markdown.index("T2WI beats CET1WI") < markdown.index("| Configuration")  # verdicts first
    assert "72 patients (30 node-positive)" in markdown
    assert page.count('src="data:image/png;base64,') == 2  # forest plot + one ROC figure
    assert "Paired differences" in page and "http" not in page.replace("<!DOCTYPE html>", "")


def test_detector_predictions_become_one_patient_row_with_the_highest_slice_score(tmp_path):
    frame = pd.DataFrame(
        {
            "split": ["val", "val", "val", "test", "train"],
            "patient": ["p1", "p1", "p2", "p3", "p4"],
            "slice_position_mm": [0, 4, 0, 0, 0],
            "max_score": [0.9, 0.2, 0.1, 0.7, 0.3],
            "n_targets": [1, 0, 0, 0, 0],
            "n_detections": [2, 1, 0, 1, 1],
            "lnm": [1, 1, 0, 1, 0],
        }
    )
    path = tmp_path / "predictions.csv"
    frame.to_csv(path, index=False)
    rows = read_patient_predictions(path).set_index(["split", "patient"])
    assert rows.loc[("val", "p1"), "score"] == 0.9 and rows.loc[("val", "p2"), "score"] == 0.1
    assert ("test", "p3") in rows.index and ("train", "p4") not in rows.index


def test_malformed_predictions_make_the_run_unusable_not_silently_smaller(tmp_path):
    path = tmp_path / "predictions.csv"
    pd.DataFrame({"split": ["val", "val"], "patient": ["a", "b"], "dl_score": [0.3, "x"], "lnm": [0, 1]}).to_csv(path)
    assert read_patient_predictions(path) is None


def test_missing_experiment_and_missing_database_are_clear_errors(store, tmp_path):
    with pytest.raises(ExperimentNotFoundError, match=r"'nope' not found.*known experiments: .*planted"):
        load_comparison(store["uri"], "nope")
    with pytest.raises(ExperimentNotFoundError, match="holds no sweep parent run"):
        load_comparison(store["uri"], "Default")
    missing = tmp_path / "elsewhere" / "mlflow.db"
    with pytest.raises(ExperimentNotFoundError, match="no MLflow database"):
        load_comparison(f"sqlite:///{missing}", None)
    assert not missing.exists() and not missing.parent.exists()
