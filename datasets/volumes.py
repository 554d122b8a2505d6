"""Decoded volumes per patient and sequence, through the cache, and annotation boxes placed on their slices."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .adc import compute_adc
from .cache import ArrayCache, file_fingerprint
from .errors import DataError
from .image_volumes import read_image_volume
from .index import DatasetIndex, SeriesInfo
from .manifest import Box
from .series import Volume, load_series

_GEOMETRY = ("positions", "row_dir", "col_dir", "normal", "origin")


def _volume_arrays(volume: Volume, prefix: str) -> dict[str, np.ndarray]:
    arrays = {f"{prefix}pixels": volume.pixels}
    arrays.update({f"{prefix}{name}": np.asarray(getattr(volume, name)) for name in _GEOMETRY})
    return arrays


def _volume_meta(volume: Volume) -> dict:
    return {
        "pixel_spacing": list(volume.pixel_spacing),
        "slice_spacing": volume.slice_spacing,
        "series_uid": volume.series_uid,
        "series_description": volume.series_description,
        "b_value": volume.b_value,
        "source_files": volume.source_files,
    }


def _volume_from(arrays: dict[str, np.ndarray], meta: dict, prefix: str) -> Volume:
    return Volume(
        pixels=arrays[f"{prefix}pixels"],
        **{name: np.asarray(arrays[f"{prefix}{name}"]) for name in _GEOMETRY},
        pixel_spacing=tuple(meta["pixel_spacing"]),
        slice_spacing=meta["slice_spacing"],
        series_uid=meta["series_uid"],
        series_description=meta["series_description"],
        b_value=meta["b_value"],
        source_files=meta["source_files"],
    )


def load_series_cached(series: SeriesInfo, cache: ArrayCache | None = None) -> dict[float | None, Volume]:
    """`load_series` of one indexed series, decoded once and then read back from the cache (memory-mapped)."""
    cache = cache or ArrayCache("volumes")
    # The description too: a scanner's ADC frames filed under the DWI's UID are a series of their own (index.py),
    # possibly in the same enhanced file.
    key = {"series": series.series_uid, "description": series.description, "files": file_fingerprint(series.files)}

    def build():
        if series.volume_file is not None:
            volumes = {None: read_image_volume(series.volume_file, series.series_uid, series.description)}
        else:
            volumes = load_series(series.headers)
        arrays, metas = {}, []
        for i, volume in enumerate(volumes.values()):
            arrays.update(_volume_arrays(volume, f"v{i}_"))
            metas.append(_volume_meta(volume))
        return arrays, {"volumes": metas}

    arrays, meta = cache.get_or_build(key, build)
    volumes = [_volume_from(arrays, m, f"v{i}_") for i, m in enumerate(meta["volumes"])]
    return {v.b_value: v for v in volumes}


def cached_volume(files: Sequence[Path], build: Callable[[], Volume], cache: ArrayCache) -> Volume:
    """The volume that ``build()`` reads from ``files``, built once and then read back from ``cache`` (memory-mapped),
    with no DICOM parsing at all: the key is the files' paths, sizes and mtimes, so an edited file rebuilds it."""
    key = {"volume-of-files": file_fingerprint(files)}

    def arrays_of_build():
        volume = build()
        return _volume_arrays(volume, ""), _volume_meta(volume)

    arrays, meta = cache.get_or_build(key, arrays_of_build)
    return _volume_from(arrays, meta, "")


def load_sequence(index: DatasetIndex, patient_id: str, sequence: str, cache: ArrayCache | None = None) -> Volume:
    """The patient's volume of one sequence.

    DWI is the highest b-value image of the DWI series (Lu 2018 reads the high-b image). ADC is the ADC series, or,
    when the patient has none, computed from the lowest and highest b-values of the DWI series.

    Raises:
        DataError: naming the patient when the sequence is missing, ambiguous, or ADC cannot be computed.
    """
    if sequence == "ADC" and "ADC" not in index.sequences_of(patient_id):
        dwi = load_series_cached(index.series_of(patient_id, "DWI"), cache)
        b_values = sorted(b for b in dwi if b is not None)
        if len(b_values) < 2:
            raise DataError(
                f"patient {patient_id!r}",
                f"no ADC series, and the DWI series has b-values {b_values}: computing ADC needs two",
            )
        return compute_adc(dwi[b_values[0]], dwi[b_values[-1]])
    series = index.series_of(patient_id, sequence)
    volumes = load_series_cached(series, cache)
    if series.volume_file is not None:  # an image volume is the sequence's image itself (DWI: the high-b image)
        return volumes[None]
    return pick_volume(volumes, sequence, f"patient {patient_id!r}")


def pick_volume(volumes: dict[float | None, Volume], sequence: str, where: str) -> Volume:
    """The volume of ``sequence`` among a series' volumes by b-value: DWI's highest b-value (above 0), else the one.

    Raises:
        DataError: naming ``where`` when DWI has no b-value above 0, or another sequence holds several b-values.
    """
    if sequence == "DWI":
        b_values = sorted(b for b in volumes if b is not None)
        if not b_values:
            raise DataError(where, "the DWI series has no b-value in any header")
        if b_values[-1] <= 0:
            raise DataError(
                where,
                f"the DWI series has only b={b_values[-1]:g} images: no diffusion weighting to read (its high-b "
                "frames are missing, or filed as another series)",
            )
        return volumes[b_values[-1]]
    if len(volumes) != 1:
        raise DataError(where, f"the {sequence} series holds several b-values {list(volumes)}")
    return next(iter(volumes.values()))


@dataclass(frozen=True)
class PlacedBox:
    """A box matched to a slice index of a volume."""

    slice_index: int
    box: Box


def place_boxes(
    positions: np.ndarray, slice_spacing: float, grid: tuple[int, int], boxes: list[Box], where: str
) -> list[PlacedBox]:
    """Match each box's slice position to the nearest slice (within a quarter of the spacing).

    Args:
        positions: the slices' positions along the normal, mm.
        slice_spacing: mm between slices (0 for a single slice).
        grid: (rows, columns) of the slices.
        boxes: the boxes to place.
        where: what the slices are, for error messages.

    Raises:
        DataError: naming the annotation line when a box matches no slice or lies outside the image.
    """
    tolerance = 0.25 * slice_spacing if slice_spacing > 0 else 0.05
    rows, columns = grid
    placed = []
    for box in boxes:
        distances = np.abs(positions - box.slice_position)
        k = int(np.argmin(distances))
        if distances[k] > tolerance:
            raise DataError(
                f"annotations.csv line {box.line}",
                f"slice_position_mm {box.slice_position} matches no slice of {where} (nearest "
                f"{positions[k]:.3f} mm; slices span {positions[0]:.3f}..{positions[-1]:.3f})",
            )
        x0, y0, x1, y1 = box.xyxy
        if x1 > columns or y1 > rows:
            raise DataError(
                f"annotations.csv line {box.line}",
                f"box {box.xyxy} exceeds the {columns}x{rows} (columns x rows) image of {where}",
            )
        placed.append(PlacedBox(k, box))
    return placed
