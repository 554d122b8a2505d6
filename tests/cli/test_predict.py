"""`harness predict` on the tiny dataset with small checkpoints trained for real (one epoch): what it reads, what
it writes, where its boxes are in patient space, its DICOM-SEG read back by `harness data import`, and its errors.
That a trained detector's boxes sit on the nodes is checked in tests/train/test_learnability.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import highdicom as hd
import numpy as np
import pydicom
import pytest
import yaml

from harness.cli import main
from harness.config import parse_config
from harness.datasets.importer import import_label_maps
from harness.datasets.index import index_dataset
from harness.datasets.volumes import load_sequence
from harness.predict.outputs import SEGMENT_LABEL, write_seg
from harness.predict.run import Detection, PatientPrediction
from harness.train import run_training
from tests.datasets.minidata import write_dataset
from tests.train.test_runner import classifier_config, detector_config

HARNESS = [sys.executable, "-m", "harness"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """The tiny dataset and a detector and a classifier trained on it for one epoch (real checkpoints)."""
    folder = tmp_path_factory.mktemp("predict")
    root = write_dataset(folder / "ds")
    detector = detector_config(root, folder / "runs")
    detector["train"]["epochs"] = 1
    classifier = classifier_config(root, folder / "runs", stage1_epochs=1, stage2_epochs=1)
    out = {"root": root}
    for name, raw in (("detector", detector), ("classifier", classifier)):
        result = run_training(parse_config(raw), progress=False)
        out[name] = result.output_dir / "checkpoints" / "best.pt"
    return out


def predict(capsys, *args: str) -> SimpleNamespace:
    """``harness predict ARGS`` in this process (a subprocess per call would cost a torch import each): the exit
    status and what it printed, as a subprocess's result. The first test runs the real command line once."""
    capsys.readouterr()
    returncode = main(["predict", *args])
    captured = capsys.readouterr()
    return SimpleNamespace(returncode=returncode, stdout=captured.out, stderr=captured.err)


