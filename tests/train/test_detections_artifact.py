"""``detections.json.gz``: the val slices' boxes a detector trial leaves for ``harness compare`` (its FROC and PR)."""

import csv
import gzip
import json

import numpy as np
import torch

from harness.config import parse_config
from harness.train.data import build_data
from harness.train.evaluation import DETECTION_SCORE_FLOOR, DETECTIONS_FILE, final_evaluation, write_detections
from harness.train.runner import build_model
from tests.datasets.minidata import write_dataset
from tests.train.test_runner import detector_config


def _load(path):
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return json.load(handle)


def test_final_evaluation_writes_detections_matching_predictions_csv(tmp_path):
    """An untrained tiny detector on the two val patients (no training: only the evaluation's output is checked)."""
    root = write_dataset(tmp_path / "ds")
    raw = detector_config(root, tmp_path / "out")
    raw["model_kwargs"]["box_score_thresh"] = 0.0  # an untrained head scores low: keep its boxes so there are some
    config = parse_config(raw)
    data = build_data(config, progress=False)
    torch.manual_seed(0)
    model = build_model(config)
    out = tmp_path / "out"
    out.mkdir()
    final_evaluation(model, config, data, torch.device("cpu"), None, out)

    payload = _load(out / DETECTIONS_FILE)
    slices = payload["slices"]
    with (out / "predictions.csv").open() as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == "val"]
    assert payload["split"] == "val" and len(slices) == len(rows) == len(data.val) > 0
    assert sum(len(s["scores"]) for s in slices) > 0
    for entry, row in zip(slices, rows, strict=True):  # the same slices in the same order
        assert entry["patient"] == row["patient"] and entry["patient"].startswith("pt-")
        assert f"{entry['slice_position_mm']:.3f}" == row["slice_position_mm"]
        assert entry["lnm"] == int(row["lnm"]) and len(entry["gt_boxes"]) == int(row["n_targets"])
        assert max(entry["scores"], default=0.0) == float(row["max_score"])
        assert len(entry["boxes"]) == len(entry["scores"]) == len(entry["labels"]) <= int(row["n_detections"])
    text = gzip.decompress((out / DETECTIONS_FILE).read_bytes()).decode()
    assert "P0" not in text and str(root) not in text and "/" not in text  # pseudonyms only, no paths
    assert not list(out.glob(".*tmp*"))  # written atomically: no temporary file left behind


def test_detections_below_the_floor_are_dropped_but_each_slice_keeps_its_best(tmp_path):
    preds = [
        {"boxes": np.array([[1, 1, 5, 5], [2, 2, 9, 9.123456]]), "scores": np.array([0.9, 0.001]), "labels": [1, 2]},
        {"boxes": np.array([[3, 3, 4, 4.123456]]), "scores": np.array([0.004]), "labels": np.array([1])},
        {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, dtype=int)},
    ]
    gts = [{"boxes": np.array([[1, 1, 5, 5.0]]), "labels": np.array([3])}]
    gts += [{"boxes": np.zeros((0, 4)), "labels": np.zeros(0, dtype=int)}] * 2
    fields = [{"patient": "pt-a", "slice_position": 4.0 * k, "lnm": 1, "center": "2"} for k in range(3)]
    path = write_detections(tmp_path / DETECTIONS_FILE, preds, gts, fields, ["background", "a", "b", "c"])
    slices = _load(path)["slices"]
    assert DETECTION_SCORE_FLOOR > 0.004
    assert slices[0]["scores"] == [0.9] and slices[0]["boxes"] == [[1, 1, 5, 5]] and slices[0]["labels"] == [1]
    assert slices[1]["scores"] == [0.004]  # below the floor, but the slice's highest score
    assert slices[1]["boxes"] == [[3, 3, 4, 4.12]]  # rounded to 0.01 pixel
    assert slices[2] == {
        "patient": "pt-a",
        "slice_position_mm": 8.0,
        "lnm": 1,
        "gt_boxes": [],
        "gt_labels": [],
        "boxes": [],
        "scores": [],
        "labels": [],
    }
    assert slices[0]["gt_boxes"] == [[1, 1, 5, 5]] and slices[0]["gt_labels"] == [3]
    assert "center" not in slices[0]
