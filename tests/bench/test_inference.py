"""Inference paths and their equality checks: correct fast paths pass, deliberately wrong ones are caught."""

import copy

import pytest
import torch

import harness.fast_parts as fast_parts
import harness.inference as inference
from harness.bench.weights import benchmark_model, spread_detector_scores
from harness.equality import check_classifier, check_detections
from harness.fast_parts import FastPart, Uint8Images, fold_batch_norms
from harness.inference import InferenceOptions, Predictor, parse_paths
from harness.predictors import verify_fast_path


def _images(n: int, size: int) -> torch.Tensor:
    # Smooth blobs, not noise and never zeros: something for a detector to find.
    generator = torch.Generator().manual_seed(1)
    coarse = torch.rand(n, 1, 8, 8, generator=generator)
    image = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return ((image - image.mean()) / image.std()).expand(-1, 3, -1, -1).contiguous()


@pytest.fixture(scope="module")
def classifier():
    return benchmark_model("wu2020")


@pytest.fixture(scope="module")
def detector():
    model = benchmark_model("fasterrcnn_mobilenet_v3_fpn", image_size=64)
    spread_detector_scores(model, _images(2, 64))
    return model


def _mirror(value):  # a broken "fast path": its inputs arrive mirrored
    return value.flip(-1) if isinstance(value, torch.Tensor) else type(value)(v.flip(-1) for v in value)


def test_options_validate_and_name_paths():
    assert InferenceOptions().label == "eager-fp32"
    fast = InferenceOptions(dtype="bf16", channels_last=True, compile=True, batch=4)
    assert fast.label == "bf16+channels_last+compile"
    assert fast.baseline() == InferenceOptions(batch=4)
    assert parse_paths("bf16+channels_last") == InferenceOptions(dtype="bf16", channels_last=True)
    box_head = parse_paths("bf16@box_head+compile")
    assert box_head == InferenceOptions(dtype="bf16", compile=True, amp_scope="box_head")
    assert box_head.label == "bf16@box_head+compile" and box_head.baseline() == InferenceOptions()
    with pytest.raises(ValueError, match="amp_scope"):
        parse_paths("bf16@everything")
    with pytest.raises(ValueError, match="unknown path part"):
        parse_paths("bf16+fast")
    with pytest.raises(ValueError, match="fp16"):
        InferenceOptions(dtype="fp16")
    with pytest.raises(ValueError, match="dtype"):
        InferenceOptions(dtype="int8")


@pytest.mark.parametrize("options", [InferenceOptions(channels_last=True), InferenceOptions(dtype="bf16")])
def test_classifier_fast_paths_equal_fp32_eager(classifier, options):
    report = verify_fast_path(classifier, options, _images(4, 64))
    assert report.ok, report.detail
    assert report.compared == 4


def test_classifier_check_catches_a_wrong_fast_path(classifier, monkeypatch):
    monkeypatch.setattr(inference, "_channels_last", _mirror)
    report = verify_fast_path(classifier, InferenceOptions(channels_last=True), _images(4, 64))
    assert not report.ok and report.max_diff > 1e-4


def test_hybrid_takes_clinical_input():
    model = benchmark_model("wu2020_hybrid")
    images = _images(2, 64)
    predictor = Predictor(model, InferenceOptions())
    probabilities = predictor(images, torch.tensor([[0.0], [1.0]]))
    assert probabilities.shape == (2,) and probabilities.dtype == torch.float32
    assert verify_fast_path(model, InferenceOptions(dtype="bf16"), images, torch.ones(2, 1)).ok


@pytest.fixture(scope="module")
def vgg_detector():
    model = benchmark_model("fasterrcnn_vgg16", image_size=64, representation_size=256)
    spread_detector_scores(model, _images(2, 64))
    return model


def test_detector_channels_last_equals_fp32_eager(detector):
    report = verify_fast_path(detector, InferenceOptions(channels_last=True), _images(2, 64))
    assert report.ok, report.detail
    assert report.compared > 0


def test_vgg16_bf16_box_head_equals_fp32_eager(vgg_detector):
    # The proposals stay eager fp32's; only the box head's scores move (by far less than the 0.03 tolerance).
    report = verify_fast_path(vgg_detector, InferenceOptions(dtype="bf16", amp_scope="box_head"), _images(2, 64))
    assert report.ok, report.detail
    assert report.compared > 0


