"""`harness compare` on a real MLflow sqlite store laid out as `harness.tracking` writes it."""

from __future__ import annotations

import io
import math
import time

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from harness.metrics.delong import delong_test
from harness.sweep.compare import compare_command
from harness.sweep.comparison import DASH, ExperimentNotFoundError, load_comparison
from harness.sweep.report import table_rows
from harness.tracking import PARENT_TAG, STUDY_TAG, SWEEP_TAG, TRIAL_TAG

SWEEP = "sweep-a"
CLS_BEST = "classifier: sequence=T2WI, augment=flip"
CLS_NONE = "classifier: sequence=T2WI, augment=none"
CLS_ADC = "classifier: sequence=ADC, augment=none"
CLS_FAILED = "classifier: sequence=ADC, augment=flip"
DET_A = "detector: sequence=DWI, backbone=resnet50"
DET_B = "detector: sequence=T2WI, backbone=mobilenet_v3"
OLD_TRIAL = "classifier: from an older execution"

CLS_METRICS = {
    CLS_BEST: {
        "val_auc": 0.9123,
        "val_auc_ci_low": 0.8011,
        "val_auc_ci_high": 0.9876,
        "val_sensitivity": 0.8333,
        "val_specificity": 0.9286,
        "val_accuracy": 0.9,
        "val_n_patients": 20.0,
    },
    CLS_NONE: {
        "val_auc": 0.7456,
        "val_auc_ci_low": 0.5512,
        "val_auc_ci_high": 0.9001,
        "val_sensitivity": 0.6667,
        "val_specificity": 0.7143,
        "val_accuracy": 0.7,
        "val_n_patients": 20.0,
    },
    CLS_ADC: {"val_auc": 0.6012},  # KILLED by ASHA: partial metrics only
}
DET_METRICS = {
    DET_A: {"val_map50": 0.0412, "val_map": 0.0123, "val_froc": 0.3456, "val_patient_auc": 0.7012},
    DET_B: {"val_map50": 0.0170, "val_map": 0.0051, "val_froc": 0.2222, "val_patient_auc": 0.8234},
}


def _val_frame(rng: np.random.Generator, labels: np.ndarray, noise: float, patients: list[str]) -> pd.DataFrame:
    scores = 1 / (1 + np.exp(-(2 * labels - 1 + rng.normal(0, noise, labels.size))))
    return pd.DataFrame({"split": "val", "patient": patients, "dl_score": scores.round(6), "lnm": labels})


def _classifier_predictions(rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """Validation predictions of three classifiers on 20 patients (CLS_ADC scored only 15), plus train rows."""
    labels = np.array([1] * 7 + [0] * 13)
    patients = [f"p{k:03d}" for k in range(20)]
    frames = {CLS_BEST: _val_frame(rng, labels, 0.6, patients), CLS_NONE: _val_frame(rng, labels, 1.5, patients)}
    frames[CLS_ADC] = _val_frame(rng, labels, 2.0, patients).iloc[5:].reset_index(drop=True)
    train = pd.DataFrame({"split": "train", "patient": ["t1", "t2"], "dl_score": [0.2, 0.9], "lnm": [0, 1]})
    return {name: pd.concat([frame, train], ignore_index=True) for name, frame in frames.items()}


def _detector_predictions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "split": ["val"] * 3,
            "patient": ["p000", "p000", "p001"],
            "slice_position_mm": [0, 4, 0],
            "max_score": [0.9, 0.2, 0.1],
            "n_targets": [1, 0, 0],
            "n_detections": [2, 1, 0],
        }
    )


def _child(client, experiment_id, parent_id, name, study, params, metrics, status, predictions, folder):
    tags = {PARENT_TAG: parent_id, TRIAL_TAG: f"{study}-{name[-4:]}", STUDY_TAG: study}
    run = client.create_run(experiment_id, run_name=name, tags=tags)
    run_id = run.info.run_id
    for key, value in params.items():
        client.log_param(run_id, key, value)
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    if predictions is not None:
        path = folder / f"{run_id}" / "predictions.csv"
        path.parent.mkdir(parents=True)
        predictions.to_csv(path, index=False)
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, status=status)
    return run_id


def _params(task, sequence, augment, backbone):
    model = "wu2020_classifier" if task == "classification" else f"fasterrcnn_{backbone}"
    return {
        "task": task,
        "model": model,
        "sequence": sequence,
        "augment": augment,
        "backbone": backbone,
        "lr": "0.001",
        "epochs": "3",
        "batch_size": "8",
    }