def test_detector_on_a_dicom_folder_writes_every_output(trained, tmp_path):
    study = trained["root"] / "dicom" / "P01"  # a PACS-style folder: no manifest, the series found by their headers
    out = tmp_path / "out"
    command = [*HARNESS, "predict", str(trained["detector"]), str(study), "--out", str(out), "--dicom"]
    result = subprocess.run([*command, "--threshold", "0"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads((out / "P01" / "predictions.json").read_text())
    assert saved["patient_id"] == "P01" and saved["sequence"] == "T2WI" and saved["task"] == "detection"
    detections = saved["detections"]
    assert detections and saved["score"] == max(d["score"] for d in detections)
    # Each box centre in patient mm, checked against the series' own geometry (minidata: axial, unit spacing,
    # origin (0, 0, -10), slices 4 mm apart): x = column centre, y = row centre, z = slice position.
    for d in detections:
        x0, y0, x1, y1 = d["box_px"]
        expected = [(x0 + x1) / 2 - 0.5, (y0 + y1) / 2 - 0.5, -10 + 4 * d["slice_index"]]
        np.testing.assert_allclose(d["centre_mm"], expected, atol=0.01)
        assert d["slice_position_mm"] == pytest.approx(expected[2])
        assert 0 <= x0 < x1 <= 40 and 0 <= y0 < y1 <= 32  # inside the 40 x 32 T2WI grid
    rows = (out / "P01" / "predictions.csv").read_text().splitlines()
    assert len(rows) == len(detections) + 1
    assert sorted(p.name for p in (out / "P01" / "overlays").iterdir())  # PNGs of slices with boxes
    seg = hd.seg.segread(out / "P01" / "detections.dcm")
    t2 = pydicom.dcmread(next((study / "T2WI").iterdir()))
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == t2.SeriesInstanceUID
    assert (out / "patients.csv").read_text().splitlines()[1].startswith("P01,T2WI,detection,")


def test_the_dicom_seg_of_the_boxes_imports_back_to_the_same_boxes(trained, tmp_path):
    """Non-overlapping boxes (one per slice) written as a SEG, read by `harness data import`: the same boxes, their
    fractional edges widened to the pixels they touch."""
    root = trained["root"]
    volume = load_sequence(index_dataset(root), "P02", "T2WI")
    boxes = {1: [3.2, 4.0, 9.7, 8.5], 3: [20.0, 10.0, 26.0, 17.0], 4: [30.5, 2.5, 35.0, 6.0]}
    prediction = PatientPrediction(
        "P02",
        "T2WI",
        volume.series_uid,
        volume.series_description,
        "detection",
        0.9,
        detections=[
            Detection(k, float(volume.positions[k]), box, [0, 0, 0], 0.9, 1, "node") for k, box in boxes.items()
        ],
    )
    masks = tmp_path / "masks" / "P02"
    masks.mkdir(parents=True)
    assert write_seg(masks, prediction, volume, threshold=0.5, model="tiny")
    (tmp_path / "labels.yaml").write_text(
        yaml.safe_dump({"labels": {SEGMENT_LABEL: {"kind": "node", "location": "mesorectal", "metastatic": 1}}})
    )
    report = import_label_maps(root, labels_file=tmp_path / "labels.yaml", folder=tmp_path / "masks")
    got = {
        float(r["slice_position_mm"]): [int(r[c]) for c in ("x_min", "y_min", "x_max", "y_max")] for r in report.rows
    }
    expected = {
        float(volume.positions[k]): [int(np.floor(b[0])), int(np.floor(b[1])), int(np.ceil(b[2])), int(np.ceil(b[3]))]
        for k, b in boxes.items()
    }
    assert {round(k, 3): v for k, v in got.items()} == {round(k, 3): v for k, v in expected.items()}


def test_classifier_on_a_dataset_root_scores_every_patient(trained, tmp_path, capsys):
    out = tmp_path / "out"
    result = predict(
        capsys, str(trained["classifier"]), str(trained["root"]), "--out", str(out), "--patients", "P01,P03"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for patient in ("P01", "P03"):
        saved = json.loads((out / patient / "predictions.json").read_text())
        slices = saved["slice_probabilities"]
        assert len(slices) == 4  # minidata: tumour boxes on T2WI slices 1-4
        assert saved["score"] == pytest.approx(np.mean(list(slices.values())))
    assert not (out / "P02").exists()


def test_a_fast_path_is_checked_before_it_is_used(trained, tmp_path, capsys):
    out = tmp_path / "out"
    result = predict(
        capsys, str(trained["classifier"]), str(trained["root"]), "--out", str(out), "--path", "bf16+channels_last"
    )
    # bf16 on this CPU either passes the classifier's equality check (then used) or is refused by name.
    if result.returncode == 0:
        assert "path bf16+channels_last" in result.stderr
    else:
        assert result.returncode == 2 and "differ from eager fp32" in result.stderr and not out.exists()


def test_an_engine_path_scores_as_torch_does(trained, tmp_path, capsys):
    scores = {}
    for path in ("eager-fp32", "onnxruntime:fp32", "openvino:fp32"):
        out = tmp_path / path.replace(":", "-")
        result = predict(capsys, str(trained["classifier"]), str(trained["root"]), "--out", str(out), "--path", path)
        assert result.returncode == 0 and f"path {path}" in result.stderr, result.stderr[-3000:]
        scores[path] = json.loads((out / "P01" / "predictions.json").read_text())["slice_probabilities"]
    for path in ("onnxruntime:fp32", "openvino:fp32"):
        assert scores[path].keys() == scores["eager-fp32"].keys()
        np.testing.assert_allclose(list(scores[path].values()), list(scores["eager-fp32"].values()), atol=1e-5)


@pytest.mark.parametrize(
    "case,fragment",
    [
        ("no sequence", "no T2WI series"),
        ("not empty", "is not empty"),
        ("classifier on a folder", "--roi X0,Y0,Z0,X1,Y1,Z1"),
        ("not a checkpoint", "not a readable checkpoint"),
    ],
)
def test_mistakes_are_one_line_errors(trained, tmp_path, capsys, case, fragment):
    study = trained["root"] / "dicom" / "P01"
    checkpoint, source, out = trained["detector"], study, tmp_path / "out"
    if case == "no sequence":
        source = study / "DWI"
    elif case == "not empty":
        out.mkdir()
        (out / "x").write_text("x")
    elif case == "classifier on a folder":
        checkpoint = trained["classifier"]
    else:
        checkpoint = tmp_path / "junk.pt"
        checkpoint.write_bytes(b"not a checkpoint")
    result = predict(capsys, str(checkpoint), str(source), "--out", str(out))
    assert result.returncode == 2 and fragment in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr  # in this process an uncaught error would have raised instead


def test_classifier_roi_in_patient_mm_matches_the_annotated_roi(trained, tmp_path, capsys):
    """minidata's T2WI tumour box is columns 8-19, rows 6-17 on slices 1-4 (origin (0, 0, -10), 1 mm pixels, 4 mm
    slices): the same box given in patient mm on the bare DICOM folder scores as the dataset's annotation does."""
    by_annotation = tmp_path / "a"
    result = predict(
        capsys, str(trained["classifier"]), str(trained["root"]), "--out", str(by_annotation), "--patients", "P01"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    by_roi = tmp_path / "b"
    study = trained["root"] / "dicom" / "P01"
    result = predict(capsys, str(trained["classifier"]), str(study), "--out", str(by_roi), "--roi", "8,6,-6,19,17,6")
    assert result.returncode == 0, result.stderr[-3000:]
    expected = json.loads((by_annotation / "P01" / "predictions.json").read_text())["slice_probabilities"]
    got = json.loads((by_roi / "P01" / "predictions.json").read_text())["slice_probabilities"]
    assert got.keys() == expected.keys() and got == pytest.approx(expected, abs=1e-6)
    missed = predict(
        capsys, str(trained["classifier"]), str(study), "--out", str(tmp_path / "c"), "--roi", "500,500,500,600,600,600"
    )
    assert missed.returncode == 2 and "misses the T2WI series" in missed.stderr


def test_dicom_output_needs_dicom_images(trained, tmp_path):
    """An image-volume dataset (volumes/<patient>/<SEQUENCE>.nii.gz) predicts, but gets no SEG: said, not crashed."""
    import SimpleITK as sitk

    from harness.predict import PredictOptions
    from harness.predict import predict as run_predict

    root = tmp_path / "ds"
    (root / "volumes" / "P01").mkdir(parents=True)  # P01's T2WI only, as a NIfTI volume
    manifest = (trained["root"] / "manifest.csv").read_text().splitlines()
    (root / "manifest.csv").write_text("\n".join(manifest[:2]) + "\n")  # the header and P01
    annotations = (trained["root"] / "annotations.csv").read_text().splitlines()
    kept = [annotations[0]] + [line for line in annotations[1:] if line.startswith("P01,T2WI")]
    (root / "annotations.csv").write_text("\n".join(kept) + "\n")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(trained["root"] / "dicom" / "P01" / "T2WI")))
    sitk.WriteImage(reader.Execute(), str(root / "volumes" / "P01" / "T2WI.nii.gz"))
    with pytest.raises(ValueError, match="--dicom: T2WI of patient 'P01' is an image volume"):
        run_predict(trained["detector"], root, tmp_path / "a", PredictOptions(dicom=True))
    saved = run_predict(trained["detector"], root, tmp_path / "b", PredictOptions(threshold=0.0))
    assert saved[0].patient_id == "P01" and (tmp_path / "b" / "P01" / "predictions.json").is_file()