def test_box_head_scope_keeps_the_backbone_fp32(detector):
    predictor = Predictor(detector, InferenceOptions(dtype="bf16", amp_scope="box_head"))
    box_head = predictor.model.roi_heads.box_head
    assert isinstance(box_head, FastPart) and box_head.cast_weights
    assert next(box_head.module.parameters()).dtype == torch.bfloat16
    assert not isinstance(predictor.model.backbone, FastPart)
    assert next(detector.roi_heads.box_head.parameters()).dtype == torch.float32  # the model itself is untouched


def test_detector_check_catches_a_wrong_fast_path(detector, monkeypatch):
    monkeypatch.setattr(fast_parts, "_channels_last", _mirror)  # where the detector's FastPart parts call it
    report = verify_fast_path(detector, InferenceOptions(channels_last=True), _images(2, 64))
    assert not report.ok
    assert "no match" in report.detail or "differ" in report.detail


def _det(boxes, scores, labels):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "scores": torch.tensor(scores),
        "labels": torch.tensor(labels),
    }


def test_check_detections_rules():
    ref = [_det([[10, 10, 30, 30], [50, 50, 60, 60]], [0.9, 0.3], [1, 2])]
    same = [_det([[10.2, 10, 30, 30.1], [0, 0, 5, 5]], [0.89, 0.2], [1, 2])]
    assert check_detections(ref, same, score_tolerance=0.03).ok  # only the detection above 0.5 must match
    moved = [_det([[14, 14, 34, 34]], [0.9], [1])]
    report = check_detections(ref, moved, score_tolerance=0.03)
    assert not report.ok and "best IoU 0.47" in report.detail
    relabelled = [_det([[10, 10, 30, 30]], [0.9], [2])]
    assert not check_detections(ref, relabelled, score_tolerance=0.03).ok
    rescored = [_det([[10, 10, 30, 30]], [0.7], [1])]
    report = check_detections(ref, rescored, score_tolerance=0.03)
    assert not report.ok and "differ" in report.detail
    extra = [_det([[10, 10, 30, 30], [70, 70, 90, 90]], [0.9, 0.8], [1, 1])]
    report = check_detections(ref, extra, score_tolerance=0.03)
    assert not report.ok and "fast path detection" in report.detail
    borderline = [_det([[10, 10, 30, 30], [70, 70, 90, 90]], [0.9, 0.52], [1, 1])]
    assert check_detections(ref, borderline, score_tolerance=0.03).ok  # within the margin of the threshold
    empty = [_det([[1, 1, 2, 2]], [0.1], [1])]
    report = check_detections(empty, empty, score_tolerance=0.03)
    assert not report.ok and "vacuous" in report.detail


def test_check_classifier_tolerance():
    assert check_classifier(torch.tensor([0.5, 0.2]), torch.tensor([0.51, 0.2]), 0.03).ok
    assert not check_classifier(torch.tensor([0.5, 0.2]), torch.tensor([0.6, 0.2]), 0.03).ok
    assert not check_classifier(torch.tensor([0.5, 0.2]), torch.tensor([0.5]), 0.03).ok


def test_uint8_quantisation_loses_at_most_half_a_step_per_image():
    images = torch.cat([_images(2, 32), 5.0 * _images(1, 32) - 3.0, torch.full((1, 3, 32, 32), 0.7)])
    batch = Uint8Images.quantise(images)
    assert batch.pixels.dtype == torch.uint8 and batch.pixels.shape == images.shape
    assert batch.pixels.element_size() * 4 == images.element_size()  # a quarter of the bytes cross to the device
    restored = batch.to_float(torch.device("cpu"))
    assert restored.dtype == torch.float32
    step = (images.flatten(1).amax(1) - images.flatten(1).amin(1)) / 255
    error = (restored - images).abs().flatten(1).amax(1)
    assert torch.all(error <= step / 2 + 1e-5), (error, step)  # each image over its own range
    assert torch.equal(restored[3], images[3])  # a constant image comes back exactly (no division by zero)


def test_uint8_path_equals_eager_and_a_wrong_restore_is_caught(classifier, monkeypatch):
    options = InferenceOptions(uint8=True)
    predictor = Predictor(classifier, options)
    assert isinstance(predictor.prepare(_images(2, 64)), Uint8Images)
    images = _images(4, 64)
    report = verify_fast_path(classifier, options, images)
    assert report.ok and report.max_diff > 0, report.detail  # quantised inputs: close, not identical
    prepared = predictor.prepare(images)  # handed over beforehand (as a loader would) or quantised in the call
    assert torch.equal(predictor(prepared), predictor(images))
    monkeypatch.setattr(Uint8Images, "to_float", lambda self, device: self.pixels.to(device).float() * self.scale[0])
    assert not verify_fast_path(classifier, options, images).ok  # offsets dropped: the check notices


