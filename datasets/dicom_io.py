"""Reading one DICOM file safely, and the per-frame header facts the rest of the data layer needs.

`read_dicom` never uses ``force=True`` (with it, random bytes parse as a dataset) and checks what pydicom does not
check when reading: that pixel data exists, has the size the header announces (a truncated file loads without
raising), can be decoded with the installed plugins, and is greyscale. `frames_of` gives one `SliceHeader` per frame
(enhanced MR keeps geometry, rescale and b-value in its functional groups), `read_b_value` finds a classic image's
b-value in the standard tag or a vendor's private tag, and `read_pixels` returns one frame rescaled, in float64.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels.decoders.base import get_decoder

from .errors import DicomFileError

# Vendor private b-value tags: (group, private creator, element offset in the creator's block, binary struct format
# when the value arrives undecoded as bytes (VR UN), value transform).
_VENDOR_B_TAGS: tuple[tuple[int, str, int, str | None, Callable[[float], float]], ...] = (
    (0x0019, "SIEMENS MR HEADER", 0x0C, None, lambda b: b),
    # GE stores 1e9 + b in the first value of (0043,xx39) (e.g. 1000000800 for b800) on many software versions.
    (0x0043, "GEMS_PARM_01", 0x39, None, lambda b: b % 1e9),
    (0x2001, "Philips Imaging DD 001", 0x03, "f", lambda b: b),
)


# Direction cosines must be unit length and orthogonal within this: scanners write 5 to 8 decimals (errors near
# 1e-5), while a damaged or hand-edited header is off by far more.
DIRECTION_TOLERANCE = 1e-3


@dataclass(frozen=True)
class SliceHeader:
    """The facts of one image frame that indexing, sorting and rescaling need (no pixel data)."""

    path: Path
    frame: int | None  # frame index in a multi-frame file; None for a classic single-frame image
    patient_id: str
    study_uid: str
    series_uid: str
    series_number: int | None
    series_description: str
    sop_uid: str
    modality: str
    manufacturer: str
    rows: int
    columns: int
    orientation: tuple[float, float, float, float, float, float]  # ImageOrientationPatient (row dir, column dir)
    position: tuple[float, float, float]  # ImagePositionPatient of the first transmitted pixel, mm
    pixel_spacing: tuple[float, float]  # (row spacing = between rows, column spacing = between columns), mm
    slice_thickness: float | None
    rescale_slope: float
    rescale_intercept: float
    b_value: float | None  # s/mm^2, None when not diffusion weighted
    image_type: tuple[str, ...] = ()  # ImageType (FrameType for an enhanced frame), e.g. DERIVED\PRIMARY\DIFFUSION\ADC

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal: cross(row direction, column direction)."""
        row, col = np.asarray(self.orientation[:3]), np.asarray(self.orientation[3:])
        n = np.cross(row, col)
        return n / np.linalg.norm(n)

    @property
    def slice_position(self) -> float:
        """Position along the slice normal, mm: dot(normal, ImagePositionPatient)."""
        return float(np.dot(self.normal, np.asarray(self.position)))


