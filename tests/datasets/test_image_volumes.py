"""Image volumes (NIfTI, NRRD, MHA) in place of DICOM series: a PI-CAI- or Decathlon-style copy of the tiny dataset,
made with SimpleITK's own DICOM series reader, checks, loads the same volumes as the DICOM original and trains."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from harness.config import parse_config
from harness.datasets.check import check_dataset
from harness.datasets.errors import DataError
from harness.datasets.index import index_dataset
from harness.datasets.volumes import load_sequence
from harness.train import run_training
from tests.datasets.minidata import write_dataset
from tests.train.test_runner import classifier_config

PATIENTS = ("P01", "P02", "P03", "P04")


def series_image(folder: Path, only: str | None = None) -> sitk.Image:
    """A DICOM series read by SimpleITK (GDCM), independently of the harness; ``only`` keeps file names holding it."""
    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(str(folder))
    if only is not None:
        files = tuple(f for f in files if only in Path(f).name)
    reader.SetFileNames(files)
    return reader.Execute()


@pytest.fixture(scope="module")
def both(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny DICOM dataset, and its copy with volumes/<patient>/<SEQUENCE>.nii.gz (DWI = the b800 image) and
    no dicom/ folder."""
    base = tmp_path_factory.mktemp("volumes")
    dicom = write_dataset(base / "dicom-ds")
    volumes = base / "volume-ds"
    volumes.mkdir()
    for name in ("manifest.csv", "annotations.csv"):
        shutil.copy(dicom / name, volumes / name)
    for patient in PATIENTS:
        out = volumes / "volumes" / patient
        out.mkdir(parents=True)
        for sequence, suffix in (("T2WI", ".nii.gz"), ("CET1WI", ".nrrd"), ("DWI", ".mha")):
            only = "_01_" if sequence == "DWI" else None  # write_series names b-value 1 (b800) files *_01_*
            sitk.WriteImage(series_image(dicom / "dicom" / patient / sequence, only), str(out / f"{sequence}{suffix}"))
    return dicom, volumes


@pytest.mark.parametrize("sequence", ["T2WI", "CET1WI", "DWI"])
def test_an_image_volume_loads_as_its_dicom_series_does(both, sequence):
    dicom, volumes = both
    original = load_sequence(index_dataset(dicom), "P02", sequence)
    converted = load_sequence(index_dataset(volumes, required=("T2WI", "CET1WI", "DWI")), "P02", sequence)
    np.testing.assert_array_equal(converted.pixels, original.pixels)
    np.testing.assert_allclose(converted.positions, original.positions, atol=1e-3)
    for name in ("row_dir", "col_dir", "normal", "origin"):
        np.testing.assert_allclose(getattr(converted, name), getattr(original, name), atol=1e-4)
    assert converted.pixel_spacing == pytest.approx(original.pixel_spacing)
    assert converted.slice_spacing == pytest.approx(original.slice_spacing)


def test_a_volume_dataset_checks_and_trains(both, tmp_path):
    _, volumes = both
    report = check_dataset(volumes, required=("T2WI", "CET1WI", "DWI"))
    assert report.usable, [str(p) for p in report.problems]
    assert report.summary["slices"]["T2WI"] == 6 * len(PATIENTS)
    result = run_training(parse_config(classifier_config(volumes, tmp_path, stage1_epochs=1, stage2_epochs=1)))
    assert 0.0 <= result.metrics["val_auc"] <= 1.0


def test_a_reversed_stack_is_sorted_along_the_normal(both, tmp_path):
    dicom, volumes = both
    flipped = tmp_path / "ds"
    shutil.copytree(volumes, flipped)
    path = flipped / "volumes" / "P01" / "T2WI.nii.gz"
    sitk.WriteImage(sitk.Flip(sitk.ReadImage(str(path)), [False, False, True]), str(path))  # slices stored top-down
    converted = load_sequence(index_dataset(flipped, required=("T2WI",)), "P01", "T2WI")
    original = load_sequence(index_dataset(dicom), "P01", "T2WI")
    np.testing.assert_array_equal(converted.pixels, original.pixels)
    np.testing.assert_allclose(converted.positions, original.positions, atol=1e-3)


@pytest.mark.parametrize(
    "case,fragment",
    [
        ("4-D", "expected one 3-D scalar image"),
        ("vector", "expected one 3-D scalar image"),
        ("bad name", "expected volumes/<patient_id>/<SEQUENCE>"),
    ],
)
def test_unusable_volumes_are_errors_naming_the_file(both, tmp_path, case, fragment):
    _, volumes = both
    root = tmp_path / "ds"
    shutil.copytree(volumes, root)
    path = root / "volumes" / "P03" / "T2WI.nii.gz"
    if case == "4-D":
        sitk.WriteImage(sitk.Image([4, 4, 3, 2], sitk.sitkFloat32), str(path))
    elif case == "vector":
        sitk.WriteImage(sitk.Image([4, 4, 3], sitk.sitkVectorFloat32, 3), str(path))
    else:
        path = path.rename(path.with_name("T2.nii.gz"))
    report = check_dataset(root, required=("CET1WI",))
    hits = [p for p in report.problems if p.where == str(path)]
    assert not report.usable and hits and fragment in hits[0].message, [str(p) for p in report.problems]
    with pytest.raises(DataError):
        index_dataset(root, required=("T2WI",)).raise_for_errors() if case == "bad name" else load_sequence(
            index_dataset(root, required=("CET1WI",)), "P03", "T2WI"
        )
