"""Annotations stored as DICOM, on the series they reference: segmentations (DICOM-SEG) and RT structure sets.

A SEG names the series it segments (ReferencedSeriesSequence) and, per frame, the image it was drawn on; highdicom
returns each segment's pixels per referenced image, and each image is placed on the series' slice at its position
along the normal (so a SEG drawn on the b0 images of a DWI series lands on the same slices of the b800 image). The
segments are matched to `labels.yaml` by their SegmentLabel.

An RTSTRUCT holds closed planar contours in patient coordinates (mm). Each contour must lie in one slice plane of
the referenced series (within a quarter of the slice spacing); it is filled on that slice with the pixel-centre rule
(a pixel belongs to the ROI when its centre is inside the polygon; matplotlib's point-in-polygon test), and several
contours of one ROI on one slice combine by parity (a contour inside another is a hole, as the DICOM standard and
treatment-planning systems read them). ROIs are matched to `labels.yaml` by ROIName.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DataError
from .index import DatasetIndex, SeriesInfo
from .label_maps import LabelMeaning, series_affine
from .series import Volume
from .volumes import load_sequence

SLICE_TOLERANCE = 0.25  # a referenced image must lie within a quarter of the slice spacing of a series slice


def _referenced_series(uids: list[str], index: DatasetIndex, patient_id: str, path: Path) -> SeriesInfo:
    """The one indexed series a SEG or RTSTRUCT references; the folder's patient's and mapped to a sequence."""
    if len(uids) != 1:
        raise DataError(str(path), f"references {len(uids)} series ({', '.join(uids) or 'none'}); expected one")
    candidates = [s for s in index.series if s.series_uid == uids[0] and not s.description.endswith("(ADC frames)")]
    if not candidates:
        raise DataError(str(path), f"references series {uids[0]}, which is not under dicom/ (or could not be read)")
    series = candidates[0]
    if series.patient_id != patient_id:
        raise DataError(str(path), f"is in the folder of {patient_id!r} but segments a series of {series.patient_id!r}")
    if series.sequence is None:
        raise DataError(
            str(path), f"segments series '{series.description}', which is mapped to no sequence (sequences.yaml)"
        )
    return series


def _meanings_of(seg, table: dict[int | str, LabelMeaning], path: Path) -> dict[int, LabelMeaning]:
    """Segment number -> meaning, by SegmentLabel; every segment must be listed in the table."""
    meanings, unknown = {}, []
    for number in seg.get_segment_numbers():
        label = seg.get_segment_description(number).segment_label
        if label in table:
            meanings[number] = table[label]
        else:
            unknown.append(label)
    if unknown:
        listed = ", ".join(repr(k) for k in table if isinstance(k, str)) or "none"
        raise DataError(str(path), f"segment label(s) {unknown} are not in labels.yaml (names listed there: {listed})")
    return meanings


def _slice_of_each_image(series: SeriesInfo, volume: Volume, uids: list[str], path: Path) -> list[int]:
    """The volume's slice index of each referenced image, by its position along the normal."""
    by_uid = {h.sop_uid: h for h in series.headers}
    tolerance = SLICE_TOLERANCE * volume.slice_spacing if volume.slice_spacing > 0 else 0.05
    slices = []
    for uid in uids:
        header = by_uid.get(uid)
        if header is None:
            raise DataError(str(path), f"references image {uid}, which is not in series '{series.description}'")
        distances = np.abs(volume.positions - header.slice_position)
        k = int(np.argmin(distances))
        if distances[k] > tolerance:
            raise DataError(str(path), f"references image {uid} at {header.slice_position:.3f} mm: no slice there")
        slices.append(k)
    return slices


def read_seg(
    path: Path, index: DatasetIndex, patient_id: str, table: dict[int | str, LabelMeaning]
) -> tuple[str, Volume, list[tuple[LabelMeaning, np.ndarray]]]:
    """A DICOM-SEG's segments on its series: (sequence, the series' volume, [(meaning, mask (slices, rows, cols))]).

    Raises:
        DataError: naming the file when it is not a SEG, references no single known series of the patient, has a
            segment that labels.yaml does not list, or frames that match no slice or have another matrix.
    """
    import highdicom as hd

    try:
        seg = hd.seg.segread(str(path))
    except Exception as exc:  # pydicom and highdicom raise assorted types for a file that is not a valid SEG
        raise DataError(str(path), f"not a readable DICOM-SEG ({type(exc).__name__}: {exc})") from None
    uids = sorted({str(item.SeriesInstanceUID) for item in seg.get("ReferencedSeriesSequence") or []})
    series = _referenced_series(uids, index, patient_id, path)
    meanings = _meanings_of(seg, table, path)
    volume = load_sequence(index, patient_id, series.sequence)
    if (int(seg.Rows), int(seg.Columns)) != volume.pixels.shape[1:]:
        raise DataError(str(path), f"frames are {seg.Rows}x{seg.Columns}, the series' images {volume.pixels.shape[1:]}")
    uids = sorted({uid for _, series_uid, uid in seg.get_source_image_uids() if series_uid == series.series_uid})
    if not uids:  # frames placed by position only: not supported, and never read as an empty segmentation
        raise DataError(
            str(path), "its frames reference no source image of the series: SEGs placed by position only are not read"
        )
    numbers = sorted(meanings)
    try:
        pixels = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=uids, segment_numbers=numbers, assert_missing_frames_are_empty=True
        )
    except (ValueError, RuntimeError) as exc:
        raise DataError(str(path), f"frames cannot be placed on their source images: {exc}") from None
    masks = {number: np.zeros(volume.pixels.shape, dtype=bool) for number in numbers}
    for i, k in enumerate(_slice_of_each_image(series, volume, uids, path)):
        for j, number in enumerate(numbers):
            masks[number][k] |= pixels[i, :, :, j] > 0
    return series.sequence, volume, [(meanings[n], masks[n]) for n in numbers]