def read_dicom(path: Path) -> pydicom.Dataset:
    """Read and validate one DICOM image file.

    Args:
        path: the file.

    Returns:
        The dataset, pixel data included but not decoded.

    Raises:
        DicomFileError: naming the file, when it is empty, not DICOM, has no (or wrongly sized) pixel data, needs a
            decoder that is not installed, or is not a greyscale image.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DicomFileError(path, f"cannot read the file: {exc}") from exc
    if size == 0:
        raise DicomFileError(path, "empty file (0 bytes): an interrupted copy? copy it again or remove it")
    try:
        ds = pydicom.dcmread(path)  # never force=True: with it, any bytes "parse"
    except InvalidDicomError as exc:
        raise DicomFileError(
            path, "not a DICOM file (no 128-byte preamble and 'DICM' prefix); remove it from the DICOM folder"
        ) from exc
    except OSError as exc:
        raise DicomFileError(path, f"cannot read the file: {exc}") from exc
    except Exception as exc:  # pydicom raises many types on a corrupt header; all mean the same to the user
        raise DicomFileError(path, f"corrupt or truncated DICOM header ({type(exc).__name__}: {exc})") from exc
    _check_image(ds, path)
    return ds


def _check_image(ds: pydicom.Dataset, path: Path) -> None:
    """Raise `DicomFileError` unless ``ds`` holds greyscale pixel data that can be decoded and has the right size."""
    if "PixelData" not in ds:
        sop = ds.get("SOPClassUID") or ds.get("file_meta", pydicom.Dataset()).get("MediaStorageSOPClassUID")
        kind = f" (SOP class {sop.name})" if sop else ""
        raise DicomFileError(path, f"no pixel data{kind}: not an image (a DICOMDIR index, a report...)")
    missing = [kw for kw in ("Rows", "Columns", "BitsAllocated") if ds.get(kw) in (None, "")]
    if missing:
        raise DicomFileError(path, f"image without {', '.join(missing)}: the pixel data cannot be interpreted")
    samples = int(ds.get("SamplesPerPixel") or 1)
    if samples != 1:
        photometric = ds.get("PhotometricInterpretation", "?")
        raise DicomFileError(
            path, f"colour image (SamplesPerPixel={samples}, {photometric}) not supported: MR sequences are greyscale"
        )
    tsyntax = ds.get("file_meta", pydicom.Dataset()).get("TransferSyntaxUID")
    if tsyntax is None:
        raise DicomFileError(path, "the file meta information has no TransferSyntaxUID (0002,0010)")
    if tsyntax.is_encapsulated:
        _check_decoder(tsyntax, path)
        return
    frames = int(ds.get("NumberOfFrames") or 1)
    n_bits = int(ds.Rows) * int(ds.Columns) * frames * samples * int(ds.BitsAllocated)
    expected = (n_bits + 7) // 8
    actual = len(ds.PixelData)
    # Element values have even length, so an odd-sized image carries one byte of padding.
    if actual != expected and not (expected % 2 == 1 and actual == expected + 1):
        what = "truncated: pixel data is short" if actual < expected else "pixel data is longer than the header says"
        raise DicomFileError(
            path,
            f"{what} ({actual} bytes, expected {expected} for {ds.Rows}x{ds.Columns}, {frames} frame(s), "
            f"{ds.BitsAllocated} bits); the file is damaged or its header is wrong: copy it again from the source",
        )


def _check_decoder(tsyntax: pydicom.uid.UID, path: Path) -> None:
    """Raise `DicomFileError` naming the plugins to install when no decoder for ``tsyntax`` is available."""
    name = f"{tsyntax.name} ({tsyntax})"
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError as exc:
        raise DicomFileError(path, f"pydicom cannot decode pixel data in transfer syntax {name}") from exc
    if not decoder.is_available:
        plugins = "; or ".join(decoder.missing_dependencies) or "a decoder plugin"
        raise DicomFileError(
            path,
            f"compressed pixel data ({name}) and no decoder installed: install one of: {plugins} "
            "(or decompress the files, e.g. with gdcmconv --raw)",
        )


def _as_list(value: Any) -> list[Any]:
    """An element value as a list: [] when absent or empty, its items when multi-valued, else [value]."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    return list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]


def _number(value: Any, binary_format: str | None = None, little_endian: bool = True) -> float | None:
    """The first number in an element value (str, number, multi-value or undecoded bytes); None if there is none."""
    if isinstance(value, bytes) and binary_format is not None and len(value) >= struct.calcsize(binary_format):
        # VR UN (written without the private dictionary): a binary VR such as FL needs unpacking.
        return float(struct.unpack_from(("<" if little_endian else ">") + binary_format, value)[0])
    if isinstance(value, bytes):  # VR UN holding a text VR (IS, DS): ASCII, maybe multi-valued
        value = value.decode("ascii", errors="replace").strip("\x00 ").split("\\")[0]
    values = _as_list(value)
    try:
        number = float(values[0]) if values else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and np.isfinite(number) else None


def read_b_value(ds: pydicom.Dataset) -> float | None:
    """The diffusion b-value of a classic image, from the standard tag or a vendor tag.

    Args:
        ds: the image dataset, read before any de-identification (which may strip private tags).

    Returns:
        The b-value in s/mm^2 (0 is a valid b-value), or None when no tag holds one.
    """
    standard = _number(ds.get("DiffusionBValue"))
    if standard is not None:
        return standard
    little_endian = getattr(ds, "original_encoding", (None, True))[1] is not False
    for group, creator, offset, binary_format, transform in _VENDOR_B_TAGS:
        try:
            element = ds.private_block(group, creator)[offset]
        except KeyError:  # creator absent, or its block lacks the element
            continue
        value = _number(element.value, binary_format, little_endian)
        if value is not None:
            return float(transform(value))
    return None


