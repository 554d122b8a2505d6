"""Small real DICOM files for tests: classic MR slices, whole series (DWI included) and enhanced multi-frame MR.

Every file is a proper DICOM file (128-byte preamble, file meta, Explicit VR Little Endian) written with
``save_as(path, enforce_file_format=True)``, so the readers under test take the same path as for scanner files.

The default pixel pattern is deterministic and non-constant: ``S0[k, i, j] = 1000 + 10 k + 3 i + 2 j`` for slice k,
row i, column j, and ``round(S0 * exp(-b / 1000))`` at b-value b, i.e. a tissue with ADC = 1e-3 mm^2/s (1000 in ADC
units). Positions are ``origin + k * slice_spacing * normal`` with ``normal = cross(row, col)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
B_VALUE_TAGS = ("standard", "siemens", "ge", "philips")
_MANUFACTURERS = {
    "standard": "",
    "siemens": "SIEMENS",
    "ge": "GE MEDICAL SYSTEMS",
    "philips": "Philips Medical Systems",
}


# Compressed transfer syntaxes of greyscale images, in order of preference for a "no decoder installed" case.
_COMPRESSED = ("1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.80")


def undecodable_copy(path: Path) -> tuple[Path, str] | None:
    """A copy of pydicom's JPEG-LS MR file at ``path`` relabelled with a compressed transfer syntax for which no
    decoder is installed here (the frames are never decoded: the check refuses first), and that syntax; None when
    every candidate has a decoder (then the test that needs one skips)."""
    from pydicom.pixels.decoders.base import get_decoder

    for syntax in _COMPRESSED:
        if not get_decoder(syntax).is_available:
            ds = pydicom.dcmread(pydicom_test_file("MR_small_jpeg_ls_lossless.dcm"))
            ds.file_meta.TransferSyntaxUID = syntax
            ds.save_as(path)
            return path, syntax
    return None


def pydicom_test_file(name: str) -> Path:
    """A file shipped inside pydicom's package (offline), e.g. ``MR_small.dcm`` or ``dicomdirtests/DICOMDIR``."""
    return Path(pydicom.__file__).parent / "data" / "test_files" / name


def unit_normal(orientation: Sequence[float]) -> np.ndarray:
    """cross(row, col) of an ImageOrientationPatient, normalised."""
    n = np.cross(np.asarray(orientation[:3], dtype=float), np.asarray(orientation[3:], dtype=float))
    return n / np.linalg.norm(n)


def default_pixels(n_slices: int, rows: int, cols: int, b_value: float | None = None) -> np.ndarray:
    """The module's deterministic pattern, uint16, shape (n_slices, rows, cols), attenuated for b-value b."""
    k, i, j = np.meshgrid(np.arange(n_slices), np.arange(rows), np.arange(cols), indexing="ij")
    s0 = 1000.0 + 10 * k + 3 * i + 2 * j
    return np.round(s0 * np.exp(-(b_value or 0.0) / 1000.0)).astype(np.uint16)


def _add_b_value(ds: Dataset, b_value: float, tag: str) -> None:
    if tag == "standard":
        ds.DiffusionBValue = float(b_value)
    elif tag == "siemens":
        ds.private_block(0x0019, "SIEMENS MR HEADER", create=True).add_new(0x0C, "IS", int(b_value))
    elif tag == "ge":  # GE: 1e9 + b in the first of four values
        ds.private_block(0x0043, "GEMS_PARM_01", create=True).add_new(
            0x39, "IS", [1_000_000_000 + int(b_value), 8, 0, 0]
        )
    elif tag == "philips":
        ds.private_block(0x2001, "Philips Imaging DD 001", create=True).add_new(0x03, "FL", float(b_value))
    else:
        raise ValueError(f"b_value_tag must be one of {B_VALUE_TAGS}, not {tag!r}")


