"""Per-image latency and batched throughput of every model family, model-only and end to end.

Run with ``pytest benchmarks/`` (add ``--benchmark-json=out.json`` for pytest-benchmark's JSON). Each benchmark's
``extra_info`` names the model, path, device, dtype, batch and input size, and the derived numbers: images/s and
a 100-slice study's time at that rate. A fast path is timed only after its outputs matched eager fp32's.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from harness.bench.e2e import end_to_end_case
from harness.bench.scenarios import CASE_SLICES, CLASSIFIER_SIZE
from harness.bench.weights import benchmark_model, spread_detector_scores
from harness.equality import check_equal
from harness.inference import InferenceOptions, Predictor
from harness.models import list_models, model_task
from harness.predictors import make_predictor

from .conftest import engine_path, fast_path

MODELS = list_models(task="classification") + list_models(task="detection")
PATHS = ["eager-fp32", "channels_last", "fast", "engine"]
BATCH = {"classification": 64, "detection": 4}
_built: dict = {}


def _model(name: str, size: int, samples):
    """The model with seeded random weights (a detector's scores spread on the samples), built once per session."""
    if (name, size) not in _built:
        model = benchmark_model(name, image_size=size)
        if model_task(name) == "detection":
            spread_detector_scores(model, samples.images[:4])
        _built[name, size] = model
    return _built[name, size]


def _predictor(name, path, device, detector_size, sample_sets, batch):
    task = model_task(name)
    size = CLASSIFIER_SIZE if task == "classification" else detector_size
    samples = sample_sets(task, size)
    model = _model(name, size, samples)
    base = InferenceOptions(device=device, batch=batch)
    if path == "eager-fp32":
        options = base
    elif path == "channels_last":
        options = InferenceOptions(device=device, channels_last=True, batch=batch)
    elif path == "engine":
        options = engine_path(device, task)
        if options is None:
            pytest.skip(f"no inference engine installed for {device} (pip install -e '.[onnx,openvino]')")
        options = replace(options, batch=batch)
    else:
        options = replace(fast_path(device, task), batch=batch)
    predictor = make_predictor(model, options, image_size=size)
    if path != "eager-fp32":  # its time counts only when its outputs equal eager fp32's
        images, clinical = samples.batch(0, 4)
        report = check_equal(Predictor(model, base)(images, clinical), predictor(images, clinical), task, options.dtype)
        if not report.ok:
            pytest.skip(f"{options.label} differs from eager fp32 ({report.detail}): not timed")
    return predictor, samples, size, options


def _run(predictor: Predictor, images: torch.Tensor, clinical: torch.Tensor):
    out = predictor(images, clinical)  # host outputs: the device-to-host copy already waits for the GPU
    predictor.synchronize()  # pytest-benchmark reads its clock right after: make sure the device is done
    return out


def _info(benchmark, name, options, size, batch, kind):
    benchmark.extra_info.update(
        {
            "model": name,
            "path": options.label,
            "engine": options.engine,
            "device": options.device,
            "dtype": options.dtype,
            "channels_last": options.channels_last,
            "batch": batch,
            "input_size": size,
            "kind": kind,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        }
    )
    precision = options.dtype if options.engine == "torch" else options.label  # openvino:bf16, onnxruntime:fp32
    benchmark.name = f"{benchmark.name}[{options.device}-{precision}]"


def _throughput(benchmark, images: int) -> None:
    mean = benchmark.stats.stats.mean
    benchmark.extra_info["images_per_s"] = images / mean
    benchmark.extra_info["per_case_s_at_this_rate"] = CASE_SLICES * mean / images


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", MODELS)
def test_latency_batch1(benchmark, name, path, device, detector_size, sample_sets):
    """Model only, one image per call (the single-stream latency)."""
    predictor, samples, size, options = _predictor(name, path, device, detector_size, sample_sets, 1)
    images, clinical = samples.batch(3, 1)
    _info(benchmark, name, options, size, 1, "model-only")
    rounds = 20 if predictor.task == "classification" else 3
    benchmark.pedantic(_run, args=(predictor, images, clinical), rounds=rounds, warmup_rounds=1, iterations=1)
    _throughput(benchmark, 1)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", MODELS)
def test_throughput_batched(benchmark, name, path, device, detector_size, sample_sets):
    """Model only, a batch of slices per call (the offline throughput)."""
    task = model_task(name)
    batch = BATCH[task]
    predictor, samples, size, options = _predictor(name, path, device, detector_size, sample_sets, batch)
    images, clinical = samples.batch(0, batch)
    _info(benchmark, name, options, size, batch, "model-only")
    rounds = 10 if task == "classification" else 2
    benchmark.pedantic(_run, args=(predictor, images, clinical), rounds=rounds, warmup_rounds=1, iterations=1)
    _throughput(benchmark, batch)


READS = {"dicom": {"workers": 0}, "dicom-2-workers": {"workers": 2}, "cache": {"workers": 0}}


@pytest.mark.parametrize("read", list(READS))
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", ["wu2020", "fasterrcnn_vgg16"])
def test_end_to_end_case(benchmark, name, path, read, device, detector_size, sample_sets, study, cache_root):
    """One T2WI study: read (DICOM parsed serially or in 2 DataLoader workers, or the volume from the preprocessed
    cache, filled by the warm-up round) -> preprocessing -> model (batches of slices) -> post-processing."""
    from harness.datasets.cache import ArrayCache

    task = model_task(name)
    predictor, _samples, size, options = _predictor(name, path, device, detector_size, sample_sets, 8)
    _info(benchmark, name, options, size, 8, "end-to-end")
    slices = len(study.tumour_boxes) if task == "classification" else len(study.files)
    kwargs = {"image_size": size, "batch": 8, **READS[read]}
    if read == "cache":
        kwargs["cache"] = ArrayCache("e2e-volumes", root=cache_root)
    result = benchmark.pedantic(
        end_to_end_case, args=(predictor, study), kwargs=kwargs, rounds=2, warmup_rounds=1, iterations=1
    )
    assert (0.0 <= result <= 1.0) if task == "classification" else len(result) == slices
    benchmark.extra_info.update({"slices": slices, "read": read, "workers": READS[read]["workers"]})
    _throughput(benchmark, slices)
