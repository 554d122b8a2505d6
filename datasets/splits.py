"""Train / validation / test splits by patient, never by slice.

Three ways: by centre (Wu 2020's external validation: centres 1-2 primary, centre 3 validation), stratified random
by nodal status with a seed, or patient-level K-fold cross-validation (`split_cv`: one fold validates, the others
train; stratified by nodal status and balanced over centres; the same folds for every configuration of a study, so
comparisons are paired on patients). Slices of one patient always land in one split, so no patient's images leak
from training into validation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sklearn.model_selection import StratifiedKFold, train_test_split

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


def held_out_test(
    patients: Iterable[PatientRecord], *, test_centers: Sequence[str] = (), test_fraction: float = 0.0, seed: int = 0
) -> tuple[list[PatientRecord], tuple[str, ...]]:
    """Split off a test set that no fold trains on: the patients of ``test_centers`` (external validation, as Wu
    2020), or a ``test_fraction`` stratified by ``lnm``. Returns (the other patients, sorted test ids)."""
    patients = sorted(patients, key=lambda p: p.patient_id)
    if test_centers and test_fraction:
        raise ValueError("give test_centers or test_fraction, not both")
    if test_centers:
        centers = {p.center for p in patients}
        unknown = [c for c in test_centers if c not in centers]
        if unknown:
            raise ValueError(f"test centre(s) {unknown} have no patient; centres in the data: {sorted(centers)}")
        test = tuple(p.patient_id for p in patients if p.center in test_centers)
    elif test_fraction:
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
        labels = [p.lnm for p in patients]
        _, test_ids = train_test_split(
            [p.patient_id for p in patients], test_size=test_fraction, stratify=labels, random_state=seed
        )
        test = tuple(sorted(test_ids))
    else:
        test = ()
    held = set(test)
    return [p for p in patients if p.patient_id not in held], test


def split_cv(
    patients: Iterable[PatientRecord],
    *,
    folds: int,
    fold: int,
    seed: int = 0,
    test_centers: Sequence[str] = (),
    test_fraction: float = 0.0,
) -> Split:
    """Fold ``fold`` of a patient-level K-fold cross-validation: that fold validates, the other folds train.

    Folds are stratified by nodal status and centre together (scikit-learn's ``StratifiedKFold`` on the
    ``centre x lnm`` stratum), so each fold has about the same share of LNM+ patients from every centre. The
    assignment depends only on the patients, ``folds`` and ``seed``: every configuration of a study sees the same
    folds. The held-out test set (`held_out_test`) is removed first and is in no fold.

    Raises:
        ValueError: a fold out of range, or too few patients of a class for ``folds`` folds.
    """
    if folds < 2 or not 0 <= fold < folds:
        raise ValueError(f"need folds >= 2 and 0 <= fold < folds, got fold {fold} of {folds}")
    rest, test = held_out_test(patients, test_centers=test_centers, test_fraction=test_fraction, seed=seed)
    for label in (0, 1):
        count = sum(p.lnm == label for p in rest)
        if count < folds:
            raise ValueError(
                f"{count} patient(s) with lnm={label} outside the test set: too few for {folds} folds "
                f"(every fold needs one of each class); use fewer folds"
            )
    ids = [p.patient_id for p in rest]
    strata = _cv_strata(rest, folds)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    train_index, val_index = list(splitter.split(ids, strata))[fold]
    return Split(tuple(sorted(ids[i] for i in train_index)), tuple(sorted(ids[i] for i in val_index)), test)


def _cv_strata(patients: Sequence[PatientRecord], folds: int) -> list[str]:
    """``centre|lnm`` per patient. A stratum smaller than the fold count cannot be spread over every fold: its
    patients pool with the other small strata of their class, and a pool still too small joins the largest stratum
    of the class (scikit-learn would warn and assign them less predictably)."""
    strata = [f"{p.center}|{p.lnm}" for p in patients]
    counts = Counter(strata)
    strata = [s if counts[s] >= folds else f"*|{p.lnm}" for s, p in zip(strata, patients, strict=True)]
    counts = Counter(strata)
    largest = {label: max((s for s in counts if s.endswith(f"|{label}")), key=counts.get) for label in (0, 1)}
    return [s if counts[s] >= folds else largest[p.lnm] for s, p in zip(strata, patients, strict=True)]