def test_new_flags_parse_label_and_reset_to_the_baseline():
    options = parse_paths("bf16+channels_last+uint8+cuda_graphs", device="cuda")
    assert options.uint8 and options.cuda_graphs and options.dtype == "bf16"
    assert options.label == "bf16+channels_last+uint8+cuda_graphs"
    assert parse_paths("fp32+uint8").label == "fp32+uint8" and not parse_paths("fp32+uint8").is_eager_fp32
    cuda = InferenceOptions(device="cuda", dtype="bf16", uint8=True, cuda_graphs=True)
    assert cuda.baseline() == InferenceOptions(device="cuda")
    with pytest.raises(ValueError, match="unknown path part"):
        parse_paths("bf16+graphs")


def test_cuda_graphs_refused_where_they_cannot_work(detector):
    with pytest.raises(ValueError, match="GPU path"):
        InferenceOptions(cuda_graphs=True)  # device cpu
    with pytest.raises(ValueError, match="choose one"):
        InferenceOptions(device="cuda", cuda_graphs=True, compile=True)
    with pytest.raises(ValueError, match="classifiers only"):
        Predictor(detector, InferenceOptions(device="cuda", cuda_graphs=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("name", ["wu2020", "wu2020_hybrid"])
def test_cuda_graphs_equal_eager_on_every_batch_size(name):
    model = benchmark_model(name)
    for dtype in ("fp32", "bf16"):
        options = InferenceOptions(device="cuda", dtype=dtype, cuda_graphs=True, channels_last=dtype == "bf16")
        predictor = Predictor(model, options)
        reference = Predictor(model, options.baseline())
        outputs = []
        # A second batch size is a second graph; batch 1 is replayed again on new inputs (a graph that kept its
        # first inputs or output would give the first call's answer).
        for call, batch in enumerate((1, 4, 1)):
            images = _images(batch + 2, 64)[2:] * (1 + call)
            clinical = torch.tensor([[float((call + i) % 2)] for i in range(batch)])
            got = predictor(images, clinical)
            assert torch.allclose(got, reference(images, clinical), atol=0.03)
            outputs.append(got)
        assert len(predictor._classify.graphs) == 2
        assert not torch.equal(outputs[0], outputs[2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_prepared_batches_on_cuda_give_the_same_outputs(classifier):
    images = _images(4, 64)
    for options in (InferenceOptions(device="cuda"), InferenceOptions(device="cuda", uint8=True)):
        predictor = Predictor(classifier, options)
        prepared = predictor.prepare(images)
        pixels = prepared.pixels if options.uint8 else prepared
        assert pixels.is_pinned()
        assert torch.equal(predictor(prepared), predictor(images))


def _with_trained_statistics(model: torch.nn.Module) -> torch.nn.Module:
    """Random BatchNorm statistics and affine terms, as training leaves them (fresh ones fold to almost nothing)."""
    generator = torch.Generator().manual_seed(3)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)
    return model.eval()


@pytest.mark.parametrize("name", ["wu2020", "wu2020_hybrid"])
def test_fold_batch_norms_keeps_the_function_and_removes_every_batch_norm(name):
    model = _with_trained_statistics(benchmark_model(name))
    images, clinical = _images(3, 64), torch.tensor([[1.0], [0.0], [1.0]])
    with torch.inference_mode():
        expected = model(images, clinical) if name.endswith("hybrid") else model(images)
        folded = fold_batch_norms(copy.deepcopy(model))  # the hybrid does not trace whole: folded child by child
        got = folded(images, clinical) if name.endswith("hybrid") else folded(images)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) >= 9
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()


def test_fuse_path_on_a_detector_backbone():
    model = _with_trained_statistics(benchmark_model("fasterrcnn_lite_fpn", image_size=64))
    spread_detector_scores(model, _images(2, 64))
    predictor = Predictor(model, InferenceOptions(fuse=True))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in predictor.model.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the model itself is untouched
    report = verify_fast_path(model, InferenceOptions(fuse=True), _images(2, 64))
    assert report.ok, report.detail


def test_fuse_refuses_batch_norms_it_cannot_fold():
    from torchvision.ops.misc import FrozenBatchNorm2d

    frozen = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), FrozenBatchNorm2d(4), torch.nn.ReLU())
    with pytest.raises(ValueError, match="FrozenBatchNorm2d.*without fuse"):
        fold_batch_norms(frozen)
