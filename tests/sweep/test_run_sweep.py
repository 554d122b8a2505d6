"""Sweeps end to end on a local Ray and a real MLflow (sqlite, or a loopback `mlflow server`), on the tiny dataset
(its DICOM headers carry marker patient names and ids, which must never reach MLflow).

Slow: each sweep starts Ray and trains small classifiers for real.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import psutil
import pydicom
import pytest
import torch
import yaml
from mlflow import MlflowClient

from harness.sweep import SweepError, plan_sweep
from harness.sweep.run import run_sweep
from harness.tracking import CONFIGURATION_TAG, KIND_TAG, PARENT_TAG, SWEEP_TAG, TRIAL_TAG, default_tracking_uri
from tests.datasets.minidata import write_dataset

pytestmark = pytest.mark.slow
HARNESS = str(Path(sys.executable).parent / "harness")


PATIENT_NAME, ID_PREFIX = "ZZMARKER^PATIENT", "ZZID1234"  # markers in every DICOM header: never in MLflow


def marked_cohort(root: Path) -> Path:
    """The tiny dataset with PatientID ZZID12341.. and PatientName ZZMARKER^PATIENT in every DICOM header."""
    patients = {
        f"{ID_PREFIX}{i}": (center, lnm) for i, (center, lnm) in enumerate([("1", 1), ("1", 0), ("2", 1), ("2", 0)], 1)
    }
    write_dataset(root, patients)
    for path in (root / "dicom").rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.PatientName = PATIENT_NAME
        ds.save_as(path, enforce_file_format=True)
    return root


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return marked_cohort(tmp_path_factory.mktemp("sweeps") / "cohort-zz")


def stored_bytes(path: Path) -> list[tuple[str, bytes]]:
    """(name, bytes) of a file, and of each member when it is a zip (a torch checkpoint is a zip of pickles)."""
    items = [(str(path), path.read_bytes())]
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            items += [(f"{path}:{member}", archive.read(member)) for member in archive.namelist()]
    return items


def assert_no_path_or_patient_in_mlflow(folder: Path, root: Path) -> None:
    """The whole MLflow store (database and every artifact, the checkpoints' pickled configs included) holds neither
    the data folder's path nor a DICOM PatientName or PatientID (issue 13, item 5)."""
    store = sorted(folder.glob("mlflow.db*")) + [p for p in (folder / "mlartifacts").rglob("*") if p.is_file()]
    logged = {p.name for p in store}
    assert {"mlflow.db", "config.yaml", "best.pt", "predictions.csv"} <= logged and "last.pt" not in logged
    needles = [str(root).encode(), PATIENT_NAME.split("^")[0].encode(), ID_PREFIX.encode()]
    found = [(name, n.decode()) for p in store for name, data in stored_bytes(p) for n in needles if n in data]
    assert not found, "\n".join(f"{needle} in {name}" for name, needle in found)
    config = torch.load(next(p for p in store if p.name == "best.pt"), weights_only=True)["config"]
    assert config["data"]["root"] == "<data>" and config["output_dir"] == "<output>"


def sweep_file(tmp_path: Path, root: Path, name: str = "tiny", epochs: int = 3, **study) -> dict:
    """Four classifier trials (2 augmentation sets x 2 learning rates) on the tiny dataset."""
    return {
        "name": name,
        "storage": str(tmp_path / "runs"),
        "studies": [
            {
                "name": "cls",
                "task": "classification",
                "model": "wu2020",
                "model_kwargs": {"width": 16},
                "data": {"root": str(root), "split": {"val_centers": ["2"]}},
                "train": {"stage1_epochs": 0, "stage2_epochs": epochs, "stage2_lr": 1e-3, "batch_size": 4},
                "n_boot": 100,
                "grid": {"augment": ["none", "flip"], "train.stage2_lr": [1e-3, 3e-4]},
                "resources": {"cpus": 1},
                "max_failures": 2,
                **study,
            }
        ],
    }


def children(uri: str, experiment: str, kind: str = "trial") -> tuple[list, list]:
    """(parent runs, trial runs) of an experiment; ``kind="configuration"``: (parent runs, configuration runs)."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if PARENT_TAG not in r.data.tags]
    return parents, [r for r in runs if r.data.tags.get(KIND_TAG) == kind]


def epoch_steps(uri: str, run_id: str) -> list[int]:
    return sorted(m.step for m in MlflowClient(uri).get_metric_history(run_id, "train_loss"))


def test_sweep_with_a_raising_and_a_killed_trial_retries_them_from_checkpoints(root, tmp_path, monkeypatch):
    # Ray's workers inherit the driver's environment when the local Ray starts.
    monkeypatch.setenv("HARNESS_TEST_FAULT", "cls-001:raise,cls-002:kill")
    uri = default_tracking_uri(tmp_path)
    plan = plan_sweep(sweep_file(tmp_path, root), "sweep.yaml")
    outcome = run_sweep(plan, tracking_uri=uri, num_cpus=2)
    assert [t.status for t in outcome.trials] == ["FINISHED"] * 4, [t.error for t in outcome.trials]

    parents, runs = children(uri, "tiny")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED" and parents[0].data.tags[SWEEP_TAG] == "tiny"
    assert sorted(r.data.tags[TRIAL_TAG] for r in runs) == ["cls-000", "cls-001", "cls-002", "cls-003"]  # no dupes
    by_key = {r.data.tags[TRIAL_TAG]: r for r in runs}
    _, configurations = children(uri, "tiny", "configuration")
    configuration_of = {r.data.tags[CONFIGURATION_TAG]: r for r in configurations}
    assert sorted(configuration_of) == ["cls-000", "cls-001", "cls-002", "cls-003"]
    assert all(r.info.status == "FINISHED" for r in configurations)
    assert {r.data.tags[PARENT_TAG] for r in configurations} == {parents[0].info.run_id}
    specs = {t.key: t for t in plan.trials}
    for trial in outcome.trials:
        run = by_key[trial.key]
        assert run.info.status == "FINISHED" and run.info.run_name == trial.run_name
        assert run.data.tags[PARENT_TAG] == configuration_of[specs[trial.key].configuration].info.run_id  # nested
        params = run.data.params
        assert params["task"] == "classification" and params["model"] == "wu2020" and params["epochs"] == "3"
        assert params["augment"] == specs[trial.key].point["augment"] and "data.augment" not in params  # once
        assert not any(k.startswith("point.") for k in params) and "data.image_size" not in params  # task's only
        assert float(params["train.stage2_lr"]) in (1e-3, 3e-4) and params["train.batch_size"] == "4"
        assert not any("/" in v for v in [*params.values(), *run.data.tags.values()])  # no file paths
        for key in ("val_auc", "val_auc_ci_low", "val_auc_ci_high", "val_sensitivity", "val_specificity"):
            assert run.data.metrics[key] == pytest.approx(trial.metrics[key]), key  # what the trial reported
        # Retried from the checkpoint of epoch 1: each epoch logged once (a restart from scratch repeats epoch 1).
        assert epoch_steps(uri, run.info.run_id) == [1, 2, 3], trial.key
        assert run.data.tags["dataset_fingerprint"] and run.data.tags["git_commit"]
        artifacts = {a.path for a in MlflowClient(uri).list_artifacts(run.info.run_id)}
        assert {"predictions.csv", "roc.png", "config.yaml", "metrics.json", "checkpoints"} <= artifacts
    outputs = tmp_path / "runs" / "tiny" / "outputs"
    assert (outputs / "cls-001" / ".fault-raise-done").exists() and (outputs / "cls-002" / ".fault-kill-done").exists()
    assert_no_path_or_patient_in_mlflow(tmp_path, root)
    # One copy of each checkpoint per finished trial: its best.pt; no last.pt, no Tune checkpoint left (issue 13, 8).
    stored = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "runs").rglob("*.pt"))
    assert stored == [f"runs/tiny/outputs/cls-00{i}/checkpoints/best.pt" for i in range(4)], stored
    assert not [p for p in (tmp_path / "runs").rglob("checkpoint_*") if p.is_dir()]


def test_a_trial_that_keeps_failing_is_named_and_the_others_finish(root, tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(
        yaml.safe_dump(sweep_file(tmp_path, root, epochs=2, max_failures=0, grid={"augment": ["none", "flip"]}))
    )
    uri = default_tracking_uri(tmp_path)
    env = {**os.environ, "HARNESS_TEST_FAULT": "cls-000:raise"}
    result = subprocess.run(
        [HARNESS, "run", str(path), "--tracking-uri", uri, "--num-cpus", "2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1 trial(s) failed" in result.stdout and "injected fault in cls-000" in result.stdout
    assert "cls-001" not in result.stdout.split("failed:")[1]  # only the failed one is named
    parents, runs = children(uri, "tiny")
    status = {r.data.tags[TRIAL_TAG]: r.info.status for r in runs}
    assert status == {"cls-000": "FAILED", "cls-001": "FINISHED"} and parents[0].info.status == "FAILED"
    # The configurations carry their status and, once the comparison ran, their aggregates; the report is attached.
    _, configurations = children(uri, "tiny", "configuration")
    by_key = {r.data.tags[CONFIGURATION_TAG]: r for r in configurations}
    assert by_key["cls-000"].info.status == "FAILED" and by_key["cls-001"].info.status == "FINISHED"
    assert "oof_auc" in by_key["cls-001"].data.metrics and "oof_auc" not in by_key["cls-000"].data.metrics
    client = MlflowClient(uri)
    attached = {a.path for a in client.list_artifacts(parents[0].info.run_id, "comparison")}
    assert attached == {"comparison/comparison.html", "comparison/comparison.md"}
    assert "left out of paired tests: none" in result.stdout  # the failed configuration is named


def test_a_gpu_study_without_a_gpu_fails_before_any_trial(root, tmp_path):
    uri = default_tracking_uri(tmp_path)
    plan = plan_sweep(sweep_file(tmp_path, root, resources={"cpus": 1, "gpus": 0.25}), "sweep.yaml")
    with pytest.raises(SweepError, match=r"studies\[0\].resources.gpus: 0.25 GPU per trial"):
        run_sweep(plan, tracking_uri=uri, num_cpus=2)
    # Refused before anything was written: no MLflow database, no sweep folder, so the corrected file just runs.
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()


def _kill_process_tree(driver: subprocess.Popen) -> None:
    """SIGKILL the driver and every process of the Ray it started, as a crash would, and wait until all are gone.

    Ray's trial workers run in process groups of their own, so killing the driver's group alone left a worker
    that went on for a few seconds and wrote a checkpoint after the resumed driver had started: the test then
    interrupted that driver while it was still importing torch (CI, 2026-12-02)."""
    tree = [psutil.Process(driver.pid), *psutil.Process(driver.pid).children(recursive=True)]
    os.killpg(driver.pid, signal.SIGKILL)
    for process in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    driver.wait()
    _, alive = psutil.wait_procs(tree, timeout=60)
    assert not alive, f"processes outlived SIGKILL: {alive}"


def _interrupt_after_next_checkpoint(command: list[str], cwd: Path, how: str) -> str:
    """Start ``harness run``, wait until a trial stores an epoch's checkpoint, then interrupt; returns stderr."""
    started = time.time()
    driver = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 240
        # Polled every 0.1 s: polled every 2 s, a quiet machine once finished all four short trials before the
        # interrupt came (CI, 2026-11-24).
        while time.monotonic() < deadline:
            time.sleep(0.1)
            stored = (cwd / "runs" / "tiny" / "outputs").glob("cls-*/checkpoints/last.pt")
            if any(path.stat().st_mtime > started for path in stored):
                break
        else:
            raise AssertionError("no trial checkpointed within 4 minutes")
    finally:
        if how == "SIGKILL":
            _kill_process_tree(driver)
            stderr = ""
        else:
            os.kill(driver.pid, signal.SIGINT)
            _, stderr = driver.communicate(timeout=120)
    if how == "Ctrl-C":
        assert driver.returncode == 130 and "--resume" in stderr, stderr[-3000:]
    return stderr


def test_killed_then_interrupted_driver_resumes_to_each_trial_once_and_each_epoch_once(root, tmp_path):
    """kill -9 of the driver, then Ctrl-C of the resumed driver, then a resume that finishes: one sweep, so both
    interruptions are tested for the price of one (each alone cost about 110 s on 2 cores)."""
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep_file(tmp_path, root, epochs=6, max_concurrent=2)))
    uri = default_tracking_uri(tmp_path)
    command = [HARNESS, "run", str(path), "--tracking-uri", uri, "--num-cpus", "2"]

    _interrupt_after_next_checkpoint(command, tmp_path, "SIGKILL")
    _, runs = children(uri, "tiny")
    assert any(r.info.status == "RUNNING" for r in runs)  # the crash left runs RUNNING
    _interrupt_after_next_checkpoint(command + ["--resume"], tmp_path, "Ctrl-C")
    _, runs = children(uri, "tiny")
    assert "RUNNING" not in {r.info.status for r in runs}  # Ctrl-C ends them as KILLED

    result = subprocess.run(command + ["--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=540)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    parents, runs = children(uri, "tiny")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.data.tags[TRIAL_TAG] for r in runs) == ["cls-000", "cls-001", "cls-002", "cls-003"]
    assert {r.info.status for r in runs} == {"FINISHED"}  # interrupted trials continued to their end
    for run in runs:  # each epoch exactly once, whatever the interruptions re-ran (issue 13, item 3)
        assert epoch_steps(uri, run.info.run_id) == [1, 2, 3, 4, 5, 6], run.data.tags[TRIAL_TAG]
    state = json.loads((tmp_path / "runs" / "tiny" / "sweep.json").read_text())
    assert state["status"] == "FINISHED" and len(state["trials"]) == 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_mlflow_server_with_four_concurrent_trials_loses_no_metric(root, tmp_path):
    port = free_port()
    mlflow = str(Path(sys.executable).parent / "mlflow")
    server = subprocess.Popen(
        [
            mlflow,
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(1)
        plan = plan_sweep(sweep_file(tmp_path, root, epochs=3, max_concurrent=4), "sweep.yaml")
        outcome = run_sweep(plan, tracking_uri=uri, num_cpus=4)
        assert [t.status for t in outcome.trials] == ["FINISHED"] * 4
        _, runs = children(uri, "tiny")
        assert len(runs) == 4
        for run in runs:
            assert epoch_steps(uri, run.info.run_id) == [1, 2, 3]
            history = MlflowClient(uri).get_metric_history(run.info.run_id, "val_auc")
            assert len(history) == 4  # three epochs and the final evaluation
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_two_ray_nodes_on_one_machine_share_the_trials(root, tmp_path):
    """`ray start --head` and a second `ray start --address` on loopback, then `harness run --address`."""
    ray = str(Path(sys.executable).parent / "ray")
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": os.urandom(32).hex()}  # Ray 2.60 wants a token
    temp = Path("/tmp") / f"rt-{os.getpid()}"  # Ray's socket paths must stay short
    nodes = [
        [
            ray,
            "start",
            "--head",
            "--port",
            str(port),
            "--node-ip-address",
            "127.0.0.1",
            "--num-cpus",
            "1",
            "--include-dashboard",
            "false",
            "--temp-dir",
            str(temp),
            "--block",
        ],
        [
            ray,
            "start",
            "--address",
            f"127.0.0.1:{port}",
            "--node-ip-address",
            "127.0.0.1",
            "--num-cpus",
            "1",
            "--block",
        ],
    ]
    started = []
    try:
        for command in nodes:
            # --block keeps each node's processes in this subprocess's session, so the test stops exactly its own.
            started.append(
                subprocess.Popen(
                    command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
                )
            )
            time.sleep(8)
        path = tmp_path / "sweep.yaml"
        path.write_text(yaml.safe_dump(sweep_file(tmp_path, root, epochs=2)))
        uri = default_tracking_uri(tmp_path)
        result = subprocess.run(
            [HARNESS, "run", str(path), "--address", f"127.0.0.1:{port}", "--tracking-uri", uri],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=540,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        _, runs = children(uri, "tiny")
        assert [r.info.status for r in runs] == ["FINISHED"] * 4
        assert len({r.data.tags["ray_node"] for r in runs}) == 2  # trials ran on both nodes
    finally:
        for process in reversed(started):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        subprocess.run(["rm", "-rf", str(temp)], check=False)


def test_a_two_worker_data_parallel_trial_trains_and_reports_like_a_single_worker_one(root, tmp_path):
    single = sweep_file(tmp_path, root, epochs=3, grid={})["studies"][0]
    parallel = {**single, "name": "ddp", "resources": {"cpus": 1, "workers": 2}}  # gloo on CPU
    raw = {"name": "tiny", "storage": str(tmp_path / "runs"), "studies": [single, parallel]}
    uri = default_tracking_uri(tmp_path)
    outcome = run_sweep(plan_sweep(raw, "sweep.yaml"), tracking_uri=uri, num_cpus=2)
    assert [t.status for t in outcome.trials] == ["FINISHED", "FINISHED"], [t.error for t in outcome.trials]
    _, runs = children(uri, "tiny")
    by_key = {r.data.tags[TRIAL_TAG]: r for r in runs}
    one, two = by_key["cls-000"], by_key["ddp-000"]
    assert two.info.status == "FINISHED" and two.data.tags["workers"] == "2" and one.data.tags["workers"] == "1"
    assert two.data.tags["world_size"] == "2"  # torch.distributed really ran with two ranks
    assert set(two.data.metrics) == set(one.data.metrics)  # the same per-epoch and final metrics
    assert set(two.data.params) == set(one.data.params)
    assert epoch_steps(uri, two.info.run_id) == [1, 2, 3]
    assert two.data.metrics["val_auc"] == pytest.approx(outcome.trials[1].metrics["val_auc"])
    artifacts = {a.path for a in MlflowClient(uri).list_artifacts(two.info.run_id)}
    assert {"predictions.csv", "roc.png", "checkpoints"} <= artifacts
