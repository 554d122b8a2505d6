"""`harness compare` on a detector study: a real MLflow sqlite store with trial runs whose artifacts are what a
detector trial writes (``predictions.csv`` and ``detections.json.gz`` through the real writer). The pooled FROC and
precision-recall curves are checked against `harness.metrics` called directly on the written detections."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from harness import tracking
from harness.metrics.detection import detection_pr_curve
from harness.metrics.froc import froc
from harness.sweep.compare import compare_command
from harness.sweep.comparison import load_comparison
from harness.sweep.detections import pool_detections
from harness.train.evaluation import DETECTIONS_FILE, write_detections

SWEEP = "detector-sweep"
FOLDS, REPEATS, PATIENTS, SLICES = 3, 2, 24, 4
MODELS = {"fasterrcnn_vgg16": 0.9, "fasterrcnn_lite_fpn": 0.5, "fasterrcnn_old": 0.7}  # chance a node is found
OLD = "fasterrcnn_old"  # logged before detections.json.gz existed
CLASSES = ["background", "a", "b", "c", "d", "e"]


def _slice(rng, lnm: int, k: int, hit_rate: float) -> tuple[dict, dict]:
    """One slice: a node on slices 1-2 of a node-positive patient, found with ``hit_rate``, and random FPs."""
    boxes, labels, scores = [], [], []
    gt = np.zeros((0, 4))
    if lnm and k in (1, 2):
        x, y = rng.integers(0, 48, 2)
        gt = np.array([[x, y, x + 12, y + 12]], dtype=float)
        if rng.random() < hit_rate:
            boxes.append(gt[0] + rng.integers(-1, 2, 4))
            scores.append(rng.uniform(0.4, 1.0))
            labels.append(int(rng.integers(1, 6)))
    for _ in range(rng.poisson(1.0)):
        x, y = rng.integers(0, 56, 2)
        boxes.append(np.array([x, y, x + 8, y + 8], dtype=float))
        scores.append(rng.uniform(0.02, 0.8))
        labels.append(int(rng.integers(1, 6)))
    pred = {
        "boxes": np.array(boxes, dtype=float).reshape(-1, 4),
        "scores": np.round(np.array(scores, dtype=float), 6),
        "labels": np.array(labels, dtype=np.int64),
    }
    return pred, {"boxes": gt, "labels": np.full(len(gt), int(rng.integers(1, 6)), dtype=np.int64)}


def _trial_files(rng, folder, patients, labels, members, hit_rate: float, with_detections: bool) -> tuple:
    """A trial's predictions.csv (and detections.json.gz); returns the fold's (preds, gts, patients)."""
    preds, gts, fields = [], [], []
    for j in members:
        for k in range(SLICES):
            pred, gt = _slice(rng, labels[j], k, hit_rate)
            preds.append(pred)
            gts.append(gt)
            fields.append({"patient": patients[j], "slice_position": 4.0 * k, "lnm": int(labels[j])})
    rows = [
        ("val", f["patient"], f"{f['slice_position']:.3f}", f"{max(p['scores'], default=0.0):.6f}", len(g["boxes"]))
        + (len(p["boxes"]), f["lnm"])
        for p, g, f in zip(preds, gts, fields, strict=True)
    ]
    columns = ["split", "patient", "slice_position_mm", "max_score", "n_targets", "n_detections", "lnm"]
    folder.mkdir(parents=True)
    pd.DataFrame(rows, columns=columns).to_csv(folder / "predictions.csv", index=False)
    files = [(folder / "predictions.csv", None)]
    if with_detections:
        files.append((write_detections(folder / DETECTIONS_FILE, preds, gts, fields, CLASSES), None))
    return files, (preds, gts, [f["patient"] for f in fields])


def _write_sweep(uri: str, folder) -> dict:
    """Three detector configurations x 3 folds x 2 repeats; returns each configuration's per-repeat fold lists."""
    rng = np.random.default_rng(7)
    labels = (np.arange(PATIENTS) % 5 < 2).astype(int)
    patients = [f"pt-{i:03d}" for i in range(PATIENTS)]
    folds = rng.permutation(np.arange(PATIENTS) % FOLDS)
    sweep = tracking.SweepTracking(uri, SWEEP)
    parent = sweep.parent_run(SWEEP, None, {}, {})
    specs = {}
    for i, model in enumerate(MODELS):
        params = {"task": "detection", "model": model, "folds": str(FOLDS), "repeats": str(REPEATS)}
        tags = {tracking.POINT_TAG: json.dumps({"model": model}), tracking.STUDY_TAG: "det", tracking.SWEEP_TAG: SWEEP}
        specs[f"det-{i:03d}"] = {"name": model, "params": params, "tags": tags}
    runs = sweep.configuration_runs(parent, specs)
    written: dict[str, dict[int, list]] = {}
    for key, spec in specs.items():
        model = spec["params"]["model"]
        for fold in range(FOLDS):
            for repeat in range(REPEATS):
                trial_key = f"{key}-f{fold}-r{repeat}"
                members = np.flatnonzero(folds == fold)
                files, lists = _trial_files(
                    rng, folder / trial_key, patients, labels, members, MODELS[model], model != OLD
                )
                written.setdefault(model, {}).setdefault(repeat, []).append(lists)
                tags = {tracking.STUDY_TAG: "det", tracking.SWEEP_TAG: SWEEP, tracking.SWEEP_RUN_TAG: parent}
                tags |= {tracking.CONFIGURATION_TAG: key, tracking.KIND_TAG: "trial"}
                tags |= {"harness.fold": str(fold), "harness.repeat": str(repeat)}
                name = f"{model} f{fold} r{repeat}"
                run = tracking.TrialRun(
                    uri, sweep.experiment_id, runs[key], trial_key, name, tags=tags, system_metrics=False
                )
                run.log_params({"task": "detection", "model": model})
                run.log_metrics({"val_map50": 0.5, "val_froc": 0.5}, step=1)
                run.log_artifacts(files)
                run.end("FINISHED")
    for run_id in runs.values():
        sweep.end_run(run_id, "FINISHED")
    sweep.end_parent(parent, "FINISHED")
    return written


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare-det")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    return {"uri": uri, "written": _write_sweep(uri, folder)}


