"""read_dicom / frames_of / read_b_value / read_pixels on pydicom's shipped MR files and on files the tests write."""

from __future__ import annotations

import struct

import numpy as np
import pydicom
import pytest
from pydicom.pixels.decoders.base import get_decoder

from harness.datasets.dicom_io import frames_of, read_b_value, read_dicom, read_pixels
from harness.datasets.errors import DicomFileError
from tests.dicom_factory import (
    SAGITTAL,
    default_pixels,
    pydicom_test_file,
    undecodable_copy,
    write_enhanced,
    write_slice,
)

MR_SMALL = pydicom_test_file("MR_small.dcm")


def _error(path) -> DicomFileError:
    with pytest.raises(DicomFileError) as info:
        read_dicom(path)
    assert str(path) in str(info.value), "the error must name the file"
    return info.value


# --- pydicom's shipped files -------------------------------------------------------------------------------------


def test_mr_small_reads_with_header_and_pixels():
    ds = read_dicom(MR_SMALL)
    (header,) = frames_of(ds, MR_SMALL)
    assert header.frame is None
    assert (header.rows, header.columns) == (64, 64)
    assert header.position == pytest.approx(tuple(float(v) for v in ds.ImagePositionPatient))
    assert header.orientation == pytest.approx(tuple(float(v) for v in ds.ImageOrientationPatient))
    assert header.pixel_spacing == pytest.approx(tuple(float(v) for v in ds.PixelSpacing))
    assert (header.rescale_slope, header.rescale_intercept, header.b_value) == (1.0, 0.0, None)
    assert header.series_uid == ds.SeriesInstanceUID
    pixels = read_pixels(header)
    assert pixels.dtype == np.float64
    np.testing.assert_array_equal(pixels, pydicom.dcmread(MR_SMALL).pixel_array.astype(np.float64))


@pytest.mark.parametrize(
    "name", ["MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_expb.dcm", "MR_small_RLE.dcm"]
)
def test_other_encodings_decode_like_mr_small(name):
    path = pydicom_test_file(name)
    (header,) = frames_of(read_dicom(path), path)
    expected = read_pixels(frames_of(read_dicom(MR_SMALL), MR_SMALL)[0])
    np.testing.assert_array_equal(read_pixels(header), expected)


def test_truncated_file_is_rejected():
    error = _error(pydicom_test_file("MR_truncated.dcm"))
    assert "truncated" in error.message and "8130" in error.message and "8192" in error.message


def test_pixel_data_longer_than_header_is_rejected():
    # 128 bytes more than 64x64x16 bits: header and data disagree, so the image cannot be trusted.
    error = _error(pydicom_test_file("MR_small_padded.dcm"))
    assert "longer" in error.message


def test_missing_decoder_names_the_plugins(tmp_path):
    copy = undecodable_copy(tmp_path / "compressed.dcm")
    if copy is None:
        pytest.skip("every candidate decoder is installed here")
    path, tsyntax = copy
    error = _error(path)
    assert tsyntax in error.message and "no decoder installed" in error.message
    for plugin in get_decoder(tsyntax).missing_dependencies:
        assert plugin in error.message


def test_dicomdir_has_no_pixel_data():
    error = _error(pydicom_test_file("dicomdirtests/DICOMDIR"))
    assert "no pixel data" in error.message and "Directory" in error.message


# --- files that are not DICOM images -----------------------------------------------------------------------------


def test_empty_file(tmp_path):
    path = tmp_path / "empty.dcm"
    path.write_bytes(b"")
    assert "empty" in _error(path).message


@pytest.mark.parametrize("content", [np.random.default_rng(0).bytes(4096), b"patient,lnm\nP001,1\n"])
def test_random_bytes_and_text_are_not_dicom(tmp_path, content):
    path = tmp_path / "not_dicom"
    path.write_bytes(content)
    assert "not a DICOM file" in _error(path).message


def test_dicm_prefix_followed_by_garbage_is_rejected(tmp_path):
    path = tmp_path / "garbage.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + np.random.default_rng(1).bytes(2048))
    _error(path)  # whatever pydicom makes of it, it is no usable image


def test_missing_file(tmp_path):
    assert "cannot read" in _error(tmp_path / "absent.dcm").message


