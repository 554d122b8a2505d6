"""Reading a sweep back for ``harness compare``: its latest parent run, the runs under it, their artifacts."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from .store import PARENT_TAG, SWEEP_RUN_TAG, SWEEP_TAG, _client, _search

EXCLUDED_EXPERIMENTS = ("benchmarks",)  # `harness bench` results: no sweep to compare
T = TypeVar("T")


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
