"""Every MLflow call of the harness, writes and reads (docs/sweeps.md, "MLflow layout"); a test keeps it the only
module that imports ``mlflow``.

Layout: one experiment per sweep name (in MLflow's model-training view); one parent run per execution of the sweep;
under it one run per configuration (a grid point: the aggregate metrics over its folds and repeats), and under each
configuration its trials (one per fold and repeat), tagged with the trial's key so that a retried or restored trial
finds and continues its own run. Every run of an execution carries its parent's id (`SWEEP_RUN_TAG`).

Rules this module keeps:
- The driver creates the experiment (and so a fresh sqlite database's schema) before any trial starts: several
  processes creating a sqlite database at once corrupt it.
- Trials log with plain ``mlflow`` (not Ray's MLflow callbacks, which ignore the experiment, leave runs RUNNING and
  duplicate restored runs) and end their run with its true status: FINISHED, KILLED (stopped by the scheduler),
  FAILED (error). A run left RUNNING by a killed process is marked by the driver.
- No patient names, ids or file paths in params, tags or metrics: paths are dropped from logged configs; patients in
  artifacts are pseudonyms.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

TRIAL_TAG = "harness.trial"  # the trial's key: how a retried trial finds its run
SWEEP_TAG = "harness.sweep"
STUDY_TAG = "harness.study"
PARENT_TAG = "mlflow.parentRunId"
SWEEP_RUN_TAG = "harness.sweep_run"  # the sweep's parent run id, on configuration and trial runs alike
CONFIGURATION_TAG = "harness.configuration"  # the configuration's key ("classifier-003")
KIND_TAG = "harness.kind"  # "configuration", "trial" or "benchmark"
POINT_TAG = "harness.point"  # the configuration's varied values, as JSON (the comparison's factors)
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # the UI's model-training view
# Keys of the resolved config that one task does not use: not logged as params of that task's runs.
UNUSED_KEYS = {
    "classification": ("data.image_size", "data.spacing_mm", "data.targets", "data.label_mode", "data.negatives"),
    "detection": ("data.crop_size", "data.margin_mm"),
}
# Logged under their short names (the comparison axes), so not again under their config keys.
SHORT_NAMES = {"data.sequence": "sequence", "data.augment": "augment", "model_kwargs.backbone": "backbone"}
PATH_KEYS = ("data.root", "data.synth.out", "output_dir")  # never logged: file paths
MAX_PARAM_LENGTH = 500
EXCLUDED_EXPERIMENTS = ("benchmarks",)  # `harness bench` results: no sweep to compare
T = TypeVar("T")


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


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def trial_params(config: dict[str, Any], *, configuration: bool = False) -> dict[str, str]:
    """Params of a run, each once: ``task, model, sequence, augment, backbone, epochs``, then the rest of the resolved
    config flattened (``train.stage2_lr``, ``data.split.fold``...), without file paths and without the keys the task
    does not use. ``configuration=True``: the configuration's params (no fold, no repeat)."""
    from harness.config import trial_epochs

    detection = config["task"] == "detection"
    backbone = config["model"].removeprefix("fasterrcnn_") if detection else config["model_kwargs"].get("backbone")
    stable = {
        "task": config["task"],
        "model": config["model"],
        "sequence": config["data"]["sequence"],
        "augment": config["data"]["augment"],
        "backbone": backbone or "resnet18",
        "epochs": trial_epochs(config),
    }
    skipped = {"name", *stable, *UNUSED_KEYS[config["task"]], *SHORT_NAMES}
    if configuration:
        skipped |= {"data.split.fold", "repeat"}
    flat = {k: v for k, v in flatten(config).items() if not k.startswith(PATH_KEYS) and k not in skipped}
    return {k: str(v)[:MAX_PARAM_LENGTH] for k, v in {**stable, **flat}.items()}


def finite_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Numeric, finite metrics only (MLflow rejects NaN in some stores; a NaN AUC means 'undefined')."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(float(value)):
            out[key] = float(value)
    return out


class SweepTracking:
    """The driver's side: the experiment, the parent run, stale runs, final statuses."""

    def __init__(self, uri: str, experiment_name: str):
        self.uri = uri
        self.experiment_id = prepare_experiment(uri, experiment_name)
        self.client = _client(uri)

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


def _params(params: dict[str, str]) -> list:
    from mlflow.entities import Param

    return [Param(k, v) for k, v in params.items()]


def _metrics(metrics: dict[str, float], step: int) -> list:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, v, now, step) for k, v in metrics.items()]


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

    def log_params(self, params: dict[str, str]) -> None:
        """Params are immutable in MLflow: a resumed run already has them (same values), so they are not re-sent."""
        if not self.resumed:
            self.client.log_batch(self.run_id, params=_params(params))

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        values = finite_metrics(metrics)
        if values:
            self.client.log_batch(self.run_id, metrics=_metrics(values, step))

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