def _experiment(client, name, folder):
    experiment_id = client.create_experiment(name, artifact_location=(folder / "artifacts" / name).as_uri())
    time.sleep(0.01)  # distinct creation times: the latest experiment is chosen by its creation time
    return experiment_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """An older sweep experiment, the sweep under test (two executions) and a later 'benchmarks' experiment."""
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    older = _experiment(client, "older-sweep", folder)
    client.create_run(older, run_name="older-sweep", tags={SWEEP_TAG: "older-sweep"})
    experiment_id = _experiment(client, SWEEP, folder)

    old_parent = client.create_run(experiment_id, run_name=SWEEP, tags={SWEEP_TAG: SWEEP}).info.run_id
    _child(
        client,
        experiment_id,
        old_parent,
        OLD_TRIAL,
        "classifier",
        _params("classification", "T2WI", "none", "resnet18"),
        {"val_auc": 0.99},
        "FINISHED",
        None,
        folder,
    )
    time.sleep(0.01)
    parent = client.create_run(experiment_id, run_name=SWEEP, tags={SWEEP_TAG: SWEEP}).info.run_id

    predictions = _classifier_predictions(np.random.default_rng(0))
    runs = [
        (CLS_BEST, "T2WI", "flip", "FINISHED"),
        (CLS_NONE, "T2WI", "none", "FINISHED"),
        (CLS_ADC, "ADC", "none", "KILLED"),
    ]
    for name, sequence, augment, status in runs:
        params = _params("classification", sequence, augment, "resnet18")
        _child(
            client,
            experiment_id,
            parent,
            name,
            "classifier",
            params,
            CLS_METRICS[name],
            status,
            predictions[name],
            folder,
        )
    # Failed before anything was logged but its params: no metrics, no predictions.
    params = _params("classification", "ADC", "flip", "resnet18")
    _child(client, experiment_id, parent, CLS_FAILED, "classifier", params, {}, "FAILED", None, folder)
    for name, sequence, backbone in ((DET_A, "DWI", "resnet50"), (DET_B, "T2WI", "mobilenet_v3")):
        _child(
            client,
            experiment_id,
            parent,
            name,
            "detector",
            _params("detection", sequence, "none", backbone),
            DET_METRICS[name],
            "FINISHED",
            _detector_predictions(),
            folder,
        )

    bench = _experiment(client, "benchmarks", folder)
    client.create_run(bench, run_name="bench", tags={SWEEP_TAG: "bench"})
    return {"uri": uri, "predictions": predictions, "folder": folder}


@pytest.fixture(scope="module")
def comparison(store):
    return load_comparison(store["uri"], SWEEP)


def _rows(comparison, task) -> dict[str, dict[str, str]]:
    header, rows, _ = table_rows(comparison, task)
    return {row[header.index("Run")]: dict(zip(header, row, strict=True)) for row in rows}


def test_latest_parent_run_children_only(comparison):
    names = sorted(t.name for t in comparison.trials)
    assert names == sorted([CLS_BEST, CLS_NONE, CLS_ADC, CLS_FAILED, DET_A, DET_B])
    assert comparison.sweep == SWEEP and comparison.experiment == SWEEP


def test_no_experiment_picks_the_latest_sweep_experiment_but_not_benchmarks(store):
    assert load_comparison(store["uri"], None).experiment == SWEEP


def test_classifier_table_matches_logged_metrics(comparison):
    rows = _rows(comparison, "classification")
    for name in (CLS_BEST, CLS_NONE):
        logged = CLS_METRICS[name]
        row = rows[name]
        ci = f"[{logged['val_auc_ci_low']:.3f}–{logged['val_auc_ci_high']:.3f}]"
        assert row["AUC [95% CI]"] == f"{logged['val_auc']:.3f} {ci}"
        assert row["Sensitivity"] == f"{logged['val_sensitivity']:.3f}"
        assert row["Specificity"] == f"{logged['val_specificity']:.3f}"
        assert row["Status"] == "FINISHED"
    killed = rows[CLS_ADC]
    assert (killed["Status"], killed["AUC [95% CI]"], killed["Sensitivity"]) == ("KILLED", "0.601", DASH)


def test_rows_are_sorted_by_sequence_augment_backbone(comparison):
    header, rows, _ = table_rows(comparison, "classification")
    groups = [tuple(row[:3]) for row in rows]
    assert groups == sorted(groups)
    # ADC/flip, ADC/none, T2WI/flip, T2WI/none
    assert [row[3] for row in rows] == [CLS_FAILED, CLS_ADC, CLS_BEST, CLS_NONE]


def test_detector_table_matches_logged_metrics(comparison):
    rows = _rows(comparison, "detection")
    for name, logged in DET_METRICS.items():
        row = rows[name]
        assert [row["mAP@0.5"], row["mAP"], row["FROC"], row["Patient AUC"]] == [
            f"{logged[k]:.3f}" for k in ("val_map50", "val_map", "val_froc", "val_patient_auc")
        ]
        assert row["p vs best (DeLong)"] == DASH  # these predictions.csv have no lnm column (no patient truth)