def test_colour_image_is_rejected(tmp_path):
    def make_rgb(ds):
        ds.set_pixel_data(np.zeros((4, 4, 3), dtype=np.uint8), "RGB", 8, generate_instance_uid=False)

    path = write_slice(tmp_path / "rgb.dcm", pixels=default_pixels(1, 4, 4)[0], edit=make_rgb)
    assert "SamplesPerPixel=3" in _error(path).message


def test_odd_length_pixel_data_with_one_pad_byte_is_accepted(tmp_path):
    def eight_bit_3x3(ds):
        ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 3, 3, 8, 8, 7
        ds.PixelData = bytes(range(1, 10)) + b"\0"  # 9 bytes of image, padded to even length

    path = write_slice(tmp_path / "odd.dcm", pixels=default_pixels(1, 4, 4)[0], edit=eight_bit_3x3)
    (header,) = frames_of(read_dicom(path), path)
    np.testing.assert_array_equal(read_pixels(header), np.arange(1, 10, dtype=float).reshape(3, 3))


# --- geometry and rescale of classic slices ----------------------------------------------------------------------


@pytest.mark.parametrize("keyword", ["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"])
def test_missing_geometry_names_file_and_tag(tmp_path, keyword):
    path = write_slice(tmp_path / "x.dcm", pixels=default_pixels(1, 4, 4)[0], edit=lambda ds: delattr(ds, keyword))
    with pytest.raises(DicomFileError) as info:
        frames_of(read_dicom(path), path)
    assert str(path) in str(info.value) and keyword in info.value.message


def test_classic_header_and_rescale(tmp_path):
    stored = (np.arange(12, dtype=np.int16) - 6).reshape(3, 4)  # negative stored values survive (int16)
    path = write_slice(
        tmp_path / "s.dcm",
        pixels=stored,
        orientation=SAGITTAL,
        position=(12.5, -3.0, 40.0),
        spacing=(0.7, 0.8),
        slope=2.5,
        intercept=-100.0,
        patient_id="P042",
        description="t2 sag",
    )
    (header,) = frames_of(read_dicom(path), path)
    assert header.patient_id == "P042" and header.series_description == "t2 sag"
    assert header.pixel_spacing == (0.7, 0.8)
    np.testing.assert_allclose(header.normal, [-1.0, 0.0, 0.0])
    assert header.slice_position == pytest.approx(-12.5)
    np.testing.assert_allclose(read_pixels(header), stored * 2.5 - 100.0)


# --- b-values ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tag", ["standard", "siemens", "ge", "philips"])
@pytest.mark.parametrize("b", [0, 800, 1400])
def test_b_value_tags(tmp_path, tag, b):
    path = write_slice(tmp_path / "b.dcm", pixels=default_pixels(1, 2, 2)[0], b_value=b, b_value_tag=tag)
    ds = read_dicom(path)
    assert read_b_value(ds) == b  # b=0 is a b-value, not None
    assert frames_of(ds, path)[0].b_value == b


def test_no_b_value_is_none(tmp_path):
    path = write_slice(tmp_path / "t2.dcm", pixels=default_pixels(1, 2, 2)[0])
    assert read_b_value(read_dicom(path)) is None


def test_vendor_tag_is_found_through_its_creator_not_its_element_number(tmp_path):
    def two_creators(ds):
        # Another vendor's creator takes block 0x10, so Siemens' lands in block 0x11: (0019,110C).
        ds.private_block(0x0019, "OTHER VENDOR", create=True).add_new(0x0C, "IS", 555)
        ds.private_block(0x0019, "SIEMENS MR HEADER", create=True).add_new(0x0C, "IS", 900)

    path = write_slice(tmp_path / "b.dcm", pixels=default_pixels(1, 2, 2)[0], edit=two_creators)
    ds = read_dicom(path)
    assert (0x0019, 0x110C) in ds
    assert read_b_value(ds) == 900


def test_element_under_a_foreign_creator_is_ignored(tmp_path):
    edit = lambda ds: ds.private_block(0x0043, "SOMEONE ELSE", create=True).add_new(0x39, "IS", [1000000800, 8])  # noqa: E731
    path = write_slice(tmp_path / "b.dcm", pixels=default_pixels(1, 2, 2)[0], edit=edit)
    assert read_b_value(read_dicom(path)) is None


