"""The trial side of a sweep: the Tune trainable (one `run_training` with MLflow logging and Tune reporting attached
through the training hooks) and its data-parallel form (Ray Train's TorchTrainer inside the Tune trial).

A retried trial (``max_failures``) gets its last checkpoint back from Tune and resumes from it, continuing its own
MLflow run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from harness import provenance, tracking
from harness.config import parse_config
from harness.train.hooks import EpochInfo, Hooks

CHECKPOINT_FILES = ("last.pt", "best.pt")


class _TuneHook(Hooks):
    """After each epoch: metrics to MLflow (step = epoch), then to Tune with the epoch's checkpoint."""

    def __init__(self, run: tracking.TrialRun, checkpoints: Path):
        self.run, self.checkpoints = run, checkpoints
        self.epochs = 0

    def after_epoch(self, info: EpochInfo) -> bool:
        from ray import tune

        self.run.log_epoch(info.metrics, info.epoch)  # before Tune's checkpoint: at worst re-run, never lost
        self.epochs = info.epoch
        with tempfile.TemporaryDirectory(prefix="harness-ckpt-") as folder:
            for name in CHECKPOINT_FILES:
                if (self.checkpoints / name).is_file():
                    os.link(self.checkpoints / name, Path(folder) / name)  # Tune copies; a link costs nothing
            tune.report(_reportable(info.metrics), checkpoint=tune.Checkpoint.from_directory(folder))
        return False


def _log_history(run: tracking.TrialRun, history: list[dict]) -> None:
    """Log the resumed checkpoint's epochs that the run lacks: the trial was killed after ``last.pt`` was written
    and before that epoch's metrics reached MLflow (a kill -9 of the whole Ray session lost epoch 2 this way)."""
    for entry in history:
        metrics = {k: v for k, v in entry.items() if k != "stage"}
        run.log_epoch(metrics, int(metrics["epoch"]))


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


def _parent_of(spec: dict, track: dict) -> str:
    """A trial's run sits under its configuration's run."""
    return track["configuration_runs"][spec["configuration"]]


def _open_run(spec: dict, track: dict, config) -> tracking.TrialRun:
    """The trial's MLflow child run (found again by its trial key when retried or restored)."""
    import ray

    from harness.train.data import ensure_dataset

    tags = {
        tracking.STUDY_TAG: spec["study"],
        tracking.SWEEP_RUN_TAG: track["parent_run_id"],
        tracking.CONFIGURATION_TAG: spec["configuration"],
        tracking.KIND_TAG: "trial",
        "harness.fold": "none" if spec["fold"] is None else str(spec["fold"]),
        "harness.repeat": str(spec["repeat"]),
        "ray_node": ray.get_runtime_context().get_node_id(),
        "dataset_fingerprint": provenance.dataset_fingerprint(ensure_dataset(config.data)),
        "workers": str(spec["resources"]["workers"]),
        **track["tags"],
    }
    run = tracking.TrialRun(
        track["uri"], track["experiment_id"], _parent_of(spec, track), spec["key"], spec["run_name"], tags=tags
    )
    run.log_params(tracking.trial_params(spec["config"]))
    return run


def _close_run(run: tracking.TrialRun, result) -> int:
    """Final metrics and artifacts, then FINISHED; returns the last epoch."""
    final_step = result.history[-1]["epoch"] if result.history else 0
    run.log_metrics(result.metrics, step=final_step)
    run.log_artifacts(_artifacts(result.output_dir))
    run.end("FINISHED")
    return final_step


def train_trial(param: dict) -> None:
    """The Tune trainable: one trial of a sweep (``param["trial"]`` is a `TrialSpec` as a dict plus tracking)."""
    from ray import tune

    from harness.train.runner import run_training

    spec, track = param["trial"], param["tracking"]
    if spec["resources"]["workers"] > 1:
        return _train_data_parallel(param)
    config = parse_config(spec["config"], spec["key"])
    out = (Path(config.output_dir) / config.name).resolve()
    _restore_checkpoint(out / "checkpoints")
    run = _open_run(spec, track, config)
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
    final_step = _close_run(run, result)
    with contextlib.suppress(SystemExit):  # the scheduler's verdict after the last epoch changes nothing
        tune.report({**_reportable(result.metrics), "epoch": final_step, "finished": 1})


