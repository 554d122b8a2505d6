"""Pieces shared by the classifier and detector datasets: cache keys of a patient's volume, sample bookkeeping."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .cache import file_fingerprint
from .errors import DataError
from .index import DatasetIndex
from .manifest import pseudonym_key, pseudonymize


def volume_key(index: DatasetIndex, patient_id: str, sequence: str) -> dict:
    """What a patient's `load_sequence` result depends on: its source files (and, for ADC, how it is made)."""
    found = index.sequences_of(patient_id)
    source = sequence if sequence in found or sequence != "ADC" else "DWI"
    series = index.series_of(patient_id, source)
    return {
        "sequence": sequence,
        "computed_adc": source != sequence,
        "series": series.series_uid,
        "files": file_fingerprint(series.files),
    }


def boxes_key(boxes) -> list:
    """The annotation rows a sample depends on (an edited box rebuilds the samples)."""
    return sorted((b.sequence, b.slice_position, b.kind, b.location, b.metastatic, b.xyxy) for b in boxes)


def check_patients(index: DatasetIndex, patients: Sequence[str]) -> list[str]:
    """The requested patients, refusing unknown or excluded ones (by name) and an empty list."""
    patients = list(patients)
    unknown = [p for p in patients if p not in index.patients]
    if unknown:
        raise DataError(str(index.root), f"patients not in manifest.csv: {unknown[:10]}")
    # Under on_error="skip" the index already logged why each of these was excluded.
    patients = [p for p in patients if p not in index.excluded_patients]
    if not patients:
        raise DataError(str(index.root), "no patients to build samples from")
    return patients


class Pseudonyms:
    """Maps patient ids to their pseudonyms for one dataset."""

    def __init__(self, root: Path):
        self._key = pseudonym_key(root)

    def __call__(self, patient_id: str) -> str:
        return pseudonymize(patient_id, self._key)
