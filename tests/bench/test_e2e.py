"""The end-to-end case: parallel DICOM read (DataLoader workers) equals the serial read and the data layer's volume,
keeps the data layer's errors naming the file, and device preprocessing gives the old host result on the CPU."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
import torch.nn.functional as F

import harness.bench.e2e as bench_e2e
from harness.bench.e2e import Study, detector_inputs, end_to_end_case, find_study, read_volume
from harness.bench.weights import benchmark_model, spread_detector_scores
from harness.datasets.dicom_io import frames_of, read_dicom
from harness.datasets.errors import DicomFileError, SeriesError
from harness.datasets.series import load_series
from harness.datasets.synthetic import generate_cohort
from harness.inference import InferenceOptions, Predictor

DETECTOR_SIZE = 64


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Study:
    """The T2WI study of a one-patient synthetic cohort (24 slices of 230x256)."""
    root = tmp_path_factory.mktemp("e2e") / "cohort"
    generate_cohort(root, patients=1, centers=1, seed=0)
    return find_study(root)


@pytest.fixture(scope="module")
def detector(study) -> Predictor:
    model = benchmark_model("fasterrcnn_lite_fpn", image_size=DETECTOR_SIZE)
    volume = read_volume(study.files)
    spread_detector_scores(model, detector_inputs(volume.pixels, DETECTOR_SIZE)[::6])
    return Predictor(model, InferenceOptions())


def _copy_study(study: Study, folder: Path) -> list[Path]:
    """The study's files copied to ``folder`` (to break one without touching the module's cohort)."""
    folder.mkdir()
    return [Path(shutil.copy(path, folder / f"{k:03d}.dcm")) for k, path in enumerate(study.files)]


def test_parallel_read_equals_load_series(study):
    reference = load_series([h for p in study.files for h in frames_of(read_dicom(p), p)])[None]
    for workers in (0, 2):
        volume = read_volume(study.files, workers=workers)
        assert volume.pixels.dtype == np.float32 and volume.shape == reference.shape
        np.testing.assert_array_equal(volume.pixels, reference.pixels)
        np.testing.assert_array_equal(volume.positions, reference.positions)
        assert volume.source_files == reference.source_files
        assert volume.slice_spacing == reference.slice_spacing and volume.pixel_spacing == reference.pixel_spacing


def test_serial_read_parses_each_file_once(study, monkeypatch):
    reads = []
    real_read = bench_e2e.read_dicom
    monkeypatch.setattr(bench_e2e, "read_dicom", lambda path: reads.append(path) or real_read(path))
    read_volume(study.files, workers=0)
    assert sorted(reads) == sorted(study.files)


def test_detector_case_same_with_workers(study, detector):
    serial = end_to_end_case(detector, study, image_size=DETECTOR_SIZE, batch=8, workers=0)
    parallel = end_to_end_case(detector, study, image_size=DETECTOR_SIZE, batch=8, workers=2)
    assert len(serial) == len(parallel) == len(study.files)
    assert sum(len(d["scores"]) for d in serial) > 0, "no detection above the threshold: the comparison is vacuous"
    for a, b in zip(serial, parallel, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_classifier_case_same_with_workers(study):
    predictor = Predictor(benchmark_model("wu2020"), InferenceOptions())
    serial = end_to_end_case(predictor, study, image_size=DETECTOR_SIZE, workers=0)
    assert 0.0 <= serial <= 1.0
    assert end_to_end_case(predictor, study, image_size=DETECTOR_SIZE, workers=2) == serial


@pytest.mark.parametrize("workers", [0, 2])
def test_truncated_file_named_through_workers(study, detector, tmp_path, workers):
    files = _copy_study(study, tmp_path / "study")
    broken = files[len(files) // 2 + 1]  # in the second worker's chunk
    broken.write_bytes(broken.read_bytes()[:-1000])
    with pytest.raises(DicomFileError, match="truncated") as info:
        end_to_end_case(detector, Study(tuple(files)), image_size=DETECTOR_SIZE, workers=workers)
    assert info.value.where == str(broken)


@pytest.mark.parametrize("workers", [0, 2])
def test_odd_orientation_named_through_workers(study, tmp_path, workers):
    files = _copy_study(study, tmp_path / "study")
    odd = files[-2]
    ds = pydicom.dcmread(odd)
    ds.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]  # a sagittal scout in the axial series
    ds.save_as(odd, enforce_file_format=True)
    with pytest.raises(SeriesError, match="mixed orientation") as info:
        read_volume(files, workers=workers)
    assert str(odd) in info.value.where


@pytest.mark.parametrize("workers", [0, 2])
def test_mixed_matrix_named_through_workers(study, tmp_path, workers):
    files = _copy_study(study, tmp_path / "study")
    small = files[1]  # frames of two sizes in one worker's chunk: unpacked by each header's rows and columns
    ds = pydicom.dcmread(small)
    half = np.ascontiguousarray(ds.pixel_array[::2, ::2])
    ds.Rows, ds.Columns, ds.PixelData = half.shape[0], half.shape[1], half.tobytes()
    ds.save_as(small, enforce_file_format=True)
    with pytest.raises(SeriesError, match="mixed matrix") as info:
        read_volume(files, workers=workers)
    assert str(small) in info.value.where


@pytest.mark.parametrize("workers", [0, 2])
def test_duplicate_file_named_through_workers(study, workers):
    files = list(study.files) + [study.files[3]]
    with pytest.raises(SeriesError, match="duplicate slice position") as info:
        read_volume(files, workers=workers)
    assert str(study.files[3]) in info.value.where


def _old_detector_inputs(pixels: np.ndarray, image_size: int) -> torch.Tensor:
    """detector_inputs as it was before it took a device (host only)."""
    volume = torch.from_numpy(np.asarray(pixels, dtype=np.float32))
    volume = (volume - volume.mean()) / volume.std().clamp_min(1e-6)
    resized = F.interpolate(volume[:, None], size=(image_size, image_size), mode="bilinear", antialias=True)
    return resized.expand(-1, 3, -1, -1).contiguous()


def test_detector_inputs_on_cpu_unchanged(study):
    pixels = read_volume(study.files).pixels
    expected = _old_detector_inputs(pixels, DETECTOR_SIZE)
    assert expected.shape == (len(study.files), 3, DETECTOR_SIZE, DETECTOR_SIZE)
    for images in (detector_inputs(pixels, DETECTOR_SIZE), detector_inputs(pixels, DETECTOR_SIZE, "cpu")):
        assert images.device.type == "cpu" and images.dtype == torch.float32
        torch.testing.assert_close(images, expected, rtol=0, atol=0)
    assert float(expected.mean().abs()) < 0.5  # z-scored, not raw intensities (the comparison means something)


def test_cached_study_is_read_without_parsing_and_rebuilt_when_a_file_changes(study, detector, tmp_path, monkeypatch):
    from harness.datasets.cache import ArrayCache

    files = _copy_study(study, tmp_path / "study")
    cached = Study(tuple(files))
    cache = ArrayCache("e2e-volumes", root=tmp_path / "cache")
    expected = end_to_end_case(detector, cached, image_size=DETECTOR_SIZE)
    first = end_to_end_case(detector, cached, image_size=DETECTOR_SIZE, cache=cache)  # parses, then fills the cache
    reads: list[Path] = []
    real_read = bench_e2e.read_dicom
    monkeypatch.setattr(bench_e2e, "read_dicom", lambda path: reads.append(path) or real_read(path))
    second = end_to_end_case(detector, cached, image_size=DETECTOR_SIZE, cache=cache)
    assert reads == []  # from the cache: no DICOM file opened
    for result in (first, second):
        assert len(result) == len(expected) and sum(len(d["scores"]) for d in result) > 0
        for got, want in zip(result, expected, strict=True):
            np.testing.assert_array_equal(got["boxes"], want["boxes"])
            np.testing.assert_array_equal(got["scores"], want["scores"])
    ds = pydicom.dcmread(files[5])
    ds.PixelData = bytes(len(ds.PixelData))  # an edited file (all zero pixels) is a new key: parsed again
    ds.save_as(files[5])
    end_to_end_case(detector, cached, image_size=DETECTOR_SIZE, cache=cache)
    assert len(reads) == len(files)
    volume = read_volume(files, cache=cache)
    assert not volume.pixels[list(volume.source_files).index(str(files[5]))].any()
