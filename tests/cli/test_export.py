"""``harness export``: the file it writes runs on ONNX Runtime with PyTorch's outputs; it refuses to overwrite, and a
failed equality check writes nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from harness.bench.scenarios import load_samples
from harness.cli import main
from harness.config import parse_config
from harness.engines.onnx_export import read_metadata
from harness.train import run_training
from tests.datasets.minidata import write_dataset
from tests.train.test_runner import classifier_config


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    root = write_dataset(folder / "ds")
    raw = classifier_config(root, folder / "runs", stage1_epochs=1, stage2_epochs=1)
    return run_training(parse_config(raw), progress=False).output_dir / "checkpoints" / "best.pt"


def test_a_checkpoint_exports_beside_itself_and_runs_with_its_outputs(checkpoint, capsys):
    import onnxruntime as ort

    from harness.train.checkpoint import model_from_checkpoint

    assert main(["export", str(checkpoint)]) == 0
    out = checkpoint.with_suffix(".onnx")
    summary = json.loads(capsys.readouterr().out)
    assert summary["out"] == str(out) and summary["checked_with"] == "onnxruntime:fp32"
    assert summary["batch"] == "dynamic" and summary["inputs"] == ["images"]
    meta = read_metadata(out.read_bytes())
    model, payload = model_from_checkpoint(checkpoint)
    assert meta["registry_name"] == payload["model_name"] and meta["source"] == "best.pt"
    crops = load_samples("classification", image_size=int(meta["image_size"]), count=6).images
    with torch.no_grad():
        expected = model.eval()(crops).softmax(dim=1)[:, 1].numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"images": crops.numpy()})
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # A second export does not replace the file unless asked to.
    before = out.stat().st_mtime_ns
    assert main(["export", str(checkpoint)]) == 2
    assert "exists: pass --overwrite" in capsys.readouterr().err and out.stat().st_mtime_ns == before


def test_an_export_that_differs_from_torch_is_not_written(tmp_path, monkeypatch, capsys):
    import harness.equality as equality

    monkeypatch.setitem(equality.PROBABILITY_TOLERANCE, "fp32", -1.0)  # no export can be within a negative tolerance
    out = tmp_path / "wu.onnx"
    assert main(["export", "wu2020", "--out", str(out)]) == 2
    assert "nothing was written" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["export", "resnet_nothing"], "neither a checkpoint file nor a registry model"),
        (["export", "missing.pt"], "no such checkpoint file"),
        (["export", "fasterrcnn_lite_fpn", "--batch", "2"], "one slice per call"),
        (["export", "wu2020", "--out", "no/such/folder/x.onnx"], "does not exist"),
    ],
)
def test_export_mistakes_are_one_line_errors(argv, fragment, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert fragment in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
