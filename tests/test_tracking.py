"""`harness.tracking` under concurrency: several processes starting on a folder without ``mlflow.db``."""

import json
import multiprocessing
import os

from mlflow import MlflowClient

from harness import tracking
from tests.concurrency import all_at_once


def test_four_drivers_creating_the_same_fresh_database_all_succeed(tmp_path):
    """The schema creation of a fresh sqlite store is serialised; unserialised, drivers started together crash with
    ``duplicate column name: step`` or corrupt the database (3 runs of 3 did, measured without the lock)."""
    outcomes = all_at_once(tracking.prepare_experiment, (tracking.default_tracking_uri(tmp_path), "same"), 4)
    assert all(kind == "ok" for kind, _ in outcomes), outcomes
    assert len({experiment_id for _, experiment_id in outcomes}) == 1  # one experiment, found by the other three


def _trial_run(uri: str, experiment_id: str, parent: str) -> tracking.TrialRun:
    run = tracking.TrialRun(uri, experiment_id, parent, "cls-000", "cls-000 test", tags={}, system_metrics=False)
    run.log_params({"model": "wu2020"})
    return run


def _first_attempt(uri: str, experiment_id: str, parent: str) -> None:
    """Logs epochs 1-3, then dies without ending its run, as a SIGKILLed trial does."""
    run = _trial_run(uri, experiment_id, parent)
    for epoch in (1, 2, 3):
        assert run.log_epoch({"train_loss": 1.0 / epoch, "val_auc": 0.5}, epoch)
    os._exit(0)


def test_a_resumed_trial_logs_each_epoch_once(tmp_path):
    """The driver killed after epoch 3 was logged, before its checkpoint was stored: the resumed trial runs epoch 3
    again from the epoch-2 checkpoint. The run's history keeps epoch 3 once, with the value logged first."""
    uri = tracking.default_tracking_uri(tmp_path)
    experiment_id = tracking.prepare_experiment(uri, "exactly-once")
    parent = tracking.SweepTracking(uri, "exactly-once").parent_run("s", None, tags={}, params={})
    first = multiprocessing.get_context("spawn").Process(target=_first_attempt, args=(uri, experiment_id, parent))
    first.start()
    first.join(120)
    assert first.exitcode == 0
    # A new process finds the RUNNING run by its trial key and resumes it.
    resumed = _trial_run(uri, experiment_id, parent)
    assert resumed.resumed
    logged = [resumed.log_epoch({"train_loss": 9.0, "val_auc": 0.9}, epoch) for epoch in (3, 4)]
    assert logged == [False, True]
    resumed.log_metrics({"val_auc": 0.8}, step=4)  # the final evaluation, at the last epoch's step
    resumed.end("FINISHED")
    client = MlflowClient(uri)
    history = {m.step: m.value for m in client.get_metric_history(resumed.run_id, "train_loss")}
    assert [m.step for m in client.get_metric_history(resumed.run_id, "train_loss")] == [1, 2, 3, 4]
    assert history[3] == 1.0 / 3 and history[4] == 9.0
    assert sorted(m.step for m in client.get_metric_history(resumed.run_id, "val_auc")) == [1, 2, 3, 4, 4]


def test_a_sweep_experiment_carries_the_configurations_view_the_ui_link_opens(tmp_path):
    """The MLflow UI shows no metric column by default; `harness run` links to a view (an experiment tag the UI
    reads as a shared view state) of the configuration runs with their aggregates, best OOF AUC first."""
    uri = tracking.default_tracking_uri(tmp_path)
    sweep = tracking.SweepTracking(uri, "viewed")
    experiment = MlflowClient(uri).get_experiment(sweep.experiment_id)
    state = json.loads(experiment.tags[f"mlflow.sharedViewState.{tracking.CONFIGURATIONS_VIEW}"])
    assert state["searchFilter"] == f"tags.`{tracking.KIND_TAG}` = 'configuration'"
    assert state["orderByKey"] == "metrics.`oof_auc`" and state["orderByAsc"] is False
    assert {"metrics.`oof_auc`", "metrics.`n_patients`", "params.`sequence`"} <= set(state["selectedColumns"])
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the model-training view
