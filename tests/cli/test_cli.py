"""The foundation's acceptance path, through the real command: synth a cohort, check it, break a file, check again."""

import json
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

HARNESS = str(Path(sys.executable).parent / "harness")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([HARNESS, *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "c"
    result = run("synth", str(out), "--patients", "12", "--centers", "3", "--seed", "0")
    assert result.returncode == 0, result.stderr
    return out


def test_synth_writes_readable_dicom_for_every_patient(cohort):
    files = sorted((cohort / "dicom").rglob("*.dcm"))
    assert files
    descriptions: dict[str, set[str]] = {}
    for path in files:
        ds = pydicom.dcmread(path)  # every file reads; its pixels decode
        assert ds.pixel_array.size == ds.Rows * ds.Columns
        descriptions.setdefault(ds.PatientID, set()).add(ds.SeriesDescription)
    assert len(descriptions) == 12
    assert all(len(series) == 4 for series in descriptions.values())  # T2WI, CET1WI, DWI, ADC


def test_check_json_reports_the_cohort_then_names_a_truncated_file(cohort, tmp_path):
    result = run("data", "check", str(cohort), "--json")
    assert result.returncode == 0, result.stdout[-2000:]
    report = json.loads(result.stdout)
    assert report["usable"] and report["patients"]["usable"] == 12
    assert sorted(report["centers"]) == ["1", "2", "3"]
    assert report["sequences"] == {"T2WI": 12, "CET1WI": 12, "DWI": 12, "ADC": 12}
    assert all(len(p["sequences"]) == 4 for p in report["per_patient"])

    victim = sorted((cohort / "dicom").rglob("*.dcm"))[17]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    broken = run("data", "check", str(cohort))
    assert broken.returncode == 1
    assert victim.name in broken.stdout and "NOT usable" in broken.stdout


def test_bad_arguments_exit_2_with_a_message(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("user data")
    result = run("synth", str(tmp_path / "x"), "--patients", "2", "--centers", "1")
    assert result.returncode == 2 and "exists and is not empty" in result.stderr
    assert (tmp_path / "x" / "keep.txt").exists()
    missing = run("data", "check", str(tmp_path / "nothing"))
    assert missing.returncode == 1 and "not found" in missing.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bench", "--model", "nosuchmodel", "--no-mlflow"], "harness bench: error: unknown model 'nosuchmodel'"),
        (["train", "{repo}/examples"], "harness train: error: {repo}/examples: is a folder; give a YAML file"),
        (
            ["train", "{repo}/examples/train_classifier.yaml", "--data", "empty"],
            "harness train: error: empty/manifest.csv: file not found",
        ),
        (["compare"], "harness compare: error: no MLflow database at {cwd}/mlflow.db"),
    ],
)
def test_a_new_users_mistakes_give_one_line_and_leave_nothing_behind(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    repo = str(Path(__file__).resolve().parents[2])
    args = [a.format(repo=repo) for a in args]
    result = subprocess.run([HARNESS, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert message.format(repo=repo, cwd=tmp_path) in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no runs/, no mlflow.db
