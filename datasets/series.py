"""Assembling the frames of one series into regular 3D volumes.

`load_series` checks, from the headers alone, that the frames form regular stacks: one SeriesInstanceUID, one
orientation (scouts in three planes share a series on some scanners), one matrix and pixel spacing. It groups the
frames by b-value (a DWI series holds several b-values at the same positions), sorts each group by position along
the slice normal (never by InstanceNumber, which scanners number in acquisition order), rejects duplicate positions,
irregular gaps and stacks sheared in plane, and only then reads the pixels, each file once, rescaled in float, or
takes the pixels a caller has already read (e.g. in worker processes that parse headers and pixels in one pass).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .dicom_io import SliceHeader, read_dicom, read_pixels
from .errors import SeriesError

ORIENTATION_TOLERANCE = 1e-4  # direction cosines; scanners write 5 to 8 decimals
SPACING_TOLERANCE_MM = 1e-4  # pixel spacing
DUPLICATE_TOLERANCE_MM = 1e-3  # two positions closer than this are the same slice
GAP_TOLERANCE = 0.1  # a gap may differ from the median gap by 10% of it, or by GAP_TOLERANCE_MM
GAP_TOLERANCE_MM = 0.1
SHEAR_TOLERANCE_PIXELS = 0.5  # in-plane offset between slices, in pixels, before the stack counts as sheared

FrameKey = tuple[Path, int | None]  # (SliceHeader.path, SliceHeader.frame): one frame of one file


@dataclass
class Volume:
    """A regular stack of parallel slices, sorted by increasing position along the slice normal.

    ``pixels[k, i, j]`` is row i, column j of slice k. Voxel (k, i, j) lies at
    ``origin + k * slice_spacing * normal + i * pixel_spacing[0] * col_dir + j * pixel_spacing[1] * row_dir``.
    """

    pixels: np.ndarray  # float32, (slices, rows, columns)
    positions: np.ndarray  # float64, (slices,), mm along `normal`, increasing
    row_dir: np.ndarray  # (3,) direction of increasing column index (first triplet of ImageOrientationPatient)
    col_dir: np.ndarray  # (3,) direction of increasing row index (second triplet)
    normal: np.ndarray  # (3,) cross(row_dir, col_dir)
    origin: np.ndarray  # (3,) ImagePositionPatient of slice 0, mm
    pixel_spacing: tuple[float, float]  # (between rows, between columns), mm
    slice_spacing: float  # mm between consecutive slices (0 for a single slice without SliceThickness)
    series_uid: str
    series_description: str
    b_value: float | None = None
    source_files: list[str] = field(default_factory=list)  # one path per slice, same order as `pixels`

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.pixels.shape)  # type: ignore[return-value]


def _where(header: SliceHeader) -> str:
    """The series (description + UID) and one file, for `SeriesError.where`."""
    frame = "" if header.frame is None else f" frame {header.frame}"
    return f"series '{header.series_description}' ({header.series_uid}), file {header.path}{frame}"


def _check_common(headers: Sequence[SliceHeader]) -> None:
    """One series UID, one orientation, one matrix, one pixel spacing; else `SeriesError`."""
    first = headers[0]
    uids = sorted({h.series_uid for h in headers})
    if len(uids) > 1:
        other = next(h for h in headers if h.series_uid != first.series_uid)
        raise SeriesError(_where(other), f"several series mixed ({len(uids)} SeriesInstanceUIDs: {', '.join(uids)})")
    reference = np.asarray(first.orientation)
    orientations = [reference]
    for h in headers:
        if not any(np.abs(np.asarray(h.orientation) - o).max() <= ORIENTATION_TOLERANCE for o in orientations):
            orientations.append(np.asarray(h.orientation))
    if len(orientations) > 1:
        odd = next(h for h in headers if np.abs(np.asarray(h.orientation) - reference).max() > ORIENTATION_TOLERANCE)
        raise SeriesError(
            _where(odd),
            f"mixed orientation ({len(orientations)} different ImageOrientationPatient, e.g. {list(first.orientation)}"
            f" and {list(odd.orientation)}): localizer/scout images or projections, not one stack of parallel slices",
        )
    for h in headers:
        if (h.rows, h.columns) != (first.rows, first.columns):
            raise SeriesError(
                _where(h), f"mixed matrix: {h.rows}x{h.columns} here, {first.rows}x{first.columns} in {first.path}"
            )
        if np.abs(np.subtract(h.pixel_spacing, first.pixel_spacing)).max() > SPACING_TOLERANCE_MM:
            raise SeriesError(
                _where(h), f"mixed pixel spacing: {h.pixel_spacing} here, {first.pixel_spacing} in {first.path}"
            )


def _check_b_values(headers: Sequence[SliceHeader]) -> None:
    """Either every frame has a b-value or none has; else `SeriesError` naming a frame without one.

    A DWI series whose high-b frames lost their b-value tag (de-identification tools strip vendor tags) would
    otherwise split into a b0 stack and an untagged one, and the b0 image would be used as the DWI."""
    untagged = [h for h in headers if h.b_value is None]
    if not untagged or len(untagged) == len(headers):
        return
    tagged = sorted({round(float(h.b_value), 3) for h in headers if h.b_value is not None})
    raise SeriesError(
        _where(untagged[0]),
        f"{len(untagged)} of {len(headers)} frames have no b-value while the others have b={tagged}: a diffusion "
        "series whose frames lost their b-value tag cannot be sorted into b-values. Restore DiffusionBValue "
        "(0018,9087) in these files (from the scanner's export, before de-identification), or remove them",
    )


def _check_stack(stack: list[SliceHeader], b_value: float | None) -> float:
    """Check one b-value's sorted frames (distinct positions, regular gaps, no shear); return the slice spacing."""
    label = "" if b_value is None else f" (b={b_value:g})"
    positions = np.array([h.slice_position for h in stack])
    gaps = np.diff(positions)
    for k, gap in enumerate(gaps):
        if gap < DUPLICATE_TOLERANCE_MM:
            raise SeriesError(
                _where(stack[k + 1]),
                f"duplicate slice position {positions[k]:.3f} mm{label}, also in {stack[k].path}: several stacks in "
                "one series (repeated acquisitions, or several b-values or echoes without tags that tell them apart)?",
            )
    if len(stack) == 1:
        return float(stack[0].slice_thickness or 0.0)
    median = float(np.median(gaps))
    worst = int(np.argmax(np.abs(gaps - median)))
    if abs(gaps[worst] - median) > max(GAP_TOLERANCE * median, GAP_TOLERANCE_MM):
        raise SeriesError(
            _where(stack[worst + 1]),
            f"irregular slice spacing{label}: gap of {gaps[worst]:.3f} mm before this slice, median gap {median:.3f} mm"
            f" (gaps from {gaps.min():.3f} to {gaps.max():.3f} mm): missing slices, or stacks with different spacing",
        )
    # Voxel (k, i, j) is placed at origin + k * spacing * normal: the slices must not shift within their plane.
    normal = stack[0].normal
    offsets = np.array([h.position for h in stack]) - np.asarray(stack[0].position)
    in_plane = np.linalg.norm(offsets - np.outer(offsets @ normal, normal), axis=1)
    worst = int(np.argmax(in_plane))
    if in_plane[worst] > SHEAR_TOLERANCE_PIXELS * min(stack[0].pixel_spacing):
        raise SeriesError(
            _where(stack[worst]),
            f"slices are not stacked along their normal{label}: this one is shifted {in_plane[worst]:.2f} mm in plane"
            f" from {stack[0].path}",
        )
    return (positions[-1] - positions[0]) / (len(stack) - 1)


