"""What a sweep leaves behind: no file path and no DICOM patient name or id anywhere in the MLflow store (database and
artifacts, the checkpoint's pickled config included), and one copy of each checkpoint per finished trial on disk.

Slow: starts a local Ray and trains one tiny classifier for real.
"""

import zipfile
from pathlib import Path

import pydicom
import pytest
import torch

from harness.sweep import plan_sweep
from harness.sweep.run import run_sweep
from harness.tracking import default_tracking_uri
from tests.datasets.minidata import write_dataset

pytestmark = pytest.mark.slow
PATIENT_NAME, ID_PREFIX = "ZZMARKER^PATIENT", "ZZID1234"


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


def stored_bytes(path: Path) -> list[tuple[str, bytes]]:
    """(name, bytes) of a file, and of each member when it is a zip (a torch checkpoint is a zip of pickles)."""
    items = [(str(path), path.read_bytes())]
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            items += [(f"{path}:{member}", archive.read(member)) for member in archive.namelist()]
    return items


def test_mlflow_holds_no_path_or_patient_and_each_checkpoint_is_stored_once(tmp_path):
    root = marked_cohort(tmp_path / "cohort-zz")
    raw = {
        "name": "privacy",
        "storage": str(tmp_path / "runs"),
        "studies": [
            {
                "name": "cls",
                "task": "classification",
                "model": "wu2020",
                "model_kwargs": {"width": 8},
                "data": {"root": str(root), "split": {"val_centers": ["2"]}},
                "train": {"stage1_epochs": 0, "stage2_epochs": 2, "batch_size": 8},
                "n_boot": 100,
                "resources": {"cpus": 1},
            }
        ],
    }
    uri = default_tracking_uri(tmp_path)
    outcome = run_sweep(plan_sweep(raw, "sweep.yaml"), tracking_uri=uri, num_cpus=2)
    assert [t.status for t in outcome.trials] == ["FINISHED"], [t.error for t in outcome.trials]

    store = sorted(tmp_path.glob("mlflow.db*"))  # the database and any journal next to it
    store += [p for p in (tmp_path / "mlartifacts").rglob("*") if p.is_file()]
    logged = {p.name for p in store}
    assert {"mlflow.db", "config.yaml", "best.pt", "predictions.csv"} <= logged and "last.pt" not in logged
    needles = [str(root).encode(), PATIENT_NAME.split("^")[0].encode(), ID_PREFIX.encode()]
    found = [(name, n.decode()) for p in store for name, data in stored_bytes(p) for n in needles if n in data]
    assert not found, "\n".join(f"{needle} in {name}" for name, needle in found)
    best = next(p for p in store if p.name == "best.pt")
    config = torch.load(best, weights_only=True)["config"]
    assert config["data"]["root"] == "<data>" and config["output_dir"] == "<output>"

    # One copy per checkpoint: best.pt in the trial's output folder; no last.pt, no Tune checkpoint left.
    runs = tmp_path / "runs"
    assert [p.relative_to(runs).parts[-2:] for p in runs.rglob("*.pt")] == [("checkpoints", "best.pt")]
    assert not [p for p in runs.rglob("checkpoint_*") if p.is_dir()]
