"""Every Ray call of the harness (DESIGN.md §4): the cluster, the Tune trainable, the Tuner of each study.

A trial is one `run_training` with two hooks attached: MLflow logging (harness.tracking) and Tune reporting with a
checkpoint after every epoch. A retried trial (``max_failures``) gets its last checkpoint back from Tune and
resumes from it; a resumed sweep (``--resume``) restores each study's Tuner, so finished trials do not run again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import tracking
from harness.config import parse_config
from harness.sweep import SweepError
from harness.train.hooks import EpochInfo, Hooks

log = logging.getLogger(__name__)

CHECKPOINT_FILES = ("last.pt", "best.pt")


# ----------------------------------------------------------------------------------------------------- the trial


class _TuneHook(Hooks):
    """After each epoch: metrics to MLflow (step = epoch), then to Tune with the epoch's checkpoint."""

    def __init__(self, run: tracking.TrialRun, checkpoints: Path):
        self.run, self.checkpoints = run, checkpoints
        self.epochs = 0

    def after_epoch(self, info: EpochInfo) -> bool:
        from ray import tune

        self.run.log_metrics(info.metrics, step=info.epoch)
        self.epochs = info.epoch
        with tempfile.TemporaryDirectory(prefix="harness-ckpt-") as folder:
            for name in CHECKPOINT_FILES:
                if (self.checkpoints / name).is_file():
                    os.link(self.checkpoints / name, Path(folder) / name)  # Tune copies; a link costs nothing
            tune.report(_reportable(info.metrics), checkpoint=tune.Checkpoint.from_directory(folder))
        return False


def _reportable(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _restore_checkpoint(checkpoints: Path) -> bool:
    """Put the Tune checkpoint's files (a retried or restored trial, maybe on another node) where training resumes."""
    from ray import tune

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return False
    checkpoints.mkdir(parents=True, exist_ok=True)
    with checkpoint.as_directory() as folder:
        for name in CHECKPOINT_FILES:
            source = Path(folder) / name
            if source.is_file():
                tmp = checkpoints / f".{name}.restore"
                shutil.copyfile(source, tmp)
                os.replace(tmp, checkpoints / name)
    return True


def _fault_injection(spec: dict, out: Path, epochs_done: int) -> None:
    """Test-only faults: ``HARNESS_TEST_FAULT=<trial key>:raise|kill[,...]`` fails a trial once, after epoch 1."""
    for fault in os.environ.get("HARNESS_TEST_FAULT", "").split(","):
        key, _, kind = fault.partition(":")
        marker = out / f".fault-{kind}-done"
        if key != spec["key"] or epochs_done < 1 or marker.exists():
            continue
        marker.touch()
        if kind == "kill":
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"injected fault in {key} (HARNESS_TEST_FAULT)")


class _FaultHook(Hooks):
    def __init__(self, spec: dict, out: Path):
        self.spec, self.out = spec, out

    def after_epoch(self, info: EpochInfo) -> bool:
        _fault_injection(self.spec, self.out, info.epoch)
        return False


def train_trial(param: dict) -> None:
    """The Tune trainable: one trial of a sweep (``param["trial"]`` is a `TrialSpec` as a dict plus tracking)."""
    from ray import tune

    from harness.train.runner import run_training

    spec, track = param["trial"], param["tracking"]
    config = parse_config(spec["config"], spec["key"])
    out = (Path(config.output_dir) / config.name).resolve()
    _restore_checkpoint(out / "checkpoints")
    import ray

    from harness.train.data import ensure_dataset

    tags = {
        tracking.STUDY_TAG: spec["study"],
        "ray_node": ray.get_runtime_context().get_node_id(),
        "dataset_fingerprint": tracking.dataset_fingerprint(ensure_dataset(config.data)),
        **track["tags"],
    }
    run = tracking.TrialRun(track["uri"], track["experiment_id"], track["parent_run_id"], spec["key"],
                            spec["run_name"], tags=tags)  # fmt: skip
    run.log_params(tracking.trial_params(spec["config"], spec["point"]))
    hooks: list[Hooks] = [_TuneHook(run, out / "checkpoints")]
    if os.environ.get("HARNESS_TEST_FAULT"):
        hooks.append(_FaultHook(spec, out))
    try:
        result = run_training(config, hooks=hooks, resume=True, progress=False)
    except SystemExit:  # tune.report raises it when the scheduler stops the trial
        run.end("KILLED")
        raise
    except BaseException:
        run.end("FAILED")
        raise
    final_step = result.history[-1]["epoch"] if result.history else 0
    run.log_metrics(result.metrics, step=final_step)
    run.log_artifacts(_artifacts(result.output_dir))
    run.end("FINISHED")
    with contextlib.suppress(SystemExit):  # the scheduler's verdict after the last epoch changes nothing
        tune.report({**_reportable(result.metrics), "epoch": final_step, "finished": 1})