@pytest.fixture(scope="module")
def comparison(store):
    return load_comparison(store["uri"], SWEEP, n_boot=100)


def _concatenated(fold_lists: list) -> tuple[list, list, list]:
    return tuple([item for lists in fold_lists for item in lists[part]] for part in range(3))


@pytest.mark.parametrize("model", ["fasterrcnn_vgg16", "fasterrcnn_lite_fpn"])
def test_pooled_froc_and_pr_equal_the_metrics_on_the_concatenated_folds_of_repeat_0(store, comparison, model):
    pooled = next(c for c in comparison.configurations if c.name == model).detections
    assert pooled.complete and pooled.repeat == 0 and pooled.n_trials == FOLDS
    assert (pooled.n_patients, pooled.n_slices) == (PATIENTS, PATIENTS * SLICES)
    preds, gts, patients = _concatenated(store["written"][model][0])
    expected = froc(preds, gts, patients)  # independent of the artifact: straight from the generated detections
    assert pooled.froc.mean_sensitivity == pytest.approx(expected.mean_sensitivity)
    np.testing.assert_allclose(pooled.froc.sensitivities, expected.sensitivities)
    np.testing.assert_allclose(pooled.froc.curve_fp_per_patient, expected.curve_fp_per_patient)
    np.testing.assert_allclose(pooled.froc.curve_sensitivity, expected.curve_sensitivity)
    assert pooled.n_lesions == expected.n_lesions == sum(len(g["boxes"]) for g in gts) > 0
    other = froc(*_concatenated(store["written"][model][1]))
    assert not np.array_equal(other.curve_sensitivity, expected.curve_sensitivity)  # repeat 1 is not mixed in
    one = [{**p, "labels": np.ones(len(p["scores"]), int)} for p in preds]  # node locations pooled
    recall, precision, _ = detection_pr_curve(one, [{**g, "labels": np.ones(len(g["boxes"]), int)} for g in gts], 1)
    np.testing.assert_allclose(pooled.recall, recall)
    np.testing.assert_allclose(pooled.precision, precision)
    assert 0 < pooled.ap <= 1


def test_a_configuration_without_detections_is_named_not_fatal(comparison):
    old = next(c for c in comparison.configurations if c.name == OLD)
    assert old.detections is not None and not old.detections.complete and len(old.detections.missing) == FOLDS
    assert old.oof is not None and old.complete  # its patient scores still take part in the paired tests


def test_a_fold_without_detections_keeps_its_configuration_out_of_the_figures(store, comparison):
    configuration = next(c for c in comparison.configurations if c.name == "fasterrcnn_vgg16")
    trials = [replace(t, status="FAILED") if (t.fold, t.repeat) == (1, 0) else t for t in configuration.trials]
    pooled = pool_detections(store["uri"], trials, FOLDS)
    assert pooled.missing == ["fasterrcnn_vgg16 f1 r0 (FAILED)"] and not pooled.complete
    assert 0 < pooled.n_patients < PATIENTS  # the other folds' detections, never drawn as the configuration's curve
    never = pool_detections(store["uri"], [t for t in configuration.trials if t.fold != 2], FOLDS)
    assert never.missing == ["a trial never started"] and not never.complete


def test_the_html_report_shows_froc_and_pr_of_the_pooled_detections(store, tmp_path):
    console = Console(file=io.StringIO(), width=100, force_terminal=False)
    compare_command(SWEEP, store["uri"], tmp_path, console)
    page = (tmp_path / "comparison.html").read_text()
    markdown = (tmp_path / "comparison.md").read_text()
    basis = f"repeat 0 of each of {FOLDS} folds: {PATIENTS} patients, {PATIENTS * SLICES} slices"
    for title in ("FROC of study det", "Precision-recall (IoU 0.5) of study det"):
        start = page.index(f"<h3>{title}, pooled out-of-fold detections ({basis}")
        assert page.index('<img alt="' + title, start) < page.index("</body>")
    assert page.count('src="data:image/png;base64,') == 4  # forest plot, ROC, FROC, precision-recall
    assert page.index("ROC curves of study det") < page.index("FROC of study det")
    assert "FROC (lesion sensitivity against false positives per patient)" in markdown and basis in markdown
    assert "(the other repeats are not averaged in)" in markdown
    assert f"{OLD}: no detections for {FOLDS} of its {FOLDS} folds in repeat 0 ({OLD} f0 r0, " in markdown
