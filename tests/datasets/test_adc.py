"""compute_adc: values against a hand computation, masking, geometry checks, end to end from written DWI files."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import generate_uid

from harness.datasets.adc import compute_adc
from harness.datasets.dicom_io import frames_of, read_dicom
from harness.datasets.errors import SeriesError
from harness.datasets.series import Volume, load_series
from tests.dicom_factory import write_series


def volume(pixels, b_value, **changes) -> Volume:
    pixels = np.asarray(pixels, dtype=np.float32)
    fields = {
        "pixels": pixels,
        "positions": np.arange(pixels.shape[0], dtype=np.float64) * 4.0,
        "row_dir": np.array([1.0, 0.0, 0.0]),
        "col_dir": np.array([0.0, 1.0, 0.0]),
        "normal": np.array([0.0, 0.0, 1.0]),
        "origin": np.zeros(3),
        "pixel_spacing": (1.0, 1.0),
        "slice_spacing": 4.0,
        "series_uid": "1.2.3",
        "series_description": "DWI",
        "b_value": b_value,
        "source_files": [f"f{k}.dcm" for k in range(pixels.shape[0])],
    }
    fields.update(changes)
    return Volume(**fields)


def test_adc_matches_hand_computation():
    s0 = [[[1000.0, 600.0], [250.0, 90.0]]]
    sb = [[[449.0, 300.0], [200.0, 45.0]]]
    adc = compute_adc(volume(s0, 0.0), volume(sb, 800.0))
    expected = [
        [math.log(1000 / 449) / 800 * 1e6, math.log(2) / 800 * 1e6],
        [math.log(1.25) / 800 * 1e6, math.log(2) / 800 * 1e6],
    ]
    np.testing.assert_allclose(adc.pixels[0], expected, rtol=1e-6)
    assert adc.pixels[0, 0, 0] == pytest.approx(1000.9, abs=0.1)  # 1.0e-3 mm^2/s, a typical tumour value
    assert adc.pixels.dtype == np.float32 and adc.b_value is None


def test_low_b_other_than_zero_uses_the_difference():
    adc = compute_adc(volume([[[500.0]]], 50.0), volume([[[250.0]]], 850.0))
    assert adc.pixels[0, 0, 0] == pytest.approx(math.log(2) / 800 * 1e6, rel=1e-6)


def test_zero_negative_and_inverted_signals_give_zero_not_nan():
    s0 = [[[0.0, -5.0, 100.0, 0.0, 100.0, np.inf]]]
    sb = [[[10.0, 10.0, 0.0, 0.0, 150.0, 5.0]]]  # S0 <= 0, Sb <= 0, both 0, Sb > S0 (noise), inf
    adc = compute_adc(volume(s0, 0.0), volume(sb, 1000.0))
    assert np.isfinite(adc.pixels).all()
    np.testing.assert_array_equal(adc.pixels, 0.0)


def test_keeps_high_b_geometry():
    high = volume(
        np.full((3, 2, 2), 50.0), 800.0, origin=np.array([1.0, 2.0, 3.0]), positions=np.array([3.0, 7.0, 11.0])
    )
    low = volume(np.full((3, 2, 2), 100.0), 0.0, origin=np.array([1.0, 2.0, 3.0]), positions=np.array([3.0, 7.0, 11.0]))
    adc = compute_adc(low, high)
    np.testing.assert_array_equal(adc.positions, [3.0, 7.0, 11.0])
    np.testing.assert_array_equal(adc.origin, [1.0, 2.0, 3.0])
    assert adc.source_files == high.source_files and adc.slice_spacing == 4.0


@pytest.mark.parametrize(
    "changes",
    [
        {"pixels": np.ones((2, 2, 3), dtype=np.float32), "source_files": ["a", "b"]},
        {"positions": np.array([0.0, 5.0])},
        {"row_dir": np.array([0.0, 1.0, 0.0]), "col_dir": np.array([1.0, 0.0, 0.0])},
        {"pixel_spacing": (1.0, 1.2)},
    ],
)
def test_mismatched_geometry_rejected(changes):
    low = volume(np.ones((2, 2, 2)), 0.0)
    with pytest.raises(SeriesError, match="differ"):
        compute_adc(low, replace(volume(np.ones((2, 2, 2)), 800.0), **changes))


@pytest.mark.parametrize("b_values", [(0.0, None), (800.0, 800.0), (1000.0, 800.0)])
def test_b_values_must_increase(b_values):
    with pytest.raises(SeriesError):
        compute_adc(volume(np.ones((1, 2, 2)), b_values[0]), volume(np.ones((1, 2, 2)), b_values[1]))


def test_end_to_end_from_dwi_files(tmp_path):
    # default_pixels attenuates with exp(-b / 1000): ADC 1e-3 mm^2/s = 1000 units, up to rounding to integers.
    paths = write_series(
        tmp_path,
        patient_id="P1",
        series_uid=generate_uid(),
        description="DWI",
        n_slices=3,
        rows=8,
        cols=8,
        b_values=(0, 800),
        b_value_tag="ge",
    )
    headers = [h for p in paths for h in frames_of(read_dicom(Path(p)), Path(p))]
    volumes = load_series(headers)
    adc = compute_adc(volumes[0.0], volumes[800.0])
    np.testing.assert_allclose(adc.pixels, 1000.0, atol=3.0)
