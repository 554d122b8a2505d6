"""Writing runs: the driver's side of a sweep (parent and configuration runs, stale runs), a trial's own run from
inside its process, benchmark results, and the comparison recorded on the sweep's runs."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .params import MAX_PARAM_LENGTH, finite_metrics
from .store import (
    CONFIGURATION_TAG,
    CONFIGURATIONS_VIEW,
    CONFIGURATIONS_VIEW_STATE,
    EPOCH_METRIC,
    KIND_TAG,
    PARENT_TAG,
    SWEEP_RUN_TAG,
    SWEEP_TAG,
    TRIAL_TAG,
    _client,
    _metrics,
    _params,
    _schema_lock,
    _search,
    prepare_experiment,
)


class SweepTracking:
    """The driver's side: the experiment, the parent run, stale runs, final statuses."""

    def __init__(self, uri: str, experiment_name: str):
        self.uri = uri
        self.experiment_id = prepare_experiment(uri, experiment_name)
        self.client = _client(uri)
        view = json.dumps(CONFIGURATIONS_VIEW_STATE)
        with _schema_lock(uri):  # an upsert: two drivers of one experiment inserting it at once would collide
            self.client.set_experiment_tag(self.experiment_id, f"mlflow.sharedViewState.{CONFIGURATIONS_VIEW}", view)

    def parent_run(self, sweep: str, run_id: str | None, tags: dict[str, str], params: dict[str, str]) -> str:
        """The sweep's parent run: ``run_id`` when resuming (reopened), else a new one."""
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        run = self.client.create_run(self.experiment_id, run_name=sweep, tags={SWEEP_TAG: sweep, **tags})
        self.client.log_batch(run.info.run_id, params=_params(params))
        return run.info.run_id

    def children(self, parent_run_id: str) -> list:
        """Every run under a sweep's parent run: configurations and trials."""
        return _search(self.client, self.experiment_id, f"tags.`{SWEEP_RUN_TAG}` = '{parent_run_id}'")

    def configuration_runs(self, parent_run_id: str, configurations: dict[str, dict[str, Any]]) -> dict[str, str]:
        """One run per configuration under the parent (found again on resume); returns key -> run id.

        Args:
            parent_run_id: the sweep's parent run.
            configurations: key -> ``{"name": run name, "params": params, "tags": tags}``.
        """
        found = {
            run.data.tags.get(CONFIGURATION_TAG): run.info.run_id
            for run in self.children(parent_run_id)
            if run.data.tags.get(KIND_TAG) == "configuration"
        }
        for key, spec in configurations.items():
            if key in found:
                self.client.update_run(found[key], status="RUNNING")
                continue
            tags = {PARENT_TAG: parent_run_id, SWEEP_RUN_TAG: parent_run_id, KIND_TAG: "configuration"}
            tags |= {CONFIGURATION_TAG: key, "mlflow.source.name": "harness run", **spec["tags"]}
            run = self.client.create_run(self.experiment_id, run_name=spec["name"], tags=tags)
            self.client.log_batch(run.info.run_id, params=_params(spec["params"]))
            found[key] = run.info.run_id
        return {key: found[key] for key in configurations}

    def end_run(self, run_id: str, status: str, metrics: dict[str, float] | None = None) -> None:
        """Log a configuration's aggregate metrics (step 0) and end its run with ``status``."""
        if metrics:
            self.client.log_batch(run_id, metrics=_metrics(finite_metrics(metrics), step=0))
        self.client.set_terminated(run_id, status=status)

    end_parent = end_run

    def mark_stale(self, parent_run_id: str, status: str = "KILLED") -> list[str]:
        """Trial runs still RUNNING (their process died: a killed driver or trial) get ``status``; returns their
        names. Configuration runs are ended by the driver with their own status."""
        stale = [
            run
            for run in self.children(parent_run_id)
            if run.info.status == "RUNNING" and run.data.tags.get(KIND_TAG) != "configuration"
        ]
        for run in stale:
            self.client.set_terminated(run.info.run_id, status=status)
        return [run.info.run_name for run in stale]


