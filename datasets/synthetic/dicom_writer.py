"""Writing one synthetic slice as a classic MR Image Storage file (Explicit VR Little Endian, 16-bit, uncompressed).

Nothing here reads a clock or an unseeded random source: the same inputs give byte-identical files. UIDs come from
`pydicom.uid.generate_uid` with entropy sources derived from the cohort arguments, so they are stable and unique per
cohort. b-values are written the way each vendor does (`write_b_value`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from .render import SliceGrid
from .scanners import CentreProtocol, SeriesProtocol

GYROMAGNETIC_MHZ_PER_T = 42.577478


def uid(*parts: object) -> str:
    """A deterministic DICOM UID under pydicom's root, from the given parts (cohort key first)."""
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _ds(value: float) -> str:
    """A DS string of at most 16 characters (6 decimals, trailing zeros removed)."""
    text = f"{float(value) + 0.0:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


@dataclass(frozen=True)
class PatientHeader:
    patient_id: str
    age: int
    study_uid: str
    frame_uid: str
    study_date: str  # YYYYMMDD, derived from the seed, never from the clock


@dataclass(frozen=True)
class SeriesHeader:
    """What differs between the series of one patient."""

    protocol: SeriesProtocol
    description: str
    number: int
    uid: str
    image_type: tuple[str, ...]
    rescale_slope: float
    window: tuple[float, float]  # (center, width) in stored units


def write_b_value(ds: Dataset, b_value: int, style: str) -> None:
    """Write a b-value where the centre's scanner puts it.

    ``siemens``: (0019,xx0C) IS under private creator "SIEMENS MR HEADER"; ``ge``: (0043,xx39) IS, four values
    ``1000000000 + b\\8\\0\\0`` under "GEMS_PARM_01" (readers take the first value mod 1e9); ``ge_plain``: the same
    tag without the 1e9 offset (older GE software); ``standard``: DiffusionBValue (0018,9087) FD.
    """
    if style == "siemens":
        ds.private_block(0x0019, "SIEMENS MR HEADER", create=True).add_new(0x0C, "IS", int(b_value))
    elif style == "ge":
        ds.private_block(0x0043, "GEMS_PARM_01", create=True).add_new(0x39, "IS", [1_000_000_000 + b_value, 8, 0, 0])
    elif style == "ge_plain":
        ds.private_block(0x0043, "GEMS_PARM_01", create=True).add_new(0x39, "IS", [int(b_value), 0, 0, 0])
    elif style == "standard":
        ds.DiffusionBValue = float(b_value)
        ds.DiffusionDirectionality = "ISOTROPIC" if b_value else "NONE"
    else:
        raise ValueError(f"unknown b-value style {style!r}")


def series_template(
    *, centre: CentreProtocol, patient: PatientHeader, series: SeriesHeader, grid: SliceGrid, b_value: int | None
) -> Dataset:
    """Every element that is the same for all slices of one series (and one b-value).

    Args:
        centre: the acquiring centre (scanner and vendor habits).
        patient: patient-level header values.
        series: series-level header values.
        grid: the series' geometry (orientation, pixel size).
        b_value: the diffusion b-value of a DWI series, None otherwise.
    """
    p = series.protocol
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = list(series.image_type)
    ds.SOPClassUID = MRImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = patient.study_date
    ds.StudyTime = "090000"
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = f"09{min(series.number, 59):02d}00"
    ds.AccessionNumber = ""
    ds.Modality = "MR"
    ds.Manufacturer = centre.manufacturer
    ds.InstitutionName = centre.institution
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "PELVIS^SYNTHETIC"
    ds.SeriesDescription = series.description
    ds.ManufacturerModelName = centre.model
    ds.PatientName = f"SYNTHETIC^{patient.patient_id}"
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"
    ds.PatientAge = f"{patient.age:03d}Y"
    ds.BodyPartExamined = "PELVIS"
    ds.ScanningSequence = p.scanning_sequence.split("\\")
    ds.SequenceVariant = p.sequence_variant.split("\\")
    ds.ScanOptions = "FS" if p.contrast in ("t2fs", "cet1", "dwi") else ""
    ds.MRAcquisitionType = "3D" if p.scanning_sequence == "GR" else "2D"
    ds.SequenceName = p.sequence_name
    ds.SliceThickness = _ds(p.thickness_mm)
    ds.RepetitionTime = _ds(p.repetition_time_ms)
    ds.EchoTime = _ds(p.echo_time_ms)
    ds.NumberOfAverages = _ds(p.averages)
    ds.ImagingFrequency = _ds(round(GYROMAGNETIC_MHZ_PER_T * centre.field_strength_t, 4))
    ds.ImagedNucleus = "1H"
    ds.MagneticFieldStrength = _ds(centre.field_strength_t)
    ds.SpacingBetweenSlices = _ds(p.spacing_mm)
    ds.ProtocolName = p.description
    ds.AcquisitionMatrix = [0, p.acquisition_matrix[0], p.acquisition_matrix[1], 0]  # frequency along the rows
    ds.InPlanePhaseEncodingDirection = "COL"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = patient.study_uid
    ds.SeriesInstanceUID = series.uid
    ds.StudyID = "1"
    ds.SeriesNumber = series.number
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = [_ds(v) for v in grid.orientation]
    ds.FrameOfReferenceUID = patient.frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(grid.row_coords.size), int(grid.col_coords.size)
    ds.PixelSpacing = [_ds(grid.pixel_mm), _ds(grid.pixel_mm)]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.WindowCenter = _ds(series.window[0])
    ds.WindowWidth = _ds(series.window[1])
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = _ds(series.rescale_slope)
    ds.RescaleType = "US"
    if b_value is not None:
        write_b_value(ds, b_value, centre.b_value_tag)
    return ds


def write_slice(
    path: Path, template: Dataset, *, grid: SliceGrid, k: int, instance: int, pixels: np.ndarray, sop_uid: str
) -> int:
    """Write slice k of a series to `path`; returns the file size in bytes.

    Args:
        path: the file to create (its folder must exist).
        template: the series' shared elements (`series_template`); it is not modified.
        grid: the series' geometry; slice k gives ImagePositionPatient.
        k: index of the slice in `grid`.
        instance: InstanceNumber.
        pixels: (rows, cols) uint16 stored values.
        sop_uid: SOPInstanceUID.
    """
    if pixels.shape != (template.Rows, template.Columns):
        raise ValueError(f"pixels {pixels.shape} do not match the series' {template.Rows} x {template.Columns}")
    # A new dict of the same (never modified) elements: per-slice elements are added as new objects, so the
    # template's elements are shared safely between slices.
    ds = Dataset(dict(template))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    ds.add_new(0x00080018, "UI", sop_uid)  # SOPInstanceUID
    ds.add_new(0x00200013, "IS", instance)  # InstanceNumber
    ds.add_new(0x00200032, "DS", [_ds(v) for v in grid.ipp(k)])  # ImagePositionPatient
    ds.add_new(0x00201041, "DS", _ds(grid.slice_position(k)))  # SliceLocation
    ds.add_new(0x7FE00010, "OW", np.ascontiguousarray(pixels, dtype="<u2").tobytes())  # PixelData
    ds.save_as(path, enforce_file_format=True)
    return path.stat().st_size