def _artifacts(out: Path) -> list[tuple[Path, str | None]]:
    """What a trial leaves in MLflow: plots, predictions (pseudonyms), a few PNGs, the config, the best model."""
    files: list[tuple[Path, str | None]] = [
        (out / name, None)
        for name in ("metrics.json", "history.csv", "predictions.csv", "config.yaml", "roc.png", "pr.png", "froc.png")
    ]
    for folder in ("attention", "detections"):
        files += [(png, folder) for png in sorted((out / folder).glob("*.png"))[:6]]
    files.append((out / "checkpoints" / "best.pt", "checkpoints"))
    return files


# ----------------------------------------------------------------------------------------------------- the driver


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
            raise SweepError(f"{where}.gpus: {res.gpus * res.workers:g} GPUs per trial; the cluster has "
                             f"{cluster['GPU']:g}")  # fmt: skip
        if res.cpus * res.workers > cluster.get("CPU", 0):
            raise SweepError(f"{where}.cpus: {res.cpus * res.workers:g} CPUs per trial; the cluster has "
                             f"{cluster.get('CPU', 0):g}")  # fmt: skip
        if res.workers > 1:
            raise SweepError(f"{where}.workers: data-parallel trials are not implemented yet; use workers: 1")


def _trainable(resources):
    from ray import tune

    return tune.with_resources(train_trial, {"cpu": resources.cpus, "gpu": resources.gpus})


def _scheduler(plan):
    from ray.tune.schedulers import ASHAScheduler

    s = plan.study.scheduler
    if s.type == "none":
        return None
    return ASHAScheduler(metric=s.metric, mode=s.mode, grace_period=s.grace_period,
                         reduction_factor=s.reduction_factor, max_t=plan.max_epochs + 1)  # fmt: skip


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
    trials = [{"key": t.key, "run_name": t.run_name, "study": t.study, "point": t.point, "config": t.config}
              for t in plan.trials]  # fmt: skip
    return tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search(trials), "tracking": tracking_info},
        tune_config=tune.TuneConfig(scheduler=_scheduler(plan), max_concurrent_trials=study.max_concurrent or None,
                                    trial_name_creator=_trial_key, trial_dirname_creator=_trial_key),
        run_config=tune.RunConfig(
            name=study.name, storage_path=str(storage), verbose=0, callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=study.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )  # fmt: skip


def run_study(plan, storage: Path, tracking_info: dict, board, resume: bool) -> list[TrialOutcome]:
    """Run (or resume) one study's trials with Ray Tune; returns how each trial ended."""
    tuner = _tuner(plan, storage, tracking_info, [_board_callback(board)], resume)
    grid = tuner.fit()
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
        outcomes.append(TrialOutcome(spec["key"], spec["run_name"], spec["study"], status,
                                     int(metrics.get("epoch", 0) or 0), error, metrics))  # fmt: skip
    return outcomes


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


def wait_for_nodes(count: int, timeout_s: float = 60.0) -> int:
    """Wait until ``count`` Ray nodes are alive (a cluster still starting); returns how many are."""
    import ray

    deadline = time.monotonic() + timeout_s
    alive = 0
    while time.monotonic() < deadline:
        alive = sum(1 for node in ray.nodes() if node.get("Alive"))
        if alive >= count:
            break
        time.sleep(1.0)
    return alive