class TrialRun:
    """A trial's child run, from inside the trial process (a Ray worker)."""

    def __init__(
        self,
        uri: str,
        experiment_id: str,
        parent_run_id: str,
        trial_key: str,
        run_name: str,
        tags: dict[str, str],
        system_metrics: bool = True,
    ):
        import mlflow

        self.uri, self.key = uri, trial_key
        self.client = _client(uri)
        mlflow.set_tracking_uri(uri)
        existing = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}' and tags.`{TRIAL_TAG}` = '{trial_key}'",
        )
        self.resumed = bool(existing)
        # mlflow would tag the run with the worker script's file path; no file paths in tags (docs/data-format.md).
        run_id = existing[0].info.run_id if existing else None
        self.run = mlflow.start_run(
            run_id=run_id,
            experiment_id=None if run_id else experiment_id,
            run_name=None if run_id else run_name,
            parent_run_id=parent_run_id,
            tags={TRIAL_TAG: trial_key, "mlflow.source.name": "harness run", **tags},
            log_system_metrics=system_metrics,
        )
        self.run_id = self.run.info.run_id
        self.logged_epochs = self._logged_epochs() if self.resumed else set()

    def _logged_epochs(self) -> set[int]:
        """The epochs already in this run: every epoch of every task logs ``EPOCH_METRIC``."""
        return {m.step for m in self.client.get_metric_history(self.run_id, EPOCH_METRIC)}

    def log_params(self, params: dict[str, str]) -> None:
        """Params are immutable in MLflow: a resumed run already has them (same values), so they are not re-sent."""
        if not self.resumed:
            self.client.log_batch(self.run_id, params=_params(params))

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        values = finite_metrics(metrics)
        if values:
            self.client.log_batch(self.run_id, metrics=_metrics(values, step))

    def log_epoch(self, metrics: dict[str, Any], epoch: int) -> bool:
        """One epoch's metrics at step ``epoch``, exactly once per run.

        A resumed trial restarts from its last durable checkpoint, which can be older than the last epoch it logged
        (the driver was killed after the metrics were sent, before Tune stored the checkpoint). Such an epoch is run
        again but not logged again: the run keeps the values it logged first. Returns whether it was logged.
        """
        if epoch in self.logged_epochs:
            return False
        self.log_metrics(metrics, step=epoch)
        self.logged_epochs.add(epoch)
        return True

    def log_artifacts(self, files: Iterable[tuple[Path, str | None]]) -> None:
        """(local file, artifact folder or None) pairs."""
        for path, folder in files:
            if Path(path).is_file():
                self.client.log_artifact(self.run_id, str(path), artifact_path=folder)

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)

    def end(self, status: str) -> None:
        """End the run with its true status (FINISHED, KILLED or FAILED)."""
        import mlflow

        mlflow.end_run(status=status)


def end_trial_run(uri: str, experiment_id: str, parent_run_id: str, trial_key: str, status: str) -> None:
    """End a trial's run from outside its process (a data-parallel trial's driver side), if it is still RUNNING."""
    client = _client(uri)
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}' and tags.`{TRIAL_TAG}` = '{trial_key}'"
    )
    for run in runs:
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, status=status)


def log_benchmark_run(
    uri: str,
    experiment: str,
    run_name: str,
    params: dict[str, Any],
    metrics: dict[str, Any],
    tags: dict[str, str] | None = None,
) -> str:
    """Log one benchmark result as a finished run of ``experiment`` (created when missing); returns the run id.

    Args:
        uri: tracking URI (`tracking_uri_from`).
        experiment: experiment name (``benchmarks`` for ``harness bench``).
        run_name: the run's name (model and inference path).
        params: settings (device name, torch version, dtype, batch size...), logged as strings.
        metrics: numbers; non-finite and non-numeric values are dropped (`finite_metrics`).
        tags: extra tags.
    """
    experiment_id = prepare_experiment(uri, experiment)
    client = _client(uri)
    run = client.create_run(experiment_id, run_name=run_name, tags={"harness.kind": "benchmark", **(tags or {})})
    run_id = run.info.run_id
    client.log_batch(
        run_id,
        params=_params({k: str(v)[:MAX_PARAM_LENGTH] for k, v in params.items()}),
        metrics=_metrics(finite_metrics(metrics), step=0),
    )
    client.set_terminated(run_id, status="FINISHED")
    return run_id


def record_comparison(uri: str, parent_run_id: str, aggregates: dict[str, dict[str, float]], files: list[Path]) -> None:
    """Each configuration's aggregate metrics on its run (run id -> metrics, step 0), the report files on the parent."""
    client = _client(uri)
    for run_id, metrics in aggregates.items():
        values = finite_metrics(metrics)
        if values:
            client.log_batch(run_id, metrics=_metrics(values, step=0))
    for path in files:
        client.log_artifact(parent_run_id, str(path), artifact_path="comparison")
