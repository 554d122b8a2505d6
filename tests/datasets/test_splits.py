import pytest

from harness.datasets.manifest import PatientRecord
from harness.datasets.splits import Split, split_by_center, split_stratified


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
