"""Where MLflow lives and the names the harness gives it: the tracking URI, the experiment (created once, under a
lock for a fresh sqlite store), run tags, and MLflow's entity types."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

TRIAL_TAG = "harness.trial"  # the trial's key: how a retried trial finds its run
SWEEP_TAG = "harness.sweep"
STUDY_TAG = "harness.study"
PARENT_TAG = "mlflow.parentRunId"
SWEEP_RUN_TAG = "harness.sweep_run"  # the sweep's parent run id, on configuration and trial runs alike
CONFIGURATION_TAG = "harness.configuration"  # the configuration's key ("classifier-003")
KIND_TAG = "harness.kind"  # "configuration", "trial" or "benchmark"
POINT_TAG = "harness.point"  # the configuration's varied values, as JSON (the comparison's factors)
EPOCH_METRIC = "train_loss"  # logged by every epoch of every task: which epochs a run already holds
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # the UI's model-training view
# A view of a sweep's experiment that the MLflow UI opens from ``?viewStateShareKey=configurations``: it reads the
# experiment tag ``mlflow.sharedViewState.<key>`` (MLflow 3.x; plain JSON is its legacy format, still read). Its
# runs table shows no metric column by default; this view shows the aggregates. Columns a task lacks stay empty.
CONFIGURATIONS_VIEW = "configurations"
CONFIGURATIONS_VIEW_STATE = {
    "searchFilter": "tags.`harness.kind` = 'configuration'",
    "orderByKey": "metrics.`oof_auc`",
    "orderByAsc": False,
    "selectedColumns": [
        *(f"metrics.`{m}`" for m in ("oof_auc", "oof_auc_ci_low", "oof_auc_ci_high", "oof_auc_repeat_sd")),
        *(f"metrics.`{m}`" for m in ("test_auc", "val_map50_mean", "n_patients", "n_positive")),
        *(f"params.`{p}`" for p in ("sequence", "augment", "backbone", "folds", "repeats")),
    ],
}


def default_tracking_uri(folder: Path | None = None) -> str:
    """``sqlite:///<absolute folder>/mlflow.db`` (the working directory by default): absolute, because trials chdir."""
    folder = (folder or Path.cwd()).resolve()
    return f"sqlite:///{folder / 'mlflow.db'}"


def artifact_root_for(uri: str) -> str | None:
    """Artifacts next to a sqlite database (``mlartifacts/``); a server decides for itself (None)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return None


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _schema_lock(uri: str):
    """A lock across processes for a sqlite store: MLflow creates a fresh database's schema on first use, and two
    processes doing that at once fail (``duplicate column name: step``) or corrupt it. A server needs none."""
    if not uri.startswith("sqlite:///"):
        return contextlib.nullcontext()
    from filelock import FileLock

    database = Path(uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(database.with_name(f".{database.name}.lock")), timeout=600)


def prepare_experiment(uri: str, name: str) -> str:
    """Create (or find) the experiment ``name``; returns its id. Call once, in the driver, before any trial.

    Serialised across processes for sqlite (`_schema_lock`): several sweeps started at once in a folder without
    ``mlflow.db`` all run."""
    with _schema_lock(uri):
        return _prepare_experiment(uri, name)


def _prepare_experiment(uri: str, name: str) -> str:
    client = _client(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    root = artifact_root_for(uri)
    return client.create_experiment(name, artifact_location=f"{root}/{name}" if root else None, tags=EXPERIMENT_KIND)


def tracking_uri_from(option: str | None) -> str:
    """The tracking URI to use: the option, else ``MLFLOW_TRACKING_URI``, else the default sqlite database."""
    return option or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def _search(client, experiment_id: str, filter_string: str) -> list:
    """Every run matching ``filter_string``, across result pages."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _params(params: dict[str, str]) -> list:
    from mlflow.entities import Param

    return [Param(k, v) for k, v in params.items()]


def _metrics(metrics: dict[str, float], step: int) -> list:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, v, now, step) for k, v in metrics.items()]