def _empty_float32(shape: tuple[int, int, int]) -> np.ndarray:
    return np.empty(shape, dtype=np.float32)


def _read_pixels_into(stacks: dict[float | None, list[SliceHeader]], out: dict[float | None, np.ndarray]) -> None:
    """Read every frame of ``stacks`` from its file into ``out[b][k]``, each file once."""
    by_path: dict[str, list[tuple[float | None, int, SliceHeader]]] = {}
    for b, stack in stacks.items():
        for k, h in enumerate(stack):
            by_path.setdefault(str(h.path), []).append((b, k, h))
    for path, frames in by_path.items():
        ds = read_dicom(Path(path))  # once per file: an enhanced file holds every frame
        for b, k, h in frames:
            out[b][k] = read_pixels(h, ds)


def _place_pixels_into(
    stacks: dict[float | None, list[SliceHeader]],
    out: dict[float | None, np.ndarray],
    pixels: Mapping[FrameKey, np.ndarray],
) -> None:
    """Copy the caller's pre-read frames into ``out[b][k]``; a frame missing or of the wrong shape is an error."""
    for b, stack in stacks.items():
        for k, h in enumerate(stack):
            frame = pixels.get((h.path, h.frame))
            if frame is None:
                raise ValueError(f"{_where(h)}: no pre-read pixels were given for this frame")
            if frame.shape != (h.rows, h.columns):
                raise ValueError(f"{_where(h)}: pre-read pixels have shape {frame.shape}, not {h.rows}x{h.columns}")
            out[b][k] = frame


