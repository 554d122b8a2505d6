"""Annotations stored as DICOM: segmentations (DICOM-SEG, read with highdicom) on the series they reference.

A SEG names the series it segments (ReferencedSeriesSequence) and, per frame, the image it was drawn on; highdicom
returns each segment's pixels per referenced image, and each image is placed on the series' slice at its position
along the normal (so a SEG drawn on the b0 images of a DWI series lands on the same slices of the b800 image). The
segments are matched to `labels.yaml` by their SegmentLabel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DataError
from .index import DatasetIndex, SeriesInfo
from .label_maps import LabelMeaning
from .series import Volume
from .volumes import load_sequence

SLICE_TOLERANCE = 0.25  # a referenced image must lie within a quarter of the slice spacing of a series slice


def _referenced_series(seg, index: DatasetIndex, patient_id: str, path: Path) -> SeriesInfo:
    """The one indexed series the SEG references; it must be the folder's patient's and mapped to a sequence."""
    references = seg.get("ReferencedSeriesSequence") or []
    uids = sorted({str(item.SeriesInstanceUID) for item in references})
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
    series = _referenced_series(seg, index, patient_id, path)
    meanings = _meanings_of(seg, table, path)
    volume = load_sequence(index, patient_id, series.sequence)
    if (int(seg.Rows), int(seg.Columns)) != volume.pixels.shape[1:]:
        raise DataError(str(path), f"frames are {seg.Rows}x{seg.Columns}, the series' images {volume.pixels.shape[1:]}")
    uids = sorted({uid for _, series_uid, uid in seg.get_source_image_uids() if series_uid == series.series_uid})
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
