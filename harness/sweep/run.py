"""``harness run``: a sweep from plan to results (data first, then MLflow, then Ray, study by study).

Folder of a sweep: ``<storage>/<name>/`` holds ``sweep.json`` (the parent run, for ``--resume``), one Ray Tune
experiment per study, and ``outputs/<trial key>/`` (each trial's checkpoints, predictions and plots).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console

from harness import provenance, tracking
from harness.config import DataConfig
from harness.tune import TrialOutcome, check_resources, connect, disconnect, run_study

from .plan import SweepError, SweepPlan
from .view import TrialBoard

log = logging.getLogger(__name__)


@dataclass
class SweepOutcome:
    """The end of a sweep: every trial's outcome and where the records are."""

    name: str
    tracking_uri: str
    experiment: str
    parent_run_id: str
    trials: list[TrialOutcome]
    experiment_id: str = ""

    @property
    def ui_path(self) -> str:
        """The MLflow UI page of the sweep's configurations, one row each with its aggregate metrics, best pooled OOF
        AUC first (the experiment's `tracking.CONFIGURATIONS_VIEW`), in the UI's model-training view (the UI opens in
        its GenAI view otherwise: its toggle is kept per browser)."""
        query = f"viewStateShareKey={tracking.CONFIGURATIONS_VIEW}&workflowType=machine_learning"
        return f"/#/experiments/{self.experiment_id}/runs?{query}"

    @property
    def failed(self) -> list[TrialOutcome]:
        return [t for t in self.trials if t.status == "FAILED"]


def _state_path(plan: SweepPlan) -> Path:
    return plan.settings.storage / plan.settings.name / "sweep.json"


def _write_state(plan: SweepPlan, state: dict) -> None:
    path = _state_path(plan)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".sweep.json.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path)


def _prepare_state(plan: SweepPlan, resume: bool, fresh: bool) -> dict | None:
    """The saved state to resume from (None for a new sweep); refuses to mix a new sweep into an old folder."""
    folder = plan.settings.storage / plan.settings.name
    path = _state_path(plan)
    if resume:
        if not path.is_file():
            raise SweepError(f"nothing to resume: {path} does not exist (run without --resume to start the sweep)")
        return json.loads(path.read_text())
    if folder.exists() and not fresh:
        raise SweepError(
            f"sweep {plan.settings.name!r} already has results in {folder}: --resume continues it, --fresh "
            "deletes that folder and starts over (MLflow keeps the earlier runs), or rename the sweep"
        )
    return None  # run_sweep clears the folder for --fresh once the cluster has been checked


def prepare_data(plan: SweepPlan, console: Console) -> dict[str, str]:
    """Every dataset the trials use, generated once here (synthetic specs) before any trial starts.

    Returns dataset folder -> fingerprint (tagged on the runs).
    """
    from harness.train.data import ensure_dataset

    fingerprints: dict[str, str] = {}
    for trial in plan.trials:
        data = DataConfig.model_validate(trial.config["data"])
        key = json.dumps(trial.config["data"].get("synth") or trial.config["data"].get("root"), sort_keys=True)
        if key in fingerprints:
            continue
        if data.synth is not None:
            console.print(
                f"[dim]dataset for {trial.study}: synthetic cohort {data.synth.patients} patients, "
                f"{data.synth.centers} centres (generated once when missing)"
            )
        root = ensure_dataset(data)
        fingerprints[key] = provenance.dataset_fingerprint(root)
    return fingerprints


def run_sweep(
    plan: SweepPlan,
    *,
    tracking_uri: str,
    address: str | None = None,
    resume: bool = False,
    fresh: bool = False,
    console: Console | None = None,
    num_cpus: int | None = None,
) -> SweepOutcome:
    """Run every study of ``plan``; returns the outcomes (failed trials included: the caller decides the exit code).

    What can be refused is refused before anything is written: the sweep folder's state first, then the cluster's
    resources (Ray is connected and checked), and only then is the folder cleared (``fresh``), the data generated
    and the MLflow experiment created.
    """
    console = console or Console()
    state = _prepare_state(plan, resume, fresh)
    cluster = connect(address, num_cpus)
    try:
        check_resources(plan.studies, cluster, str(plan.source))
        folder = plan.settings.storage / plan.settings.name
        if fresh and folder.exists():
            shutil.rmtree(folder)
        prepare_data(plan, console)
        return _run_tracked(plan, state, tracking_uri, console)
    finally:
        disconnect()