def load_series(
    headers: Sequence[SliceHeader],
    pixels: Mapping[FrameKey, np.ndarray] | None = None,
    *,
    empty: Callable[[tuple[int, int, int]], np.ndarray] = _empty_float32,
) -> dict[float | None, Volume]:
    """Validate the geometry of one series and read it into one `Volume` per b-value.

    Args:
        headers: every frame of one series (from `frames_of`), in any order.
        pixels: the frames' pixels when the caller has already read them (``read_pixels``' values, float64 or
            float32), keyed by ``(header.path, header.frame)``; None reads them from the files, each file once.
        empty: makes each volume's uninitialised float32 pixel array of a given shape (default ``np.empty``); e.g. a
            view of page-locked memory, so that the volume's copy to a GPU can be asynchronous.

    Returns:
        ``{b_value: Volume}``, key None for frames without a b-value (not DWI); each volume sorted by increasing
        position along the slice normal, pixels float32 after rescale.

    Raises:
        SeriesError: several series, mixed orientation/matrix/pixel spacing, frames with and without b-values,
            duplicate positions, irregular spacing or a sheared stack; ``where`` names the series and a file.
        DicomFileError: a file's pixel data cannot be read.
        ValueError: ``pixels`` lacks a frame of ``headers``, or holds one of the wrong shape.
    """
    if not headers:
        raise SeriesError("series (no frames)", "no image frames to assemble")
    _check_common(headers)
    _check_b_values(headers)
    groups: dict[float | None, list[SliceHeader]] = {}
    for h in headers:
        # Rounded so that float noise in vendor tags (FL) does not split one b-value into two groups.
        groups.setdefault(None if h.b_value is None else round(float(h.b_value), 3), []).append(h)
    stacks = {b: sorted(group, key=lambda h: h.slice_position) for b, group in groups.items()}
    spacings = {b: _check_stack(stack, b) for b, stack in stacks.items()}

    first = headers[0]
    volume_pixels = {b: empty((len(stack), first.rows, first.columns)) for b, stack in stacks.items()}
    if pixels is None:
        _read_pixels_into(stacks, volume_pixels)
    else:
        _place_pixels_into(stacks, volume_pixels, pixels)

    row_dir, col_dir = np.asarray(first.orientation[:3]), np.asarray(first.orientation[3:])
    volumes = {}
    for b, stack in stacks.items():
        volumes[b] = Volume(
            pixels=volume_pixels[b],
            positions=np.array([h.slice_position for h in stack], dtype=np.float64),
            row_dir=row_dir.copy(),
            col_dir=col_dir.copy(),
            normal=stack[0].normal,
            origin=np.asarray(stack[0].position, dtype=np.float64),
            pixel_spacing=first.pixel_spacing,
            slice_spacing=float(spacings[b]),
            series_uid=first.series_uid,
            series_description=first.series_description,
            b_value=b,
            source_files=[str(h.path) for h in stack],
        )
    return volumes
