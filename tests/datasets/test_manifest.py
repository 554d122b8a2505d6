from pathlib import Path

import pytest

from harness.datasets.errors import DataError, ManifestError
from harness.datasets.manifest import load_annotations, load_manifest, pseudonymize, safe_child

HEADER = "patient_id,sequence,slice_position_mm,kind,location,metastatic,x_min,y_min,x_max,y_max\n"


def write(root: Path, name: str, text: str) -> None:
    (root / name).write_text(text)


def test_manifest_rows_and_clinical_columns(tmp_path):
    write(tmp_path, "manifest.csv", "patient_id,center,lnm,mr_ln_status,age\nA,1,1,0,51\nB,3,0,,60\n")
    patients, problems = load_manifest(tmp_path)
    assert problems == []
    assert patients["A"].lnm == 1 and patients["A"].mr_ln_status == 0 and patients["A"].clinical == {"age": "51"}
    assert patients["B"].center == "3" and patients["B"].mr_ln_status is None


@pytest.mark.parametrize(
    ("rows", "fragment"),
    [
        ("A,1,1\nA,2,0\n", "duplicate patient_id 'A'"),
        ("../x,1,1\n", "'../x' is not a plain name"),
        ("/abs,1,1\n", "'/abs' is not a plain name"),
        ("..,1,1\n", "not a plain name"),
        ("A,1,yes\n", "lnm must be 0 or 1"),
        ("A,,1\n", "empty center"),
    ],
)
def test_bad_manifest_rows_are_problems_naming_the_line(tmp_path, rows, fragment):
    write(tmp_path, "manifest.csv", "patient_id,center,lnm\n" + rows)
    patients, problems = load_manifest(tmp_path)
    assert problems, "a bad row must be reported"
    assert any(fragment in p.message for p in problems)
    assert all(p.where.startswith("manifest.csv line ") for p in problems)
    assert not any(pid in {"../x", "/abs", ".."} for pid in patients)


def test_manifest_missing_column_or_file(tmp_path):
    with pytest.raises(ManifestError, match="file not found"):
        load_manifest(tmp_path)
    write(tmp_path, "manifest.csv", "patient_id,lnm\nA,1\n")
    with pytest.raises(ManifestError, match="missing column"):
        load_manifest(tmp_path)


def test_annotations_parse_and_validate(tmp_path):
    write(
        tmp_path,
        "annotations.csv",
        HEADER
        + "A,T2WI,12.5,tumour,,,10,12,30,40\n"
        + "A,DWI,12.5,node,mesorectal,1,5,5,9,10\n"
        + "A,DWI,12.5,node,aortic,1,5,5,9,10\n"
        + "A,T2WI,12.5,tumour,,,30,12,10,40\n"
        + "A,PD,12.5,tumour,,,1,1,2,2\n",
    )
    boxes, problems = load_annotations(tmp_path)
    assert [b.kind for b in boxes] == ["tumour", "node"]
    assert boxes[1].location == "mesorectal" and boxes[1].metastatic is True
    assert boxes[0].xyxy == (10.0, 12.0, 30.0, 40.0) and boxes[0].slice_position == 12.5
    messages = {p.where: p.message for p in problems}
    assert "unknown node location 'aortic'" in messages["annotations.csv line 4"]
    assert "empty or negative" in messages["annotations.csv line 5"]
    assert "unknown sequence 'PD'" in messages["annotations.csv line 6"]


def test_safe_child_refuses_escapes(tmp_path):
    assert safe_child(tmp_path, "P001") == (tmp_path / "P001").resolve()
    for bad in ("../x", "/abs", "a/../../b", ".."):
        with pytest.raises(DataError, match="escapes"):
            safe_child(tmp_path, bad)


def test_pseudonyms_are_stable_keyed_and_hide_the_id():
    a = pseudonymize("PATIENT-0001", b"key1")
    assert a == pseudonymize("PATIENT-0001", b"key1")
    assert a != pseudonymize("PATIENT-0001", b"key2")
    assert a != pseudonymize("PATIENT-0002", b"key1")
    assert "0001" not in a and a.startswith("pt-")
