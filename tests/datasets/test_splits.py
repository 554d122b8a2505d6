import numpy as np
import pytest

from harness.datasets.manifest import PatientRecord
from harness.datasets.splits import Split, split_by_center, split_cv, split_stratified


def cohort(n=30):
    return [PatientRecord(f"P{i:03d}", str(1 + i % 3), int(i % 3 == 0 or i % 5 == 0), None) for i in range(n)]


def test_split_by_center_holds_out_whole_centres():
    patients = cohort()
    split = split_by_center(patients, val_centers=["3"])
    centers = {p.patient_id: p.center for p in patients}
    assert {centers[p] for p in split.val} == {"3"}
    assert {centers[p] for p in split.train} == {"1", "2"}
    assert set(split.train) | set(split.val) == set(centers)


def test_split_by_center_rejects_unknown_centre():
    with pytest.raises(ValueError, match=r"\['9'\] have no patient"):
        split_by_center(cohort(), val_centers=["9"])


def test_stratified_split_is_reproducible_disjoint_and_stratified():
    patients = cohort(60)
    a = split_stratified(patients, val_fraction=0.25, test_fraction=0.25, seed=1)
    assert a == split_stratified(patients, val_fraction=0.25, test_fraction=0.25, seed=1)
    assert a != split_stratified(patients, val_fraction=0.25, test_fraction=0.25, seed=2)
    assert not (set(a.train) & set(a.val) or set(a.train) & set(a.test) or set(a.val) & set(a.test))
    assert len(a.train) + len(a.val) + len(a.test) == 60
    labels = {p.patient_id: p.lnm for p in patients}
    overall = sum(labels.values()) / 60
    for part in (a.train, a.val, a.test):
        assert abs(sum(labels[p] for p in part) / len(part) - overall) < 0.1


def test_split_refuses_overlap():
    with pytest.raises(ValueError, match="in two splits"):
        Split(("A", "B"), ("B",))


def _cohort(n: int = 60, centers: int = 3, seed: int = 1) -> list[PatientRecord]:
    rng = np.random.default_rng(seed)
    return [PatientRecord(f"p{i:03d}", str(1 + i % centers), int(rng.random() < 0.4), None) for i in range(n)]


def test_cv_folds_partition_the_patients_and_are_stratified_by_centre_and_class():
    patients = _cohort()
    splits = [split_cv(patients, folds=5, fold=k, seed=3) for k in range(5)]
    vals = [set(s.val) for s in splits]
    assert set().union(*vals) == {p.patient_id for p in patients}  # every patient validated once
    assert sum(len(v) for v in vals) == len(patients)
    for split in splits:
        assert set(split.train) | set(split.val) == {p.patient_id for p in patients}
    by_id = {p.patient_id: p for p in patients}
    for key in {(p.center, p.lnm) for p in patients}:
        per_fold = [sum((by_id[i].center, by_id[i].lnm) == key for i in v) for v in vals]
        assert max(per_fold) - min(per_fold) <= 1, (key, per_fold)


def test_cv_folds_depend_only_on_patients_folds_and_seed():
    patients = _cohort()
    first = split_cv(patients, folds=4, fold=2, seed=7)
    assert split_cv(list(reversed(patients)), folds=4, fold=2, seed=7) == first
    assert split_cv(patients, folds=4, fold=2, seed=8) != first


def test_cv_held_out_test_is_in_no_fold():
    patients = _cohort()
    by_centre = [split_cv(patients, folds=3, fold=k, test_centers=["3"]) for k in range(3)]
    test = set(by_centre[0].test)
    assert test == {p.patient_id for p in patients if p.center == "3"}
    assert all(not test & (set(s.train) | set(s.val)) for s in by_centre)
    by_fraction = split_cv(patients, folds=3, fold=0, test_fraction=0.2)
    assert len(by_fraction.test) == 12 and not set(by_fraction.test) & set(by_fraction.train + by_fraction.val)


def test_cv_refuses_bad_folds():
    patients = _cohort(12)
    with pytest.raises(ValueError, match="0 <= fold < folds"):
        split_cv(patients, folds=3, fold=3)
    with pytest.raises(ValueError, match="too few for 10 folds"):
        split_cv(patients, folds=10, fold=0)
    with pytest.raises(ValueError, match="not both"):
        split_cv(patients, folds=2, fold=0, test_centers=["1"], test_fraction=0.2)