# ------------------------------------------------------------------------------------- data-parallel trials


class _TrainReportHook(Hooks):
    """A data-parallel worker's hook: every worker reports each epoch to Ray Train (rank 0's metrics reach Tune
    through `TuneReportCallback`); rank 0 logs to MLflow. Checkpoints are rank 0's files in the trial's output
    folder, which every worker resumes from (the sweep's storage is shared by the nodes)."""

    def __init__(self, run: tracking.TrialRun | None):
        self.run = run

    def after_epoch(self, info: EpochInfo) -> bool:
        import ray.train

        if self.run is not None:
            self.run.log_epoch(info.metrics, info.epoch)
        ray.train.report(_reportable(info.metrics))
        return False

    def after_resume(self, history: list[dict]) -> None:
        if self.run is not None:
            _log_history(self.run, history)


def _data_parallel_worker(param: dict) -> None:
    """One worker of a data-parallel trial (Ray Train has set up the torch.distributed process group)."""
    import ray.train

    from harness.train.distributed import Distributed
    from harness.train.runner import run_training

    spec, track = param["trial"], param["tracking"]
    context = ray.train.get_context()
    dist = Distributed(context.get_world_rank(), context.get_world_size())
    config = parse_config(spec["config"], spec["key"])
    run = _open_run(spec, track, config) if dist.is_main else None
    if run is not None:
        run.set_tags({"world_size": str(dist.world_size)})
    try:
        result = run_training(config, hooks=[_TrainReportHook(run)], resume=True, progress=False, distributed=dist)
    except BaseException:
        if run is not None:
            run.end("FAILED")  # a scheduler stop ends the run as KILLED from the trial's driver side
        raise
    final_step = _close_run(run, result) if run is not None else (result.history[-1]["epoch"] if result.history else 0)
    ray.train.report({**_reportable(result.metrics), "epoch": final_step, "finished": 1})


def _train_data_parallel(param: dict) -> None:
    """A trial over several workers: Ray Train's TorchTrainer (gloo on CPU, nccl on GPU) inside the Tune trial."""
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    spec, track = param["trial"], param["tracking"]
    res = spec["resources"]
    per_worker = {"CPU": res["cpus"], **({"GPU": res["gpus"]} if res["gpus"] else {})}
    out = Path(spec["config"]["output_dir"])
    trainer = TorchTrainer(
        _data_parallel_worker,
        train_loop_config=param,
        scaling_config=ray.train.ScalingConfig(
            num_workers=res["workers"], use_gpu=res["gpus"] > 0, resources_per_worker=per_worker
        ),
        run_config=ray.train.RunConfig(
            storage_path=str(out.parent / "train"), name=spec["key"], callbacks=[TuneReportCallback()]
        ),
    )
    try:
        trainer.fit()
    except SystemExit:
        tracking.end_trial_run(track["uri"], track["experiment_id"], _parent_of(spec, track), spec["key"], "KILLED")
        raise
    except BaseException:
        tracking.end_trial_run(track["uri"], track["experiment_id"], _parent_of(spec, track), spec["key"], "FAILED")
        raise


def _artifacts(out: Path) -> list[tuple[Path, str | None]]:
    """What a trial leaves in MLflow: plots, predictions and a detector's val detections (pseudonyms), a few PNGs, the
    config, the best model."""
    names = ("metrics.json", "history.csv", "predictions.csv", "detections.json.gz", "config.yaml")
    files: list[tuple[Path, str | None]] = [(out / name, None) for name in (*names, "roc.png", "pr.png", "froc.png")]
    for folder in ("attention", "detections"):
        files += [(png, folder) for png in sorted((out / folder).glob("*.png"))[:6]]
    files.append((out / "checkpoints" / "best.pt", "checkpoints"))
    return files