def _floats(item: pydicom.Dataset | None, keyword: str, count: int, path: Path, where: str) -> tuple[float, ...]:
    """``count`` floats of a required multi-valued element, else `DicomFileError` naming the file and the tag."""
    values = _as_list(None if item is None else item.get(keyword))
    if len(values) != count:
        tag = pydicom.datadict.tag_for_keyword(keyword) or 0
        found = "missing" if not values else f"has {len(values)} values, expected {count}"
        raise DicomFileError(
            path, f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X}) {found}{where}: the slice cannot be placed in space"
        )
    try:
        return tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise DicomFileError(path, f"{keyword} {list(values)}{where} is not numeric: the header is damaged") from None


def _image_type(value: Any) -> tuple[str, ...]:
    """ImageType / FrameType as upper-case words, e.g. ('DERIVED', 'PRIMARY', 'DIFFUSION', 'ADC')."""
    return tuple(str(word).strip().upper() for word in _as_list(value))


def _check_geometry(
    orientation: tuple[float, ...], position: tuple[float, ...], spacing: tuple[float, ...], path: Path, where: str
) -> None:
    """`DicomFileError` unless the frame can be placed in space: finite values, positive pixel spacing, and two
    orthonormal direction cosines (a NaN position once sorted a series wrongly and put every box on one slice)."""
    for keyword, values in (
        ("ImagePositionPatient", position),
        ("ImageOrientationPatient", orientation),
        ("PixelSpacing", spacing),
    ):
        if not np.all(np.isfinite(values)):
            raise DicomFileError(
                path, f"{keyword} {list(values)}{where} holds a non-finite value: the slice cannot be placed in space"
            )
    if min(spacing) <= 0:
        raise DicomFileError(path, f"PixelSpacing {list(spacing)}{where} must be positive (mm between pixel centres)")
    row, column = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    lengths = (float(np.linalg.norm(row)), float(np.linalg.norm(column)))
    cosine = float(np.dot(row, column))
    if max(abs(length - 1) for length in lengths) > DIRECTION_TOLERANCE or abs(cosine) > DIRECTION_TOLERANCE:
        raise DicomFileError(
            path,
            f"ImageOrientationPatient {list(orientation)}{where} is not two orthogonal unit vectors (lengths "
            f"{lengths[0]:.4f} and {lengths[1]:.4f}, dot product {cosine:.4f}; tolerance {DIRECTION_TOLERANCE}): "
            "the header is damaged",
        )


def _header(
    common: dict[str, Any],
    frame: int | None,
    items: dict[str, pydicom.Dataset | None],
    b_value: float | None,
    where: str,
    image_type: tuple[str, ...] = (),
) -> SliceHeader:
    """One `SliceHeader` from the items holding plane position/orientation, pixel measures and value transform."""
    path = common["path"]
    orientation = _floats(items["orientation"], "ImageOrientationPatient", 6, path, where)
    position = _floats(items["position"], "ImagePositionPatient", 3, path, where)
    measures, transform = items["measures"], items["transform"]
    spacing = _floats(measures, "PixelSpacing", 2, path, where)
    _check_geometry(orientation, position, spacing, path, where)
    slope = None if transform is None else _number(transform.get("RescaleSlope"))
    intercept = None if transform is None else _number(transform.get("RescaleIntercept"))
    return SliceHeader(
        frame=frame,
        orientation=orientation,  # type: ignore[arg-type]
        position=position,  # type: ignore[arg-type]
        pixel_spacing=spacing,  # type: ignore[arg-type]
        slice_thickness=None if measures is None else _number(measures.get("SliceThickness")),
        rescale_slope=1.0 if slope is None else slope,
        rescale_intercept=0.0 if intercept is None else intercept,
        b_value=b_value,
        image_type=image_type,
        **common,
    )


