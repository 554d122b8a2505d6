"""Train / validation / test splits by patient, never by slice.

Two ways, as in the papers: by centre (Wu 2020's external validation: centres 1-2 primary, centre 3 validation), or
stratified random by nodal status with a seed. Slices of one patient always land in one split, so no patient's
images leak from training into validation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sklearn.model_selection import train_test_split

from .manifest import PatientRecord


@dataclass(frozen=True)
class Split:
    """Patient ids per split (sorted). ``test`` may be empty."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...] = ()

    def __post_init__(self):
        overlap = (
            (set(self.train) & set(self.val)) | (set(self.train) & set(self.test)) | (set(self.val) & set(self.test))
        )
        if overlap:
            raise ValueError(f"{len(overlap)} patient(s) in two splits")

    def as_dict(self) -> dict[str, list[str]]:
        return {"train": list(self.train), "val": list(self.val), "test": list(self.test)}


def split_by_center(
    patients: Iterable[PatientRecord], val_centers: Sequence[str], test_centers: Sequence[str] = ()
) -> Split:
    """Patients of ``val_centers`` (and ``test_centers``) held out; everyone else trains.

    Raises:
        ValueError: naming the centres when a listed centre has no patient or a split ends up empty.
    """
    patients = list(patients)
    centers = {p.center for p in patients}
    unknown = [c for c in [*val_centers, *test_centers] if c not in centers]
    if unknown:
        raise ValueError(f"split centre(s) {unknown} have no patient; centres in the data: {sorted(centers)}")
    if set(val_centers) & set(test_centers):
        raise ValueError(f"centres {sorted(set(val_centers) & set(test_centers))} are both validation and test")
    val = sorted(p.patient_id for p in patients if p.center in val_centers)
    test = sorted(p.patient_id for p in patients if p.center in test_centers)
    train = sorted(p.patient_id for p in patients if p.center not in val_centers and p.center not in test_centers)
    if not train or not val:
        raise ValueError(f"split by centre leaves {len(train)} training and {len(val)} validation patients")
    return Split(tuple(train), tuple(val), tuple(test))


def split_stratified(
    patients: Iterable[PatientRecord], *, val_fraction: float = 0.3, test_fraction: float = 0.0, seed: int = 0
) -> Split:
    """Random split stratified by ``lnm``, reproducible for a seed.

    Raises:
        ValueError: when the fractions are out of range or a class is too small to stratify.
    """
    patients = sorted(patients, key=lambda p: p.patient_id)
    if not (0 < val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"need 0 < val_fraction, 0 <= test_fraction, sum < 1; got {val_fraction}, {test_fraction}")
    ids = [p.patient_id for p in patients]
    labels = [p.lnm for p in patients]
    held = val_fraction + test_fraction
    train, rest, _, rest_labels = train_test_split(ids, labels, test_size=held, stratify=labels, random_state=seed)
    test: list[str] = []
    val = rest
    if test_fraction > 0:
        val, test = train_test_split(rest, test_size=test_fraction / held, stratify=rest_labels, random_state=seed)
    return Split(tuple(sorted(train)), tuple(sorted(val)), tuple(sorted(test)))