def _base_dataset(sop_class: str, patient_id: str, study_uid: str | None, series_uid: str | None, description: str):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.PatientID = patient_id
    ds.PatientName = f"Test^{patient_id}"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SeriesDescription = description
    ds.SeriesNumber = 1
    # The patient and general study modules' type 2 attributes (empty), which a derived object such as a
    # DICOM-SEG (highdicom) copies from its source images.
    ds.PatientBirthDate = ds.PatientSex = ds.StudyDate = ds.StudyTime = ""
    ds.ReferringPhysicianName = ds.StudyID = ds.AccessionNumber = ""
    return ds


def _set_pixels(ds: Dataset, pixels: np.ndarray) -> None:
    pixels = np.asarray(pixels)
    if pixels.dtype not in (np.uint16, np.int16):
        raise ValueError(f"pixels must be uint16 or int16, not {pixels.dtype}")
    ds.set_pixel_data(pixels, "MONOCHROME2", 16, generate_instance_uid=False)


def _save(ds: Dataset, path: Path, edit: Callable[[Dataset], None] | None) -> Path:
    if edit is not None:
        edit(ds)  # lets a test remove or spoil tags before the file is written
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_slice(
    path: Path,
    *,
    pixels: np.ndarray,
    patient_id: str = "P001",
    series_uid: str | None = None,
    description: str = "T2 TSE AX",
    orientation: Sequence[float] = AXIAL,
    position: Sequence[float] = (0.0, 0.0, 0.0),
    spacing: tuple[float, float] = (1.0, 1.0),
    slice_thickness: float | None = 5.0,
    slope: float = 1.0,
    intercept: float = 0.0,
    b_value: float | None = None,
    b_value_tag: str = "standard",
    instance_number: int = 1,
    study_uid: str | None = None,
    edit: Callable[[Dataset], None] | None = None,
) -> Path:
    """Write one classic MR Image Storage slice.

    Args:
        path: the file to write (parent folders are created).
        pixels: (rows, columns), uint16 or int16 stored values.
        b_value_tag: where the b-value goes: ``standard`` (0018,9087), ``siemens``, ``ge`` or ``philips``.
        slope, intercept: RescaleSlope/Intercept, written only when not (1, 0).
        edit: called on the dataset just before saving (to delete or spoil tags).

    Returns:
        ``path``.
    """
    ds = _base_dataset(MR_IMAGE_STORAGE, patient_id, study_uid, series_uid, description)
    ds.Manufacturer = _MANUFACTURERS.get(b_value_tag, "")
    ds.InstanceNumber = instance_number
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[ds.StudyInstanceUID])
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.PixelSpacing = [float(v) for v in spacing]
    if slice_thickness is not None:
        ds.SliceThickness = slice_thickness
    if (slope, intercept) != (1.0, 0.0):
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if b_value is not None:
        _add_b_value(ds, b_value, b_value_tag)
    _set_pixels(ds, pixels)
    return _save(ds, path, edit)


