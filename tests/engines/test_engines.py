"""Inference engines: ONNX export, ONNX Runtime and OpenVINO against PyTorch, engine paths, missing engines.

The reference in these tests is the PyTorch module itself (softmax of its logits, its detections), computed here,
not through the harness's `Predictor`, so that a shared mistake in both could not pass.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from harness.bench.scenarios import load_samples
from harness.bench.weights import benchmark_model, spread_detector_scores
from harness.engines import EngineMissing, engine_paths, require
from harness.engines.onnx_export import export_onnx, read_metadata
from harness.engines.runtimes import EnginePredictor
from harness.equality import check_detections
from harness.inference import InferenceOptions, parse_paths
from harness.predictors import make_predictor, verify_fast_path

CPU_ENGINES = ["onnxruntime:fp32", "openvino:fp32"]


@pytest.fixture(scope="module")
def crops():
    return load_samples("classification", image_size=64, count=8)


def _has_native_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.mark.parametrize("path", CPU_ENGINES)
@pytest.mark.parametrize("name", ["wu2020", "wu2020_hybrid"])
def test_a_classifier_on_an_engine_gives_the_torch_probabilities(name, path, crops):
    model = benchmark_model(name).eval()
    clinical = torch.tensor([[0.0], [1.0]] * 4)
    with torch.no_grad():
        logits = model(crops.images, clinical) if name.endswith("hybrid") else model(crops.images)
    expected = logits.softmax(dim=1)[:, 1]
    runner = make_predictor(model, parse_paths(path))
    assert isinstance(runner, EnginePredictor) and runner.threads == torch.get_num_threads()
    for batch in (1, 3, 8):  # the batch axis is dynamic (OpenVINO compiles one shape at a time)
        got = torch.cat([runner(crops.images[i : i + batch], clinical[i : i + batch]) for i in range(0, 8, batch)])
        assert got.dtype == torch.float32 and got.shape == (8,)
        np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5)
    # The hybrid's clinical input is used, not ignored: other values, other probabilities.
    if name.endswith("hybrid"):
        assert not torch.allclose(runner(crops.images, 1 - clinical), runner(crops.images, clinical))


def test_openvino_bf16_is_close_but_not_fp32(crops):
    if not _has_native_bf16():
        pytest.skip("this CPU has no native bf16 (OpenVINO refuses the path)")
    model = benchmark_model("wu2020")
    report = verify_fast_path(model, parse_paths("openvino:bf16"), crops.images)
    assert report.ok and report.compared == 8
    # bf16 really ran: the probabilities moved (fp32 engines agree to ~1e-7 on these inputs).
    assert report.max_diff > 1e-6


def test_a_detector_on_an_engine_gives_the_torch_detections():
    samples = load_samples("detection", image_size=96, count=4)
    model = benchmark_model("fasterrcnn_lite_fpn", image_size=96)
    spread_detector_scores(model, samples.images)
    with torch.no_grad():
        expected = model.eval()(list(samples.images))
    for path in CPU_ENGINES:
        got = make_predictor(model, parse_paths(path), image_size=96)(samples.images)
        assert [set(out) for out in got] == [{"boxes", "labels", "scores"}] * 4
        report = check_detections(expected, got, score_tolerance=1e-4)
        assert report.ok and report.compared >= 4, (path, report.detail)
        assert got[0]["labels"].dtype == torch.int64
    with pytest.raises(ValueError, match="exported for 96x96 px"):
        make_predictor(model, parse_paths("onnxruntime:fp32"), image_size=96)(torch.zeros(1, 3, 64, 64))


def test_a_slice_without_detections_stays_empty_on_every_engine():
    """An image with no detection after one with some: OpenVINO 2026.4 once returned a stale detection here (the
    export now keeps the threshold out of the graph; `harness.engines.onnx_export`)."""
    samples = load_samples("detection", image_size=96, count=8)
    model = benchmark_model("fasterrcnn_lite_fpn", image_size=96).eval()
    spread_detector_scores(model, samples.images)
    with torch.no_grad():
        best = [float(out["scores"].max()) if len(out["scores"]) else 0.0 for out in model(list(samples.images))]
    model.roi_heads.score_thresh = float(np.median(best))  # about half of the slices keep no detection
    with torch.no_grad():
        expected = model(list(samples.images))
    empty = [i for i, out in enumerate(expected) if len(out["scores"]) == 0]
    full = [i for i, out in enumerate(expected) if len(out["scores"])]
    assert empty and full
    order = [full[0], empty[0], full[-1], empty[-1]]
    for path in CPU_ENGINES + (["openvino:bf16"] if _has_native_bf16() else []):
        got = make_predictor(model, parse_paths(path), image_size=96)(samples.images[order])
        for k, out in zip(order, got, strict=True):
            assert len(out["scores"]) == len(expected[k]["scores"]), (path, k)
            if path.endswith("fp32"):
                torch.testing.assert_close(out["boxes"], expected[k]["boxes"], atol=1e-3, rtol=0)
                assert torch.equal(out["labels"], expected[k]["labels"])


def test_an_export_describes_itself():
    onnx = export_onnx(benchmark_model("wu2020_hybrid"), image_size=64, batch=4, metadata={"sequence": "ADC"})
    assert onnx.inputs == ("images", "clinical") and onnx.outputs == ("probability",) and not onnx.dynamic_batch
    meta = read_metadata(onnx.data)
    assert meta["registry_name"] == "wu2020_hybrid" and meta["task"] == "classification"
    assert meta["image_size"] == "64" and meta["batch"] == "4" and meta["sequence"] == "ADC"
    import onnxruntime as ort

    session = ort.InferenceSession(onnx.data, providers=["CPUExecutionProvider"])
    assert [tuple(i.shape) for i in session.get_inputs()] == [(4, 3, 64, 64), (4, 1)]


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"engine": "openvino", "dtype": "fp16"}, "has no fp16 path: use openvino:fp32, openvino:bf16"),
        ({"engine": "openvino", "channels_last": True}, "torch options (channels_last) do not apply"),
        ({"engine": "openvino", "device": "cuda"}, "runs on cpu, not on 'cuda'"),
        ({"engine": "tensorrt", "dtype": "fp16"}, "runs on cuda, not on 'cpu'"),
        ({"engine": "tflite"}, "unknown engine 'tflite'"),
    ],
)
def test_impossible_engine_paths_are_refused_by_name(kwargs, fragment):
    with pytest.raises(ValueError) as error:
        InferenceOptions(**kwargs)
    assert fragment in str(error.value)


def test_engine_path_labels_round_trip():
    for label in ("onnxruntime:fp32", "openvino:bf16", "openvino:fp32"):
        options = parse_paths(label)
        assert options.label == label and not options.is_eager_fp32
        assert options.baseline() == InferenceOptions()
    assert parse_paths("tensorrt:fp16", device="cuda").label == "tensorrt:fp16"
    assert engine_paths("openvino", "cpu") == ["openvino:fp32", "openvino:bf16"]
    assert engine_paths("tensorrt", "cuda") == ["tensorrt:fp32", "tensorrt:fp16"]
    with pytest.raises(ValueError, match="runs on cuda"):
        engine_paths("tensorrt", "cpu")


def test_a_missing_engine_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # what Python does when the package is absent
    with pytest.raises(EngineMissing, match=r"pip install -e '\.\[openvino\]'"):
        require("openvino")
    with pytest.raises(EngineMissing):
        make_predictor(benchmark_model("wu2020"), parse_paths("openvino:fp32"))


def test_bench_with_a_missing_engine_fails_before_timing(monkeypatch, capsys):
    from harness.cli import main

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert main(["bench", "--model", "wu2020", "--engine", "onnxruntime", "--no-mlflow"]) == 2
    err = capsys.readouterr()
    assert "pip install -e '.[onnx]'" in err.err and "wu2020 - single-stream" not in err.out


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="TensorRT needs a CUDA device")
def test_tensorrt_classifier_gives_the_torch_probabilities(crops):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install -e '.[tensorrt]')")
    model = benchmark_model("wu2020")
    for dtype in ("fp32", "fp16"):
        report = verify_fast_path(model, InferenceOptions(device="cuda", engine="tensorrt", dtype=dtype), crops.images)
        assert report.ok, (dtype, report.detail)