def _rt_series_uids(ds) -> list[str]:
    """The series an RT structure set references (ReferencedFrameOfReferenceSequence > study > series)."""
    uids = set()
    for frame in ds.get("ReferencedFrameOfReferenceSequence") or []:
        for study in frame.get("RTReferencedStudySequence") or []:
            for series in study.get("RTReferencedSeriesSequence") or []:
                uids.add(str(series.SeriesInstanceUID))
    return sorted(uids)


def fill_contour(points: np.ndarray, volume: Volume, where: str) -> tuple[int, np.ndarray]:
    """The slice index of a closed planar contour (N x 3 patient mm) and its filled pixels on that slice.

    Raises:
        DataError: the contour leaves the slice plane (not within a quarter of the slice spacing of one slice).
    """
    from matplotlib.path import Path as Polygon

    to_index = np.linalg.inv(series_affine(volume))
    index = (np.c_[points, np.ones(len(points))] @ to_index.T)[:, :3]  # (slice, row, column), fractional
    k = int(round(float(np.median(index[:, 0]))))
    off_plane = float(np.abs(index[:, 0] - k).max())
    if off_plane > SLICE_TOLERANCE or not 0 <= k < volume.pixels.shape[0]:
        raise DataError(
            where,
            f"a contour is not in a slice plane of the series (its points are up to {off_plane:.2f} slices off slice "
            f"{k}, or outside the {volume.pixels.shape[0]} slices): drawn on another series?",
        )
    rows, cols = volume.pixels.shape[1:]
    r0, r1 = max(int(np.floor(index[:, 1].min())), 0), min(int(np.ceil(index[:, 1].max())), rows - 1)
    c0, c1 = max(int(np.floor(index[:, 2].min())), 0), min(int(np.ceil(index[:, 2].max())), cols - 1)
    filled = np.zeros((rows, cols), dtype=bool)
    if r1 < r0 or c1 < c0:
        return k, filled
    grid_r, grid_c = np.mgrid[r0 : r1 + 1, c0 : c1 + 1]
    centres = np.c_[grid_c.ravel(), grid_r.ravel()].astype(np.float64)
    inside = Polygon(index[:, [2, 1]]).contains_points(centres)
    filled[r0 : r1 + 1, c0 : c1 + 1] = inside.reshape(grid_r.shape)
    return k, filled


def read_rtstruct(
    path: Path, index: DatasetIndex, patient_id: str, table: dict[int | str, LabelMeaning]
) -> tuple[str, Volume, list[tuple[LabelMeaning, np.ndarray]]]:
    """An RT structure set's ROIs on its series: (sequence, volume, [(meaning, mask (slices, rows, cols))]).

    Raises:
        DataError: naming the file when it references no single known series of the patient, has an ROI that
            labels.yaml does not list, or a contour that is not closed and planar in a slice of the series.
    """
    import pydicom

    ds = pydicom.dcmread(path)
    series = _referenced_series(_rt_series_uids(ds), index, patient_id, path)
    volume = load_sequence(index, patient_id, series.sequence)
    names = {int(roi.ROINumber): str(roi.ROIName) for roi in ds.get("StructureSetROISequence") or []}
    unknown = sorted({name for name in names.values() if name not in table})
    if unknown:
        listed = ", ".join(repr(k) for k in table if isinstance(k, str)) or "none"
        raise DataError(str(path), f"ROI name(s) {unknown} are not in labels.yaml (names listed there: {listed})")
    masks: dict[str, np.ndarray] = {}
    for roi in ds.get("ROIContourSequence") or []:
        name = names.get(int(roi.ReferencedROINumber))
        if name is None:
            raise DataError(
                str(path), f"ROIContourSequence refers to ROI {roi.ReferencedROINumber}, which is not listed"
            )
        mask = masks.setdefault(name, np.zeros(volume.pixels.shape, dtype=bool))
        for contour in roi.get("ContourSequence") or []:
            if contour.ContourGeometricType != "CLOSED_PLANAR":
                raise DataError(str(path), f"ROI {name!r}: a {contour.ContourGeometricType} contour encloses no area")
            points = np.asarray(contour.ContourData, dtype=np.float64).reshape(-1, 3)
            k, filled = fill_contour(points, volume, f"{path}, ROI {name!r}")
            mask[k] ^= filled  # parity: a contour inside another is a hole
    return series.sequence, volume, [(table[name], mask) for name, mask in masks.items()]
