"""What `harness predict` runs on: the studies of its input, each as the volume of the model's sequence.

INPUT is either a dataset root (``manifest.csv`` and ``dicom/``: every manifest patient, or the patients of one
split) or a folder of DICOM files of one or more studies (a PACS export): then every patient found in the headers.
Either way a patient's series are mapped to sequences by the same rules as training (``sequences.yaml`` of a
dataset, else the defaults), and the volume is read through the same checks (geometry, b-values) as training's.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.datasets.errors import DataError
from harness.datasets.image_volumes import VOLUMES_FOLDER
from harness.datasets.index import DatasetIndex, SeriesInfo, index_dataset, scan_series
from harness.datasets.manifest import MANIFEST_FILE, check_patient_id
from harness.datasets.series import Volume, load_series
from harness.datasets.volumes import load_sequence, pick_volume


@dataclass
class Study:
    """One patient's volume of the model's sequence, with where it came from."""

    patient_id: str
    sequence: str
    series: SeriesInfo | None  # None for a computed ADC
    volume: Volume


def is_dataset(path: Path) -> bool:
    """A dataset root: a manifest, and DICOM series or image volumes (docs/data-format.md)."""
    return (path / MANIFEST_FILE).is_file() and ((path / "dicom").is_dir() or (path / VOLUMES_FOLDER).is_dir())


def _one_series(series: list[SeriesInfo], patient_id: str, sequence: str) -> SeriesInfo:
    candidates = [s for s in series if s.patient_id == patient_id and s.sequence == sequence]
    if len(candidates) != 1:
        found = "; ".join(
            f"'{s.description}' ({s.sequence or 'unmapped'})" for s in series if s.patient_id == patient_id
        )
        what = "no" if not candidates else f"{len(candidates)}"
        raise DataError(
            f"patient {patient_id!r}",
            f"{what} {sequence} series (series found: {found or 'none'}); the model reads {sequence}. Map series with "
            "a sequences.yaml in a dataset root (docs/data-format.md)",
        )
    return candidates[0]


def dataset_index(path: Path, sequence: str, progress: bool = False) -> DatasetIndex | None:
    """The index of a dataset root (every patient must have ``sequence``); None for a plain DICOM folder."""
    if not is_dataset(Path(path)):
        return None
    index = index_dataset(path, required=[sequence], progress=progress)
    index.raise_for_errors()
    return index


def studies_of(
    path: Path,
    sequence: str,
    index: DatasetIndex | None,
    *,
    patients: list[str] | None = None,
    progress: bool = False,
) -> Iterator[Study]:
    """The studies of INPUT (see the module docstring), one per patient, in patient order.

    Args:
        path: a dataset root or a DICOM folder.
        sequence: the model's sequence (its training config's ``data.sequence``).
        index: `dataset_index` of ``path`` (None for a DICOM folder).
        patients: only these patients of a dataset root (a split's); None for every patient.
        progress: progress bar while reading headers.

    Raises:
        DataError: naming the folder, file or patient when the input cannot be read, a patient lacks the sequence
            or has it twice, or a patient id is not a plain name (ids become folder names under ``--out``).
    """
    path = Path(path)
    if index is not None:
        chosen = patients or index.usable_patients()
        unknown = sorted(set(chosen) - set(index.patients))
        if unknown:
            raise DataError(str(path / MANIFEST_FILE), f"no patient(s) {unknown}")
        yield from (_dataset_study(index, patient_id, sequence) for patient_id in chosen)
        return
    if patients:
        raise DataError(str(path), "--patients and --split need a dataset root (manifest.csv and dicom/)")
    series = scan_series(path, progress=progress)
    for patient_id in sorted({s.patient_id for s in series}):
        check_patient_id(patient_id, f"PatientID of the images under {path}")
        chosen = _one_series(series, patient_id, sequence)
        volume = pick_volume(load_series(chosen.headers), sequence, f"patient {patient_id!r}")
        yield Study(patient_id, sequence, chosen, volume)


def _dataset_study(index: DatasetIndex, patient_id: str, sequence: str) -> Study:
    volume = load_sequence(index, patient_id, sequence)
    found = index.sequences_of(patient_id).get(sequence, [])
    return Study(patient_id, sequence, found[0] if found else None, volume)