def _run_tracked(plan: SweepPlan, state: dict | None, tracking_uri: str, console: Console) -> SweepOutcome:
    """The MLflow parent and configuration runs, then the studies on the connected Ray, then honest end states."""
    settings = plan.settings
    sweep_tracking = tracking.SweepTracking(tracking_uri, settings.name)
    tags = {"harness.version": provenance.harness_version(), "git_commit": provenance.git_commit()}
    parent = sweep_tracking.parent_run(
        settings.name,
        state["parent_run_id"] if state else None,
        tags,
        {"studies": ",".join(s.study.name for s in plan.studies), "trials": str(len(plan.trials))},
    )
    if state:
        stale = sweep_tracking.mark_stale(parent, status="KILLED")
        if stale:
            console.print(
                f"[yellow]marked {len(stale)} runs left RUNNING by the interrupted sweep as KILLED; "
                "their trials continue them"
            )
    _write_state(
        plan,
        {
            "parent_run_id": parent,
            "tracking_uri": tracking_uri,
            "experiment_id": sweep_tracking.experiment_id,
            "status": "RUNNING",
        },
    )
    configuration_runs = sweep_tracking.configuration_runs(parent, _configuration_specs(plan, tags))
    tracking_info = {
        "uri": tracking_uri,
        "experiment_id": sweep_tracking.experiment_id,
        "parent_run_id": parent,
        "configuration_runs": configuration_runs,
        "tags": {tracking.SWEEP_TAG: settings.name, **tags},
    }
    outcomes: list[TrialOutcome] = []
    board = TrialBoard(console)
    for study in plan.studies:
        for trial in study.trials:
            board.add(trial.key, trial.run_name, study.study.scheduler.metric, study.study.scheduler.mode)
    storage = settings.storage / settings.name
    interrupted = False
    try:
        with _remember_ctrl_c() as pressed, board:
            for study in plan.studies:
                outcomes += run_study(study, storage, tracking_info, board, resume=state is not None)
                if pressed.is_set():  # Ctrl-C whose KeyboardInterrupt something on its way up swallowed
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        _finish(plan, sweep_tracking, parent, configuration_runs, outcomes, interrupted)
    return SweepOutcome(settings.name, tracking_uri, settings.name, parent, outcomes, sweep_tracking.experiment_id)


def _configuration_specs(plan: SweepPlan, tags: dict[str, str]) -> dict[str, dict]:
    """What the MLflow run of each configuration is created with: its name, params and tags."""
    specs = {}
    for key, trials in plan.configurations.items():
        first = trials[0]
        specs[key] = {
            "name": first.configuration_name,
            "params": tracking.trial_params(first.config, configuration=True)
            | {"folds": str(max(1, len({t.fold for t in trials}))), "repeats": str(len({t.repeat for t in trials}))},
            "tags": {
                **tags,
                tracking.SWEEP_TAG: plan.settings.name,
                tracking.STUDY_TAG: first.study,
                tracking.POINT_TAG: json.dumps(first.point, sort_keys=True, default=str),
            },
        }
    return specs


@contextlib.contextmanager
def _remember_ctrl_c():
    """Ctrl-C raises KeyboardInterrupt as always, and is also remembered (the yielded event): a library that catches
    the exception on its way up through Ray Tune's loop must not turn an interrupted sweep into a finished one."""
    pressed = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield pressed
        return
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum, frame):
        pressed.set()
        signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, previous)


def _finish(
    plan: SweepPlan,
    sweep_tracking,
    parent: str,
    configuration_runs: dict[str, str],
    outcomes: list[TrialOutcome],
    interrupted: bool,
) -> None:
    """Honest statuses: no run stays RUNNING; a configuration (and the parent) is FINISHED only when every one of its
    trials ran to its end."""
    left = sweep_tracking.mark_stale(parent, status="KILLED" if interrupted else "FAILED")
    by_key = {t.key: t.status for t in outcomes}
    for key, trials in plan.configurations.items():
        statuses = [by_key.get(t.key) for t in trials]
        done = all(s in ("FINISHED", "KILLED") for s in statuses)  # KILLED: stopped early by the scheduler
        status = "KILLED" if interrupted and not done else ("FINISHED" if done else "FAILED")
        sweep_tracking.end_run(configuration_runs[key], status)
    if left:
        log.warning("runs left RUNNING, marked %s: %s", "KILLED" if interrupted else "FAILED", ", ".join(left))
    complete = len(outcomes) == len(plan.trials) and not any(t.status == "FAILED" for t in outcomes)
    status = "KILLED" if interrupted else ("FINISHED" if complete else "FAILED")
    counts = {
        f"trials_{s.lower()}": float(sum(t.status == s for t in outcomes)) for s in ("FINISHED", "KILLED", "FAILED")
    }
    sweep_tracking.end_parent(parent, status, counts)
    state = json.loads(_state_path(plan).read_text())
    state.update(status=status, trials=[asdict(t) for t in outcomes])
    _write_state(plan, state)
