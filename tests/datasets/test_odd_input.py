"""Odd but real input that the data layer once accepted silently (issue 12, item 4): broken geometry, DWI frames
without b-values, a scanner's ADC filed under the DWI's series, unreadable folders, a cached file error after the
file was fixed, and manifests saved in other encodings. Each case is an error naming the file, or a stated rule."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from pydicom.uid import generate_uid

from harness.datasets.check import check_dataset
from harness.datasets.index import index_dataset
from harness.datasets.manifest import load_manifest
from harness.datasets.volumes import load_sequence
from tests.datasets.minidata import write_dataset
from tests.dicom_factory import AXIAL, write_series


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path / "ds")


def errors_of(report) -> list[str]:
    return [f"{p.where}: {p.message}" for p in report.problems if p.severity.value == "error"]


def t2_files(dataset: Path, patient: str = "P01") -> list[Path]:
    return sorted((dataset / "dicom" / patient / "T2WI").iterdir())


def edit(path: Path, change) -> None:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)


# --- geometry ----------------------------------------------------------------------------------------------------

BROKEN_GEOMETRY = {
    "nan position": (lambda ds: setattr(ds, "ImagePositionPatient", [0.0, float("nan"), 4.0]), "non-finite"),
    "inf orientation": (
        lambda ds: setattr(ds, "ImageOrientationPatient", [1.0, 0.0, 0.0, 0.0, float("inf"), 0.0]),
        "non-finite",
    ),
    "zero spacing": (lambda ds: setattr(ds, "PixelSpacing", [0.0, 1.0]), "must be positive"),
    "negative spacing": (lambda ds: setattr(ds, "PixelSpacing", [1.0, -0.5]), "must be positive"),
    "not unit": (lambda ds: setattr(ds, "ImageOrientationPatient", [2.0, 0.0, 0.0, 0.0, 1.0, 0.0]), "orthogonal"),
    "not orthogonal": (
        lambda ds: setattr(ds, "ImageOrientationPatient", [1.0, 0.0, 0.0, 0.6, 0.8, 0.0]),
        "orthogonal",
    ),
    "text in spacing": (
        lambda ds: ds.__setitem__(0x00280030, RawDataElement(Tag(0x00280030), "DS", 8, b"abc\\1.0 ", 0, False, True)),
        "numeric",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_GEOMETRY))
def test_broken_geometry_in_one_slice_is_an_error_naming_it(dataset, case):
    change, fragment = BROKEN_GEOMETRY[case]
    broken = t2_files(dataset)[2]
    with pydicom.config.disable_value_validation():
        edit(broken, change)
    report = check_dataset(dataset)
    assert not report.usable
    hits = [p for p in report.problems if p.where == str(broken)]
    assert hits and fragment in hits[0].message, errors_of(report)


def test_data_check_exits_non_zero_on_a_nan_position(dataset):
    """The case as a user met it: `harness data check` said exit 0 and every box of the patient sat on one slice."""
    broken = t2_files(dataset)[3]
    edit(broken, lambda ds: setattr(ds, "ImagePositionPatient", [0.0, 0.0, float("nan")]))
    result = subprocess.run(
        [sys.executable, "-m", "harness", "data", "check", str(dataset), "--json"], capture_output=True, text=True
    )
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert any(p["where"] == str(broken) and "non-finite" in p["message"] for p in report["problems"])


# --- b-values and ADC --------------------------------------------------------------------------------------------


def dwi_files(dataset: Path, patient: str = "P01") -> list[Path]:
    return sorted((dataset / "dicom" / patient / "DWI").iterdir())


def strip_b_value(ds: pydicom.Dataset) -> None:
    """Remove the b-value as a de-identification tool does: minidata writes it in Siemens' private block."""
    block = ds.private_block(0x0019, "SIEMENS MR HEADER")
    del ds[block.get_tag(0x0C)]


def test_dwi_frames_that_lost_their_b_value_are_an_error_not_a_b0_dwi(dataset):
    """Before: the b800 frames without a tag became a separate untagged stack and the b0 image was used as DWI."""
    high_b = [p for p in dwi_files(dataset) if "_01_" in p.name]  # write_series names b-value 1's files *_01_*
    assert len(high_b) == 6
    for path in high_b:
        edit(path, strip_b_value)
    report = check_dataset(dataset)
    assert not report.usable
    hits = [p for p in report.problems if "have no b-value" in p.message]
    assert hits and "DiffusionBValue" in hits[0].message, errors_of(report)
    assert any(str(path) in hits[0].where for path in high_b)  # names a file that lost its tag


def test_a_dwi_series_with_only_b0_is_not_used_as_dwi(dataset):
    for path in dwi_files(dataset):
        if "_01_" in path.name:
            path.unlink()  # the b800 stack is gone; every remaining frame says b=0
    index = index_dataset(dataset, required=("T2WI",))
    with pytest.raises(Exception, match="only b=0 images"):
        load_sequence(index, "P01", "DWI")


