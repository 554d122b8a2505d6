"""The driver side of a sweep: the Ray cluster, one Tuner per study (new or restored), the live table's events.

A resumed sweep (``--resume``) restores each study's Tuner, so finished trials do not run again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.sweep.schema import SweepError

from .trial import train_trial


@dataclass
class TrialOutcome:
    """How one trial ended, as the driver sees it."""

    key: str
    run_name: str
    study: str
    status: str  # FINISHED, KILLED (stopped by the scheduler), FAILED
    epochs: int = 0
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def connect(address: str | None, num_cpus: int | None = None) -> dict[str, float]:
    """Start a local Ray (``address`` None) or join a cluster; returns the cluster's total resources."""
    import ray

    # Tune warns on every frequent checkpoint sync; per-epoch checkpoints of small models are the point here. The
    # live table replaces Tune's own console output.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune's own Ctrl-C handler stops the running trials as if they had ended (TERMINATED), so a resume would not
    # continue them. Without it, Ctrl-C interrupts fit() at once; the saved experiment state still lists them as
    # running, and --resume continues them from their checkpoints.
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, **kwargs)
    return dict(ray.cluster_resources())


def disconnect() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def check_resources(studies, cluster: dict[str, float], source: str) -> None:
    """Fail before any trial starts when a study asks for more than the cluster has (Tune would wait forever)."""
    for plan in studies:
        res, where = plan.study.resources, f"{source}: studies[{plan.index}].resources"
        if res.gpus > 0 and cluster.get("GPU", 0) == 0:
            raise SweepError(f"{where}.gpus: {res.gpus} GPU per trial, but the Ray cluster has no GPU; set gpus: 0")
        if res.gpus * res.workers > cluster.get("GPU", 0) > 0 and res.gpus >= 1:
            raise SweepError(
                f"{where}.gpus: {res.gpus * res.workers:g} GPUs per trial; the cluster has {cluster['GPU']:g}"
            )
        if res.cpus * res.workers > cluster.get("CPU", 0):
            raise SweepError(
                f"{where}.cpus: {res.cpus * res.workers:g} CPUs per trial; the cluster has {cluster.get('CPU', 0):g}"
            )


def _trainable(resources):
    from ray import tune

    if resources.workers > 1:
        # The workers ask Ray for their own CPUs and GPUs; the trial itself only waits for them. A Tune trial cannot
        # ask for nothing, so it asks for 1 MiB of memory: it holds no CPU that its workers need.
        return tune.with_resources(train_trial, {"cpu": 0, "gpu": 0, "memory": 2**20})
    return tune.with_resources(train_trial, {"cpu": resources.cpus, "gpu": resources.gpus})


def _scheduler(plan):
    from ray.tune.schedulers import ASHAScheduler

    s = plan.study.scheduler
    if s.type == "none":
        return None
    return ASHAScheduler(
        metric=s.metric,
        mode=s.mode,
        grace_period=s.grace_period,
        reduction_factor=s.reduction_factor,
        max_t=plan.max_epochs + 1,
    )


def _trial_key(trial) -> str:
    return trial.config["trial"]["key"]


def _tuner(plan, storage: Path, tracking_info: dict, callbacks: list, resume: bool):
    """A new Tuner for a study, or the restored one (``resume`` and Tune state on disk)."""
    from ray import tune

    study = plan.study
    path = storage / study.name
    trainable = _trainable(study.resources)
    if resume and tune.Tuner.can_restore(str(path)):
        return tune.Tuner.restore(str(path), trainable=trainable, resume_errored=True)
    if path.exists():
        shutil.rmtree(path)  # a study that never saved Tune state: start it cleanly
    resources = study.resources.model_dump()
    trials = [
        {
            "key": t.key,
            "run_name": t.run_name,
            "study": t.study,
            "point": t.point,
            "configuration": t.configuration,
            "fold": t.fold,
            "repeat": t.repeat,
            "config": t.config,
            "resources": resources,
        }
        for t in plan.trials
    ]
    return tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search(trials), "tracking": tracking_info},
        tune_config=tune.TuneConfig(
            scheduler=_scheduler(plan),
            max_concurrent_trials=study.max_concurrent or None,
            trial_name_creator=_trial_key,
            trial_dirname_creator=_trial_key,
        ),
        run_config=tune.RunConfig(
            name=study.name,
            storage_path=str(storage),
            verbose=0,
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=study.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )


def run_study(plan, storage: Path, tracking_info: dict, board, resume: bool) -> list[TrialOutcome]:
    """Run (or resume) one study's trials with Ray Tune; returns how each trial ended."""
    tuner = _tuner(plan, storage, tracking_info, [_board_callback(board)], resume)
    grid = tuner.fit()
    if _interrupted(grid):
        # After Ctrl-C, fit() returns normally with the study's state saved: stop here, --resume continues.
        raise KeyboardInterrupt
    outcomes = []
    for result in grid:
        spec = result.config["trial"]
        metrics = result.metrics or {}
        if result.error is not None:
            status, error = "FAILED", _reason(result.error)
        elif metrics.get("finished"):
            status, error = "FINISHED", None
        else:
            status, error = "KILLED", None
        outcomes.append(
            TrialOutcome(
                spec["key"], spec["run_name"], spec["study"], status, int(metrics.get("epoch", 0) or 0), error, metrics
            )
        )
    _drop_ended_checkpoints(grid)
    return outcomes


def _drop_ended_checkpoints(grid) -> None:
    """One copy of each checkpoint per trial: a trial that ended (finished, or stopped by the scheduler) is never
    resumed, so Tune's copy of its checkpoint and its ``last.pt`` go; ``best.pt`` (the model, logged to MLflow) stays
    in its output folder. A failed trial keeps both: ``--resume`` restarts it from Tune's checkpoint."""
    for result in grid:
        if result.error is not None or result.config is None:
            continue
        checkpoints = [result.checkpoint] + [c for c, _ in result.best_checkpoints or []]
        for checkpoint in {c.path: c for c in checkpoints if c is not None}.values():
            with contextlib.suppress(OSError):  # already gone (a resumed sweep's finished trials)
                checkpoint.filesystem.delete_dir(checkpoint.path)
        config = result.config["trial"]["config"]
        (Path(config["output_dir"]) / config["name"] / "checkpoints" / "last.pt").unlink(missing_ok=True)


def _interrupted(grid) -> bool:
    """Did fit() return with trials neither ended nor failed (Ctrl-C)? Tune's ResultGrid does not say so itself;
    its experiment analysis holds each trial's status."""
    analysis = getattr(grid, "_experiment_analysis", None)
    trials = getattr(analysis, "trials", None) or []
    unfinished = [t for t in trials if t.status not in ("TERMINATED", "ERROR")]
    return bool(unfinished) or any(result.config is None for result in grid)


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    cause = [line for line in text if line.strip() and not line.startswith((" ", "Traceback"))]
    return (cause[-1] if cause else type(error).__name__)[:300]


_BOARDS: dict[int, Any] = {}  # the live tables of this driver process; Tune pickles its callbacks, not these


def _board(board_id: int):
    """Looked up by a module-level function, so that pickling the callback does not pickle the table."""
    return _BOARDS.get(board_id)


def _board_callback(board):
    """A `ray.tune.Callback` that feeds the live table from Tune's driver-side events."""
    from ray.tune import Callback

    _BOARDS[id(board)] = board

    class BoardCallback(Callback):
        def __init__(self, board_id: int):
            self.board_id = board_id

        def _update(self, trial, **kwargs) -> None:
            board = _board(self.board_id)
            if board is not None:
                board.update(_trial_key(trial), **kwargs)

        def on_trial_start(self, iteration, trials, trial, **info):
            self._update(trial, state="RUNNING")

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self._update(trial, state="RUNNING", result=result)

        def on_trial_complete(self, iteration, trials, trial, **info):
            result = trial.last_result or {}
            self._update(trial, state="FINISHED" if result.get("finished") else "KILLED")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._update(trial, state="FAILED")

        def on_trial_recover(self, iteration, trials, trial, **info):
            self._update(trial, state="RETRYING")

    return BoardCallback(id(board))