def test_best_trials_have_a_dash(comparison):
    assert comparison.best("classification").name == CLS_BEST
    # The detector's best is by mAP@0.5, although DET_B has the higher patient AUC.
    assert comparison.best("detection").name == DET_A
    assert _rows(comparison, "classification")[CLS_BEST]["p vs best (DeLong)"] == DASH
    assert math.isnan(comparison.best("classification").p_value)


def _direct_p(predictions, name) -> float:
    best = predictions[CLS_BEST].query("split == 'val'").set_index("patient")
    other = predictions[name].query("split == 'val'").set_index("patient")
    shared = sorted(set(best.index) & set(other.index))
    return delong_test(best.loc[shared, "lnm"], other.loc[shared, "dl_score"], best.loc[shared, "dl_score"]).p_value


@pytest.mark.parametrize("name", [CLS_NONE, CLS_ADC])
def test_delong_p_matches_a_direct_computation_on_shared_patients(comparison, store, name):
    expected = _direct_p(store["predictions"], name)
    trial = next(t for t in comparison.trials if t.name == name)
    assert 0 < expected < 1
    assert trial.p_value == pytest.approx(expected, rel=1e-9)
    cell = _rows(comparison, "classification")[name]["p vs best (DeLong)"]
    assert cell == ("<0.001" if expected < 0.001 else f"{expected:.3f}")


def test_failed_run_without_metrics_shows_dashes(comparison):
    row = _rows(comparison, "classification")[CLS_FAILED]
    assert row["Status"] == "FAILED"
    assert [row[k] for k in ("AUC [95% CI]", "Sensitivity", "Specificity", "p vs best (DeLong)")] == [DASH] * 4


def test_compare_command_writes_markdown_and_html(store, tmp_path):
    out = io.StringIO()
    console = Console(file=out, width=250, color_system=None)
    compare_command(SWEEP, store["uri"], tmp_path / "report", console)
    markdown = (tmp_path / "report" / "comparison.md").read_text()
    page = (tmp_path / "report" / "comparison.html").read_text()
    printed = out.getvalue()
    for name in (CLS_BEST, CLS_NONE, CLS_ADC, CLS_FAILED, DET_A, DET_B):
        assert name in markdown and name in page and name in printed
    assert f"**{CLS_BEST}**" in markdown
    assert page.count('src="data:image/png;base64,') == 2  # one ROC figure per classifier sequence: ADC, T2WI
    assert "http" not in page.replace("<!DOCTYPE html>", "")  # self-contained: nothing fetched


def test_missing_experiment_is_a_clear_error(store):
    with pytest.raises(ExperimentNotFoundError, match=r"'nope' not found.*known experiments: .*sweep-a") as error:
        load_comparison(store["uri"], "nope")
    assert isinstance(error.value, ValueError)
    with pytest.raises(ExperimentNotFoundError, match="holds no sweep parent run"):
        load_comparison(store["uri"], "Default")


def test_detector_p_value_is_delong_on_the_patients_highest_slice_scores(tmp_path):
    """With the manifest's lnm in predictions.csv, a detector's patient score is its highest slice score."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = _experiment(client, "det-sweep", tmp_path)
    parent = client.create_run(experiment_id, run_name="det-sweep", tags={SWEEP_TAG: "det-sweep"}).info.run_id
    rng = np.random.default_rng(1)
    labels = np.array([1] * 6 + [0] * 8)
    patients = [f"p{i:03d}" for i in range(labels.size)]
    frames = {}
    for name, noise in ((DET_A, 1.0), (DET_B, 4.0)):
        rows = []
        for patient, lnm in zip(patients, labels, strict=True):
            for z in range(3):  # three slices per patient; a patient's score is the highest
                score = 1 / (1 + np.exp(-(2 * lnm - 1 + rng.normal(0, noise))))
                rows.append(("val", patient, float(z), round(score, 6), int(lnm and z == 1), 1, int(lnm)))
        frames[name] = pd.DataFrame(
            rows, columns=["split", "patient", "slice_position_mm", "max_score", "n_targets", "n_detections", "lnm"]
        )
        _child(
            client,
            experiment_id,
            parent,
            name,
            "detector",
            _params("detection", "DWI", "none", name[-8:]),
            DET_METRICS[name],
            "FINISHED",
            frames[name],
            tmp_path,
        )
    comparison = load_comparison(uri, "det-sweep")
    best, other = comparison.best("detection"), next(t for t in comparison.trials if t.name == DET_B)
    assert best.name == DET_A
    patient_max = {n: f.groupby("patient")["max_score"].max().reindex(patients).to_numpy() for n, f in frames.items()}
    expected = delong_test(labels, patient_max[DET_B], patient_max[DET_A]).p_value
    assert 0 < expected < 0.99 and other.p_value == pytest.approx(expected)  # two different AUCs
    assert _rows(comparison, "detection")[DET_B]["p vs best (DeLong)"] == f"{expected:.3f}"
