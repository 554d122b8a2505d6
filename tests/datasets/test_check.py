"""`index_dataset` / `check_dataset` / `harness data check` on good and bad datasets the tests write."""

import json
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from harness.cli import main
from harness.datasets.check import check_dataset
from harness.datasets.errors import DataError
from harness.datasets.index import index_dataset
from tests.datasets.minidata import write_dataset
from tests.dicom_factory import SAGITTAL, pydicom_test_file, undecodable_copy, write_series, write_slice


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path / "ds")


def errors_of(report):
    return [f"{p.where}: {p.message}" for p in report.problems if p.severity.value == "error"]


def test_good_dataset_is_usable_and_summarised(dataset):
    report = check_dataset(dataset)
    assert report.usable, errors_of(report)
    summary = report.summary
    assert summary["centers"] == {
        "1": {"lnm_positive": 1, "lnm_negative": 1},
        "2": {"lnm_positive": 1, "lnm_negative": 1},
    }
    assert summary["sequences"] == {"T2WI": 4, "CET1WI": 4, "DWI": 4, "ADC": 4}
    assert summary["slices"] == {"T2WI": 24, "CET1WI": 20, "DWI": 24, "ADC": 24}
    assert summary["boxes"]["mesorectal"] == {"metastatic": 4, "benign": 4}
    assert summary["per_patient"][0]["sequences"] == ["CET1WI", "DWI", "T2WI", "ADC (computed)"]