def test_a_scanner_adc_filed_under_the_dwi_series_is_used_not_dropped(dataset):
    """Some scanners store the ADC map with the DWI's SeriesInstanceUID (ImageType ...\\ADC): it is the ADC."""
    dwi = pydicom.dcmread(dwi_files(dataset)[0])
    adc_values = np.full((6, 24, 24), 1234, dtype=np.uint16)
    paths = write_series(
        dataset / "dicom" / "P01" / "DWI" / "adc",
        patient_id="P01",
        series_uid=dwi.SeriesInstanceUID,
        study_uid=dwi.StudyInstanceUID,
        description=dwi.SeriesDescription,
        n_slices=6,
        rows=24,
        cols=24,
        orientation=AXIAL,
        slice_spacing=4.0,
        origin=(0, 0, -10),
        pixels=adc_values,
    )
    for path in paths:
        edit(path, lambda ds: setattr(ds, "ImageType", ["DERIVED", "PRIMARY", "DIFFUSION", "ADC"]))
    report = check_dataset(dataset)
    assert report.usable, errors_of(report)
    p01 = next(p for p in report.summary["per_patient"] if p["patient_id"] == "P01")
    assert "ADC" in p01["sequences"] and "ADC (computed)" not in p01["sequences"]
    index = index_dataset(dataset)
    adc = load_sequence(index, "P01", "ADC")
    np.testing.assert_array_equal(adc.pixels, adc_values.astype(np.float32))  # the scanner's map, not a computed one
    assert load_sequence(index, "P01", "DWI").b_value == 800  # the DWI keeps its b800 image
    p02 = load_sequence(index, "P02", "ADC")  # a patient without a scanner ADC still gets the computed one
    assert p02.series_description.startswith("ADC computed from")


# --- folders and files the process cannot read -------------------------------------------------------------------


def run_without_file_access_override(code: str) -> subprocess.CompletedProcess:
    """Run Python ``code`` so that file permissions apply: as root (CI), drop the capabilities that let root read
    any file (setpriv); as another user, run it plainly."""
    command = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: file permissions cannot be made to apply")
        caps = "-dac_override,-dac_read_search"
        command = ["setpriv", "--bounding-set", caps, "--inh-caps", caps, *command]
    return subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())


CHECK = """
import json, sys
from harness.datasets.check import check_dataset
report = check_dataset(sys.argv[1] if len(sys.argv) > 1 else {root!r})
print(json.dumps({{"usable": report.usable, "problems": [p.as_dict() for p in report.problems]}}))
"""


def checked_without_override(dataset: Path) -> dict:
    result = run_without_file_access_override(CHECK.format(root=str(dataset)))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_an_unreadable_folder_is_named_not_skipped(dataset):
    folder = dataset / "dicom" / "P02" / "CET1WI"
    folder.chmod(0)
    try:
        report = checked_without_override(dataset)
    finally:
        folder.chmod(0o755)
    assert not report["usable"]
    hits = [p for p in report["problems"] if p["where"] == str(folder)]
    assert hits and "folder cannot be read" in hits[0]["message"], report["problems"]


def test_a_file_error_is_checked_again_after_the_file_is_fixed(dataset):
    """The header cache is keyed on path, size and mtime; a permission change moves none of them."""
    locked = t2_files(dataset, "P03")[0]
    locked.chmod(0)
    try:
        before = checked_without_override(dataset)
    finally:
        locked.chmod(0o644)
    assert not before["usable"] and any(p["where"] == str(locked) for p in before["problems"])
    after = checked_without_override(dataset)  # same cache folder (HARNESS_CACHE_DIR), file now readable
    assert after["usable"], after["problems"]


# --- manifest encodings ------------------------------------------------------------------------------------------

MANIFEST = "patient_id,center,lnm,mr_ln_status,note\nP01,1,1,1,Lésion T2\nP02,1,0,0,\n"


@pytest.mark.parametrize(
    "encoding,text",
    [
        ("utf-8", MANIFEST),
        ("utf-8-sig", MANIFEST),
        ("utf-16", MANIFEST),  # Python writes the byte-order mark
        ("utf-16", MANIFEST.replace(",", "\t")),  # Excel's "Unicode Text": UTF-16 with tabs
    ],
    ids=["utf-8", "utf-8 with BOM", "utf-16", "excel unicode text"],
)
def test_manifest_in_utf8_or_utf16_reads_the_same(tmp_path, encoding, text):
    (tmp_path / "manifest.csv").write_bytes(text.encode(encoding))
    patients, problems = load_manifest(tmp_path)
    assert not problems and sorted(patients) == ["P01", "P02"]
    assert patients["P01"].clinical == {"note": "Lésion T2"}


def test_a_cp1252_manifest_is_an_error_naming_the_file_and_the_fix(tmp_path):
    (tmp_path / "manifest.csv").write_bytes(MANIFEST.encode("cp1252"))
    with pytest.raises(Exception) as info:
        load_manifest(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "manifest.csv") in message and "UTF-8" in message and "line 2" in message


def test_a_new_series_uid_is_enough_to_tell_the_cases_apart(dataset):
    """Guard for the ADC case: a separate ADC series (its own UID) is still found by its description."""
    write_series(
        dataset / "dicom" / "P04" / "ADC",
        patient_id="P04",
        series_uid=generate_uid(),
        description="ep2d_diff_tra_ADC",
        n_slices=6,
        rows=24,
        cols=24,
        slice_spacing=4.0,
        origin=(0, 0, -10),
    )
    index = index_dataset(dataset)
    assert "ADC" in index.sequences_of("P04") and "ADC" not in index.sequences_of("P03")
