"""load_series: validation, sorting along the normal, b-value groups, on written files and pydicom's shipped scouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from harness.datasets import series as series_module
from harness.datasets.dicom_io import SliceHeader, frames_of, read_dicom
from harness.datasets.errors import SeriesError
from harness.datasets.series import load_series
from tests.dicom_factory import (
    SAGITTAL,
    default_pixels,
    pydicom_test_file,
    unit_normal,
    write_enhanced,
    write_series,
    write_slice,
)


def headers_of(paths) -> list[SliceHeader]:
    return [h for p in paths for h in frames_of(read_dicom(Path(p)), Path(p))]


def series(tmp_path, **kwargs) -> list[Path]:
    params = {"patient_id": "P001", "series_uid": generate_uid(), "description": "T2 AX", "n_slices": 5}
    params.update(rows=6, cols=7)
    params.update(kwargs)
    return write_series(tmp_path, **params)


def single_volume(volumes):
    assert list(volumes) == [None]
    return volumes[None]


def test_axial_series_values_and_geometry(tmp_path):
    paths = series(tmp_path, slope=2.0, intercept=-5.0, origin=(10.0, 20.0, -30.0), spacing=(0.5, 0.75))
    volume = single_volume(load_series(headers_of(paths)))
    assert volume.shape == (5, 6, 7) and volume.pixels.dtype == np.float32
    np.testing.assert_allclose(volume.pixels, default_pixels(5, 6, 7) * 2.0 - 5.0)
    np.testing.assert_allclose(volume.positions, -30.0 + 5.0 * np.arange(5))
    np.testing.assert_allclose(volume.origin, [10.0, 20.0, -30.0])
    np.testing.assert_allclose(volume.normal, [0, 0, 1])
    assert volume.slice_spacing == pytest.approx(5.0)
    assert volume.pixel_spacing == (0.5, 0.75)
    assert volume.source_files == [str(p) for p in paths]
    assert volume.b_value is None and volume.series_description == "T2 AX"


def test_sorting_follows_positions_not_instance_numbers(tmp_path):
    paths = series(tmp_path, instance_numbers=[4, 1, 5, 2, 3])
    headers = headers_of(paths)
    rng = np.random.default_rng(3)
    volume = single_volume(load_series([headers[i] for i in rng.permutation(len(headers))]))
    np.testing.assert_allclose(volume.positions, 5.0 * np.arange(5))
    np.testing.assert_array_equal(volume.pixels, default_pixels(5, 6, 7))
    assert volume.source_files == [str(p) for p in paths]


@pytest.mark.parametrize(
    "orientation",
    [
        SAGITTAL,  # normal -x: positions along -x increase as x decreases
        (0.8660254, 0.5, 0.0, -0.1767767, 0.3061862, -0.9354143),  # oblique (rotated about z, then tilted)
    ],
)
def test_sagittal_and_oblique_sorted_along_normal(tmp_path, orientation):
    origin = np.array([3.0, -7.0, 11.0])
    paths = series(tmp_path, orientation=orientation, origin=origin, slice_spacing=3.0)
    headers = headers_of(paths)
    volume = single_volume(load_series(headers[::-1]))
    normal = unit_normal(orientation)
    np.testing.assert_allclose(volume.normal, normal, atol=1e-6)
    np.testing.assert_allclose(volume.positions, normal @ origin + 3.0 * np.arange(5), atol=1e-4)
    np.testing.assert_allclose(volume.origin, origin, atol=1e-4)
    assert volume.slice_spacing == pytest.approx(3.0, abs=1e-4)
    np.testing.assert_array_equal(volume.pixels, default_pixels(5, 6, 7))


def test_dwi_with_two_b_values_splits_into_two_volumes(tmp_path):
    paths = series(tmp_path, description="DWI", b_values=(0, 800), b_value_tag="siemens")
    volumes = load_series(headers_of(paths))
    assert sorted(volumes) == [0.0, 800.0]
    for b in (0, 800):
        assert volumes[b].b_value == b
        np.testing.assert_array_equal(volumes[b].pixels, default_pixels(5, 6, 7, b))
        np.testing.assert_allclose(volumes[b].positions, 5.0 * np.arange(5))
    assert not set(volumes[0].source_files) & set(volumes[800].source_files)


def test_dwi_without_b_value_tags_reports_duplicates(tmp_path):
    paths = series(tmp_path, description="DWI", b_values=(0, 800), b_value_tag="standard")
    for path in paths:  # as after a de-identification that stripped the b-value tags
        ds = pydicom.dcmread(path)
        del ds.DiffusionBValue
        ds.save_as(path, enforce_file_format=True)
    with pytest.raises(SeriesError, match="duplicate slice position"):
        load_series(headers_of(paths))


def test_duplicate_positions_rejected(tmp_path):
    uid = generate_uid()
    paths = series(tmp_path, series_uid=uid)
    paths.append(
        write_slice(
            tmp_path / "dup.dcm",
            pixels=default_pixels(1, 6, 7)[0],
            series_uid=uid,
            description="T2 AX",
            position=(0, 0, 10),
        )
    )
    with pytest.raises(SeriesError) as info:
        load_series(headers_of(paths))
    assert "duplicate slice position 10.000" in info.value.message
    assert uid in info.value.where and "T2 AX" in info.value.where and ".dcm" in info.value.where


def test_irregular_spacing_rejected(tmp_path):
    paths = series(tmp_path, n_slices=6)
    del paths[3]  # a missing slice: one gap of 10 mm among 5 mm gaps
    with pytest.raises(SeriesError, match="irregular slice spacing") as info:
        load_series(headers_of(paths))
    assert "10.000" in info.value.message


def test_small_spacing_jitter_accepted(tmp_path):
    uid = generate_uid()
    paths = [
        write_slice(tmp_path / f"{k}.dcm", pixels=default_pixels(1, 6, 7)[0], series_uid=uid, position=(0, 0, z))
        for k, z in enumerate([0.0, 5.02, 9.98, 15.01])
    ]
    volume = single_volume(load_series(headers_of(paths)))
    assert volume.slice_spacing == pytest.approx(15.01 / 3)


def test_two_series_mixed_rejected(tmp_path):
    paths = series(tmp_path / "a") + series(tmp_path / "b", origin=(0, 0, 100))
    with pytest.raises(SeriesError, match="several series mixed"):
        load_series(headers_of(paths))


def test_mixed_matrix_rejected(tmp_path):
    uid = generate_uid()
    paths = series(tmp_path, series_uid=uid)
    paths.append(
        write_slice(tmp_path / "big.dcm", pixels=default_pixels(1, 8, 8)[0], series_uid=uid, position=(0, 0, 25))
    )
    with pytest.raises(SeriesError, match="mixed matrix"):
        load_series(headers_of(paths))


def test_sheared_stack_rejected(tmp_path):
    uid = generate_uid()
    paths = [
        write_slice(
            tmp_path / f"{k}.dcm", pixels=default_pixels(1, 6, 7)[0], series_uid=uid, position=(3.0 * k, 0, 5 * k)
        )
        for k in range(3)
    ]
    with pytest.raises(SeriesError, match="not stacked along their normal"):
        load_series(headers_of(paths))


def test_single_slice_uses_slice_thickness(tmp_path):
    path = write_slice(tmp_path / "one.dcm", pixels=default_pixels(1, 6, 7)[0], slice_thickness=3.5)
    assert single_volume(load_series(headers_of([path]))).slice_spacing == 3.5
    path = write_slice(tmp_path / "two.dcm", pixels=default_pixels(1, 6, 7)[0], slice_thickness=None)
    assert single_volume(load_series(headers_of([path]))).slice_spacing == 0.0


def test_enhanced_series_read_once_with_per_frame_rescale(tmp_path, monkeypatch):
    stored = np.concatenate([default_pixels(3, 4, 4, 0), default_pixels(3, 4, 4, 800)])
    positions = [(0.0, 0.0, 2.0 * k) for k in (2, 0, 1)] * 2  # frames out of position order
    slopes = [1.0, 2.0, 3.0, 0.5, 0.25, 4.0]
    path = write_enhanced(
        tmp_path / "e.dcm", pixels=stored, positions=positions, slopes=slopes, b_values=[0] * 3 + [800] * 3
    )
    reads = []
    real_read = series_module.read_dicom
    monkeypatch.setattr(series_module, "read_dicom", lambda p: reads.append(p) or real_read(p))
    volumes = load_series(headers_of([path]))
    assert reads == [path]
    for b, frames in ((0.0, [1, 2, 0]), (800.0, [4, 5, 3])):  # frame indices in position order
        expected = np.stack([stored[f] * np.float64(slopes[f]) for f in frames])
        np.testing.assert_allclose(volumes[b].pixels, expected, rtol=1e-6)
        np.testing.assert_allclose(volumes[b].positions, [0.0, 2.0, 4.0])


def test_empty_header_list_rejected():
    with pytest.raises(SeriesError):
        load_series([])


# --- pydicom's shipped scouts and projections --------------------------------------------------------------------


def shipped_series(folder: str, uid_suffix: str) -> list[SliceHeader]:
    headers = headers_of(sorted(pydicom_test_file(f"dicomdirtests/98892003/{folder}").iterdir()))
    return [h for h in headers if h.series_uid.endswith(uid_suffix)]


def test_three_plane_scouts_rejected_as_mixed_orientation():
    headers = shipped_series("MR2", ".0.136")
    assert len(headers) == 3
    with pytest.raises(SeriesError, match="mixed orientation") as info:
        load_series(headers)
    assert "3 different ImageOrientationPatient" in info.value.message


def test_projections_with_varying_orientation_rejected():
    headers = shipped_series("MR700", "")
    assert len(headers) == 7 and len({h.series_uid for h in headers}) == 1
    with pytest.raises(SeriesError, match="mixed orientation"):
        load_series(headers)


def test_pre_read_pixels_give_the_same_volumes_without_reading(tmp_path, monkeypatch):
    stored = np.concatenate([default_pixels(3, 4, 4, 0), default_pixels(3, 4, 4, 800)])
    positions = [(0.0, 0.0, 2.0 * k) for k in (2, 0, 1)] * 2
    path = write_enhanced(
        tmp_path / "e.dcm", pixels=stored, positions=positions, slopes=[1.0, 2.0, 3.0] * 2, b_values=[0] * 3 + [800] * 3
    )
    headers = headers_of([path])
    expected = load_series(headers)
    ds = read_dicom(path)
    pixels = {(h.path, h.frame): series_module.read_pixels(h, ds) for h in headers}
    monkeypatch.setattr(series_module, "read_dicom", lambda p: pytest.fail(f"{p} read again"))
    volumes = load_series(headers, pixels)
    assert sorted(volumes) == sorted(expected) == [0.0, 800.0]
    for b, volume in volumes.items():
        assert volume.pixels.dtype == np.float32
        np.testing.assert_array_equal(volume.pixels, expected[b].pixels)
        np.testing.assert_array_equal(volume.positions, expected[b].positions)


def test_pre_read_pixels_missing_a_frame_named(tmp_path):
    paths = series(tmp_path)
    headers = headers_of(paths)
    pixels = {(h.path, h.frame): np.zeros((6, 7)) for h in headers if h.path != paths[2]}
    with pytest.raises(ValueError, match="no pre-read pixels") as info:
        load_series(headers, pixels)
    assert str(paths[2]) in str(info.value)


def test_volume_pixels_allocated_by_the_given_function(tmp_path):
    shapes = []

    def empty(shape):
        shapes.append(shape)
        return np.full(shape, np.nan, dtype=np.float32)

    volume = single_volume(load_series(headers_of(series(tmp_path)), empty=empty))
    assert shapes == [(5, 6, 7)]
    np.testing.assert_array_equal(volume.pixels, default_pixels(5, 6, 7))