def test_vendor_tags_stored_as_un_bytes(tmp_path, monkeypatch):
    # pydicom normally re-types known private UN elements on read; without that the value arrives as raw bytes.
    monkeypatch.setattr(pydicom.config, "replace_un_with_known_vr", False)

    def un_tags(ds):
        ds.private_block(0x2001, "Philips Imaging DD 001", create=True).add_new(0x03, "UN", struct.pack("<f", 1000.0))

    path = write_slice(tmp_path / "p.dcm", pixels=default_pixels(1, 2, 2)[0], edit=un_tags)
    ds = read_dicom(path)
    assert isinstance(ds[0x2001, 0x1003].value, bytes)
    assert read_b_value(ds) == 1000.0

    def un_text(ds):
        ds.private_block(0x0043, "GEMS_PARM_01", create=True).add_new(0x39, "UN", b"1000000600\\8\\0\\0 ")

    path = write_slice(tmp_path / "g.dcm", pixels=default_pixels(1, 2, 2)[0], edit=un_text)
    assert read_b_value(read_dicom(path)) == 600.0


# --- enhanced multi-frame MR -------------------------------------------------------------------------------------


def test_enhanced_per_frame_geometry_rescale_and_b_values(tmp_path):
    stored = default_pixels(4, 3, 5)
    positions = [(0.0, 0.0, 4.0 * k) for k in range(4)]
    slopes, intercepts = [1.0, 2.0, 0.5, 4.0], [0.0, -10.0, 3.0, 0.0]
    path = write_enhanced(
        tmp_path / "e.dcm",
        pixels=stored,
        positions=positions,
        slopes=slopes,
        intercepts=intercepts,
        b_values=[0, 800, 0, 800],
        spacing=(0.9, 0.6),
    )
    ds = read_dicom(path)
    headers = frames_of(ds, path)
    assert [h.frame for h in headers] == [0, 1, 2, 3]
    assert [h.position for h in headers] == positions
    assert [h.b_value for h in headers] == [0.0, 800.0, 0.0, 800.0]
    assert all(h.pixel_spacing == (0.9, 0.6) and h.orientation == (1, 0, 0, 0, 1, 0) for h in headers)  # shared
    for h, slope, intercept in zip(headers, slopes, intercepts, strict=True):
        np.testing.assert_allclose(read_pixels(h, ds), stored[h.frame] * slope + intercept)


def test_enhanced_without_rescale_or_diffusion(tmp_path):
    path = write_enhanced(tmp_path / "e.dcm", pixels=default_pixels(2, 2, 2), positions=[(0, 0, 0), (0, 0, 1)])
    headers = frames_of(read_dicom(path), path)
    assert [(h.rescale_slope, h.rescale_intercept, h.b_value) for h in headers] == [(1.0, 0.0, None)] * 2


def test_enhanced_missing_position_names_file_and_tag(tmp_path):
    def drop_position(ds):
        del ds.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence

    path = write_enhanced(
        tmp_path / "e.dcm", pixels=default_pixels(2, 2, 2), positions=[(0, 0, 0), (0, 0, 1)], edit=drop_position
    )
    with pytest.raises(DicomFileError) as info:
        frames_of(read_dicom(path), path)
    assert str(path) in str(info.value)
    assert "ImagePositionPatient" in info.value.message and "frame 1" in info.value.message


def test_enhanced_per_frame_groups_win_over_shared(tmp_path):
    def shared_rescale(ds):
        # A shared transform (slope 10) that frame 1 lacks per frame: frame 1 falls back to it, frame 0 keeps its own.
        del ds.PerFrameFunctionalGroupsSequence[1].PixelValueTransformationSequence
        ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence = pydicom.Sequence([pydicom.Dataset()])
        item = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
        item.RescaleSlope, item.RescaleIntercept, item.RescaleType = 10.0, 1.0, "US"

    path = write_enhanced(
        tmp_path / "e.dcm",
        pixels=default_pixels(2, 2, 2),
        positions=[(0, 0, 0), (0, 0, 1)],
        slopes=[2.0, 3.0],
        intercepts=[0.0, 0.0],
        edit=shared_rescale,
    )
    headers = frames_of(read_dicom(path), path)
    assert [(h.rescale_slope, h.rescale_intercept) for h in headers] == [(2.0, 0.0), (10.0, 1.0)]