def tracking_uri_from(option: str | None) -> str:
    """The tracking URI to use: the option, else ``MLFLOW_TRACKING_URI``, else the default sqlite database."""
    return option or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


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


# --- Reading a sweep back (``harness compare``) ---------------------------------------------------------------------


class ExperimentNotFoundError(ValueError):
    """The experiment asked for (or any sweep experiment) is not in the tracking store."""


@dataclass
class RunRecord:
    """A run as ``harness compare`` needs it: plain data, no MLflow object."""

    run_id: str
    name: str
    status: str
    start_time: int = 0
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class SweepRuns:
    """The latest execution of a sweep: its experiment, its parent run and the parent's child runs."""

    experiment: str
    parent: RunRecord
    children: list[RunRecord]


def _record(run) -> RunRecord:
    return RunRecord(
        run_id=run.info.run_id,
        name=run.info.run_name or run.info.run_id,
        status=run.info.status,
        start_time=run.info.start_time or 0,
        tags=dict(run.data.tags),
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
    )


def _search(client, experiment_id: str, filter_string: str) -> list:
    """Every run matching ``filter_string``, across result pages."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _experiments(client) -> list:
    """Active experiments, newest first."""
    found, token = [], None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        found += list(page)
        token = page.token
        if not token:
            return sorted(found, key=lambda e: e.creation_time or 0, reverse=True)


def _latest_parent(client, experiment_id: str):
    """The most recently started sweep parent run of an experiment (children carry the parent tag), or None."""
    runs = _search(client, experiment_id, f"tags.`{SWEEP_TAG}` LIKE '%'")
    parents = [r for r in runs if PARENT_TAG not in r.data.tags]
    return max(parents, key=lambda r: r.info.start_time or 0, default=None)


def _find_sweep(client, name: str | None, uri: str):
    experiments = _experiments(client)
    known = ", ".join(sorted(e.name for e in experiments)) or "none"
    if name is not None:
        exp = next((e for e in experiments if e.name == name), None)
        parent = _latest_parent(client, exp.experiment_id) if exp else None
        if exp is None or parent is None:
            why = "not found" if exp is None else "holds no sweep parent run"
            raise ExperimentNotFoundError(f"experiment {name!r} {why} in {uri}; known experiments: {known}")
        return exp, parent
    for exp in experiments:
        if exp.name in EXCLUDED_EXPERIMENTS:
            continue
        parent = _latest_parent(client, exp.experiment_id)
        if parent is not None:
            return exp, parent
    raise ExperimentNotFoundError(f"no experiment with a sweep run in {uri}; known experiments: {known}")


def _check_store_exists(uri: str) -> None:
    """A sqlite store that does not exist is an error, not a new empty database left behind by a read."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise ExperimentNotFoundError(
            f"no MLflow database at {uri.removeprefix('sqlite:///')}: run a sweep here first (harness run), or give "
            "--tracking-uri"
        )


def latest_sweep_runs(uri: str, experiment: str | None) -> SweepRuns:
    """The latest parent run of ``experiment`` and its child runs.

    Args:
        uri: tracking URI.
        experiment: experiment (= sweep) name; None picks the most recently created experiment that holds a sweep
            parent run (``benchmarks`` excluded).

    Raises:
        ExperimentNotFoundError: no database, no such experiment, or it holds no sweep parent run (the message lists
            the experiments the store knows).
    """
    _check_store_exists(uri)
    client = _client(uri)
    exp, parent = _find_sweep(client, experiment, uri)
    parent_id = parent.info.run_id
    # Configurations and trials carry the sweep run's id; runs logged before configurations are its direct children.
    found = {r.info.run_id: r for r in _search(client, exp.experiment_id, f"tags.`{SWEEP_RUN_TAG}` = '{parent_id}'")}
    found |= {r.info.run_id: r for r in _search(client, exp.experiment_id, f"tags.`{PARENT_TAG}` = '{parent_id}'")}
    return SweepRuns(exp.name, _record(parent), [_record(run) for run in found.values()])


def read_artifact(uri: str, run_id: str, artifact: str, reader: Callable[[Path], T]) -> T | None:
    """``reader(local copy)`` of a run's artifact; None when the artifact is missing or cannot be downloaded."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as folder:
        try:
            path = _client(uri).download_artifacts(run_id, artifact, folder)
        except (MlflowException, OSError):
            return None
        return reader(Path(path))


def record_comparison(uri: str, parent_run_id: str, aggregates: dict[str, dict[str, float]], files: list[Path]) -> None:
    """Each configuration's aggregate metrics on its run (run id -> metrics, step 0), the report files on the parent."""
    client = _client(uri)
    for run_id, metrics in aggregates.items():
        values = finite_metrics(metrics)
        if values:
            client.log_batch(run_id, metrics=_metrics(values, step=0))
    for path in files:
        client.log_artifact(parent_run_id, str(path), artifact_path="comparison")