def write_series(
    folder: Path,
    *,
    patient_id: str,
    series_uid: str,
    description: str,
    n_slices: int,
    rows: int,
    cols: int,
    orientation: Sequence[float] = AXIAL,
    spacing: tuple[float, float] = (1.0, 1.0),
    slice_spacing: float = 5.0,
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    b_values: Sequence[float | None] = (None,),
    pixels: np.ndarray | None = None,
    slope: float = 1.0,
    intercept: float = 0.0,
    study_uid: str | None = None,
    b_value_tag: str = "standard",
    instance_numbers: Sequence[int] | None = None,
) -> list[Path]:
    """Write a regular stack of slices, once per b-value (a DWI series repeats the positions for each b-value).

    Args:
        folder: where the files go, one per slice and b-value.
        b_values: ``(None,)`` for a non-DWI series, e.g. ``(0, 800)`` for DWI.
        pixels: stored values, (n_slices, rows, cols) used for every b-value or (len(b_values), n_slices, rows, cols);
            None: `default_pixels` per b-value.
        instance_numbers: per slice (repeated for each b-value), to scramble InstanceNumber against position;
            default 1, 2, ... in position order.

    Returns:
        The written paths, b-value major then slice order (increasing position).
    """
    normal = unit_normal(orientation)
    tag = hashlib.sha1(series_uid.encode()).hexdigest()[:8]
    study_uid = study_uid or generate_uid(entropy_srcs=[patient_id, "study"])
    paths = []
    for bi, b in enumerate(b_values):
        if pixels is None:
            stack = default_pixels(n_slices, rows, cols, b)
        else:
            stack = np.asarray(pixels)[bi] if np.ndim(pixels) == 4 else np.asarray(pixels)
        for k in range(n_slices):
            number = (instance_numbers[k] if instance_numbers is not None else k + 1) + bi * n_slices
            paths.append(
                write_slice(
                    Path(folder) / f"{tag}_{bi:02d}_{k:03d}.dcm",
                    pixels=stack[k],
                    patient_id=patient_id,
                    series_uid=series_uid,
                    description=description,
                    orientation=orientation,
                    position=np.asarray(origin, dtype=float) + k * slice_spacing * normal,
                    spacing=spacing,
                    slice_thickness=slice_spacing,
                    slope=slope,
                    intercept=intercept,
                    b_value=b,
                    b_value_tag=b_value_tag,
                    instance_number=number,
                    study_uid=study_uid,
                )
            )
    return paths


def _item(**attributes) -> DicomSequence:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return DicomSequence([item])


def write_enhanced(
    path: Path,
    *,
    pixels: np.ndarray,
    positions: Sequence[Sequence[float]],
    patient_id: str = "P001",
    series_uid: str | None = None,
    description: str = "DWI enhanced",
    orientation: Sequence[float] = AXIAL,
    spacing: tuple[float, float] = (1.0, 1.0),
    slice_thickness: float = 5.0,
    slopes: Sequence[float] | None = None,
    intercepts: Sequence[float] | None = None,
    b_values: Sequence[float | None] | None = None,
    study_uid: str | None = None,
    edit: Callable[[Dataset], None] | None = None,
) -> Path:
    """Write one Enhanced MR Image Storage file with one frame per position.

    Orientation and pixel measures go in the shared functional groups (as scanners usually write them); position,
    rescale (PixelValueTransformationSequence) and b-value (MRDiffusionSequence) go in the per-frame groups.

    Args:
        pixels: (frames, rows, cols), uint16 or int16.
        positions: ImagePositionPatient per frame.
        slopes, intercepts: per frame; None: no rescale written for that frame (reads as 1 and 0).
        b_values: per frame; None (the list or an entry): no MRDiffusionSequence for that frame.

    Returns:
        ``path``.
    """
    pixels = np.asarray(pixels)
    n = pixels.shape[0]
    if len(positions) != n:
        raise ValueError(f"{len(positions)} positions for {n} frames")
    ds = _base_dataset(ENHANCED_MR_IMAGE_STORAGE, patient_id, study_uid, series_uid, description)
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = generate_uid()
    shared = Dataset()
    shared.PlaneOrientationSequence = _item(ImageOrientationPatient=[float(v) for v in orientation])
    shared.PixelMeasuresSequence = _item(PixelSpacing=[float(v) for v in spacing], SliceThickness=slice_thickness)
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    frames = []
    for k in range(n):
        frame = Dataset()
        frame.PlanePositionSequence = _item(ImagePositionPatient=[float(v) for v in positions[k]])
        if slopes is not None or intercepts is not None:
            frame.PixelValueTransformationSequence = _item(
                RescaleSlope=1.0 if slopes is None else slopes[k],
                RescaleIntercept=0.0 if intercepts is None else intercepts[k],
                RescaleType="US",
            )
        if b_values is not None and b_values[k] is not None:
            frame.MRDiffusionSequence = _item(DiffusionBValue=float(b_values[k]))
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    _set_pixels(ds, pixels)  # sets NumberOfFrames from the array's first axis
    return _save(ds, path, edit)