def test_check_cli_json_and_exit_status(dataset, capsys):
    assert main(["data", "check", str(dataset), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["usable"] is True and report["patients"]["usable"] == 4
    victim = sorted((dataset / "dicom" / "P02" / "T2WI").iterdir())[3]
    victim.write_bytes(victim.read_bytes()[:-300])  # truncated pixel data
    assert main(["data", "check", str(dataset), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["usable"] is False
    assert any(str(victim) in p["where"] for p in report["problems"])


def test_check_cli_table_output(dataset, capsys):
    assert main(["data", "check", str(dataset)]) == 0
    out = capsys.readouterr().out
    assert "Patients per centre" in out and "usable" in out and "4 of 4 patients usable" in out


def bad_file_cases():
    return {
        "non_dicom": (lambda d: (d / "notes.txt").write_text("radiology report"), "not a DICOM file"),
        "empty": (lambda d: (d / "empty.dcm").write_bytes(b""), "empty"),
        "truncated": (lambda d: shutil.copy(pydicom_test_file("MR_truncated.dcm"), d / "trunc.dcm"), "truncated"),
        "no_pixels": (
            lambda d: write_slice(
                d / "nopix.dcm",
                pixels=np.ones((4, 4), np.uint16),
                patient_id="P01",
                edit=lambda ds: delattr(ds, "PixelData"),
            ),
            "no pixel data",
        ),
        # pyjpegls (a highdicom dependency) decodes JPEG-LS: a syntax whose decoder is missing here stands in.
        "no_decoder": (
            lambda d: undecodable_copy(d / "jpeg.dcm") or pytest.skip("every decoder is installed"),
            "pylibjpeg",
        ),
    }


@pytest.mark.parametrize("case", sorted(bad_file_cases()))
def test_bad_file_is_an_error_naming_it_or_skipped_with_a_count(dataset, case):
    make, fragment = bad_file_cases()[case]
    folder = dataset / "dicom" / "P01" / "extra"
    folder.mkdir()
    make(folder)
    (bad,) = list(folder.iterdir())
    report = check_dataset(dataset)
    assert not report.usable
    hits = [p for p in report.problems if str(bad) in p.where]
    assert hits and fragment.lower() in hits[0].message.lower(), report.problems
    skipped = check_dataset(dataset, on_error="skip")
    assert skipped.usable and skipped.summary["files_skipped"] == [str(bad)]
    assert all(p.severity.value == "warning" for p in skipped.problems)


def test_hidden_files_and_dicomdir_are_ignored_but_listed(dataset):
    (dataset / "dicom" / ".DS_Store").write_bytes(b"\0\1junk")
    shutil.copy(pydicom_test_file("dicomdirtests/DICOMDIR"), dataset / "dicom" / "DICOMDIR")
    report = check_dataset(dataset)
    assert report.usable, errors_of(report)
    assert sorted(report.summary["files_ignored"]) == ["dicom/.DS_Store", "dicom/DICOMDIR"]


def test_mixed_orientation_in_one_series_is_rejected(dataset):
    uid = generate_uid()
    folder = dataset / "dicom" / "P03" / "T2WI"
    shutil.rmtree(folder)
    write_series(folder, patient_id="P03", series_uid=uid, description="t2_tse_tra", n_slices=3, rows=32, cols=40)
    write_series(
        folder / "s",
        patient_id="P03",
        series_uid=uid,
        description="t2_tse_tra",
        n_slices=3,
        rows=32,
        cols=40,
        orientation=SAGITTAL,
    )
    report = check_dataset(dataset)
    assert any("P03" in e and "orientation" in e.lower() for e in errors_of(report)), errors_of(report)


def test_two_stacks_in_one_series_are_rejected(dataset):
    uid = generate_uid()
    folder = dataset / "dicom" / "P03" / "T2WI"
    shutil.rmtree(folder)
    for sub in ("a", "b"):  # the same positions twice under one SeriesInstanceUID
        write_series(
            folder / sub,
            patient_id="P03",
            series_uid=uid,
            description="t2_tse_tra",
            n_slices=6,
            rows=32,
            cols=40,
            origin=(0, 0, -10),
            slice_spacing=4.0,
        )
    report = check_dataset(dataset)
    assert any("P03" in e and "duplicate" in e.lower() for e in errors_of(report)), errors_of(report)


def test_two_series_for_one_sequence_ask_for_an_explicit_map(dataset):
    write_series(
        dataset / "dicom" / "P02" / "T2b",
        patient_id="P02",
        series_uid=generate_uid(),
        description="t2_tse_tra_repeat",
        n_slices=3,
        rows=8,
        cols=8,
    )
    report = check_dataset(dataset)
    assert any("'P02'" in e and "2 series map to T2WI" in e and "sequences.yaml" in e for e in errors_of(report))


def test_missing_sequence_names_patient_and_sequence(dataset):
    shutil.rmtree(dataset / "dicom" / "P04" / "CET1WI")
    report = check_dataset(dataset)
    assert any("'P04'" in e and "no CET1WI series" in e for e in errors_of(report))
    assert check_dataset(dataset, required=["T2WI", "DWI"]).usable  # not required: fine


def test_manifest_row_without_images(dataset):
    with (dataset / "manifest.csv").open("a") as handle:
        handle.write("P99,2,0,0\n")
    report = check_dataset(dataset)
    assert any("line 6" in e and "P99" in e and "no images" in e for e in errors_of(report))
    skipped = check_dataset(dataset, on_error="skip")
    assert skipped.usable and "P99" in skipped.summary["patients"]["excluded"]


def test_images_without_manifest_row(dataset):
    lines = (dataset / "manifest.csv").read_text().splitlines()
    (dataset / "manifest.csv").write_text("\n".join(line for line in lines if not line.startswith("P04")) + "\n")
    report = check_dataset(dataset)
    assert any("'P04'" in e and "no row in manifest.csv" in e for e in errors_of(report))


def test_duplicate_patient_ids(dataset):
    with (dataset / "manifest.csv").open("a") as handle:
        handle.write("P01,2,0,0\n")
    report = check_dataset(dataset)
    assert any("duplicate patient_id 'P01'" in e for e in errors_of(report))


@pytest.mark.parametrize("bad_id", ["../x", "/abs"])
def test_escaping_patient_id_is_refused(dataset, bad_id):
    with (dataset / "manifest.csv").open("a") as handle:
        handle.write(f"{bad_id},2,0,0\n")
    report = check_dataset(dataset)
    assert any(bad_id in e and "not a plain name" in e for e in errors_of(report))


def test_annotation_on_a_missing_slice(dataset):
    with (dataset / "annotations.csv").open("a") as handle:
        handle.write("P01,T2WI,123.0,tumour,,,1,1,5,5\n")
    report = check_dataset(dataset)
    assert any("annotations.csv line" in e and "matches no slice" in e for e in errors_of(report))


def test_missing_manifest_is_one_clear_problem(tmp_path):
    (tmp_path / "dicom").mkdir()
    report = check_dataset(tmp_path)
    assert not report.usable
    assert "manifest.csv" in report.problems[0].where and "not found" in report.problems[0].message


def test_index_raise_for_errors_lists_problems(dataset):
    (dataset / "dicom" / "P01" / "junk.dcm").write_bytes(b"")
    index = index_dataset(dataset)
    with pytest.raises(DataError, match="junk.dcm"):
        index.raise_for_errors()


def test_pydicom_scouts_with_varying_orientation_are_rejected(dataset):
    """pydicom's dicomdirtests scouts: one SeriesInstanceUID holds axial, sagittal and coronal localizers."""
    scouts = pydicom_test_file("dicomdirtests/98892003/MR2")
    target = dataset / "dicom" / "scouts"
    shutil.copytree(scouts, target)
    headers = {path: pydicom.dcmread(path, stop_before_pixels=True) for path in target.iterdir()}
    series_uid = "1.3.6.1.4.1.5962.1.1.0.0.0.1196533885.18148.0.136"
    assert len({tuple(h.ImageOrientationPatient) for h in headers.values() if h.SeriesInstanceUID == series_uid}) > 1
    patient = next(iter(headers.values())).PatientID
    with (dataset / "manifest.csv").open("a") as handle:
        handle.write(f"{patient},2,0,0\n")
    (dataset / "sequences.yaml").write_text(f"series: {{'{series_uid}': T2WI}}\n")
    report = check_dataset(dataset, required=["T2WI"])
    assert any("orientation" in e.lower() and series_uid in e for e in errors_of(report)), errors_of(report)