def frames_of(ds: pydicom.Dataset, path: Path) -> list[SliceHeader]:
    """The `SliceHeader` of every frame in ``ds``.

    Args:
        ds: a dataset from `read_dicom`.
        path: the file it came from (recorded in the headers and named in errors).

    Returns:
        One header for a classic single-frame image; one per frame for an enhanced (multi-frame) image, whose
        geometry, rescale and b-value come from the per-frame functional groups, else the shared ones.

    Raises:
        DicomFileError: when ImagePositionPatient, ImageOrientationPatient or PixelSpacing is missing (the message
            names the file and the tag), or a multi-frame image has no functional groups to place its frames.
    """
    path = Path(path)
    series_uid = str(ds.get("SeriesInstanceUID") or "")
    if not series_uid:
        raise DicomFileError(path, "SeriesInstanceUID (0020,000E) missing: the image cannot be grouped into a series")
    series_number = _number(ds.get("SeriesNumber"))
    common = {
        "path": path,
        "patient_id": str(ds.get("PatientID") or ""),
        "study_uid": str(ds.get("StudyInstanceUID") or ""),
        "series_uid": series_uid,
        "series_number": None if series_number is None else int(series_number),
        "series_description": str(ds.get("SeriesDescription") or ""),
        "sop_uid": str(ds.get("SOPInstanceUID") or ""),
        "modality": str(ds.get("Modality") or ""),
        "manufacturer": str(ds.get("Manufacturer") or ""),
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
    }
    n_frames = int(ds.get("NumberOfFrames") or 1)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    shared = ds.get("SharedFunctionalGroupsSequence") or []
    if not per_frame and not shared:
        if n_frames > 1:
            raise DicomFileError(path, f"{n_frames} frames but no functional groups: frame positions are unknown")
        items = dict.fromkeys(("position", "orientation", "measures", "transform"), ds)
        return [_header(common, None, items, read_b_value(ds), "", _image_type(ds.get("ImageType")))]
    if per_frame and len(per_frame) != n_frames:
        raise DicomFileError(path, f"PerFrameFunctionalGroupsSequence has {len(per_frame)} items for {n_frames} frames")

    def macro(frame: int, keyword: str) -> pydicom.Dataset | None:
        """The first item of a functional group macro, per-frame first, shared as fallback."""
        for groups in (per_frame[frame : frame + 1], shared[:1]):
            if groups and groups[0].get(keyword):
                return groups[0].get(keyword)[0]
        return None

    headers = []
    for frame in range(n_frames):
        items = {
            "position": macro(frame, "PlanePositionSequence"),
            "orientation": macro(frame, "PlaneOrientationSequence"),
            "measures": macro(frame, "PixelMeasuresSequence"),
            "transform": macro(frame, "PixelValueTransformationSequence"),
        }
        diffusion = macro(frame, "MRDiffusionSequence")
        b_value = None if diffusion is None else _number(diffusion.get("DiffusionBValue"))
        frame_type = macro(frame, "MRImageFrameTypeSequence")
        image_type = _image_type(ds.get("ImageType") if frame_type is None else frame_type.get("FrameType"))
        headers.append(_header(common, frame, items, b_value, f" in frame {frame}'s functional groups", image_type))
    return headers


def read_pixels(header: SliceHeader, ds: pydicom.Dataset | None = None) -> np.ndarray:
    """The frame's pixel values as float64 after RescaleSlope/Intercept.

    Args:
        header: the frame, from `frames_of`.
        ds: the dataset of ``header.path`` when the caller has it (pydicom caches the decoded array on it, so the
            frames of a multi-frame file are decoded once); read from ``header.path`` when None.

    Returns:
        Array of shape (rows, columns), float64.

    Raises:
        DicomFileError: when the file cannot be read or its pixel data cannot be decoded.
    """
    if ds is None:
        ds = read_dicom(header.path)
    try:
        stored = ds.pixel_array
    except Exception as exc:  # decoder plugins raise assorted types for corrupt data
        raise DicomFileError(header.path, f"pixel data cannot be decoded ({type(exc).__name__}: {exc})") from exc
    frames = stored if stored.ndim == 3 else stored[np.newaxis]
    index = header.frame or 0
    if index >= frames.shape[0] or frames.shape[1:] != (header.rows, header.columns):
        raise DicomFileError(
            header.path, f"decoded pixel data has shape {stored.shape}: no {header.rows}x{header.columns} frame {index}"
        )
    stored = frames[index]
    return stored.astype(np.float64) * header.rescale_slope + header.rescale_intercept
