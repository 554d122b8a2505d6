"""Fixtures of the pytest-benchmark suite (``pytest benchmarks/``): device, inference paths, inputs, studies.

The device is CUDA when present (``--bench-device cpu`` forces the CPU). Each model runs on the eager fp32 path, on
channels_last, and on the device's fast path (with native bf16, CPU or CUDA: classifiers bf16 autocast +
channels_last, detectors bf16 in the box head only; else channels_last), each checked against eager fp32 before it
is timed. Inputs are slices
of a small synthetic cohort generated once per session into a temporary cache folder; detectors run at a fixed
CPU-sized input (``--bench-detector-size``, default 128 on the CPU, 512 on CUDA).
"""

from __future__ import annotations

import pytest
import torch

from harness.inference import InferenceOptions


def pytest_addoption(parser):
    group = parser.getgroup("lnm-harness benchmarks")
    group.addoption("--bench-device", default=None, help="cpu or cuda (default: cuda when available)")
    group.addoption("--bench-detector-size", type=int, default=None, help="detector input side (128 CPU / 512 GPU)")
    group.addoption("--bench-threads", type=int, default=None, help="torch CPU threads (default: torch's)")


def cpu_has_bf16() -> bool:
    """Native bf16 (AVX512-BF16 or AMX) on this CPU: otherwise bf16 autocast is emulated and slower than fp32."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = cpuinfo.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@pytest.fixture(scope="session")
def device(request) -> str:
    chosen = request.config.getoption("--bench-device") or ("cuda" if torch.cuda.is_available() else "cpu")
    if chosen.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    threads = request.config.getoption("--bench-threads")
    if threads:
        torch.set_num_threads(threads)
    return chosen


@pytest.fixture(scope="session")
def detector_size(request, device) -> int:
    return request.config.getoption("--bench-detector-size") or (512 if device.startswith("cuda") else 128)


def fast_path(device: str, task: str) -> InferenceOptions:
    """The device's fast path for a task (see the module docstring)."""
    if not (device.startswith("cuda") or cpu_has_bf16()):
        return InferenceOptions(device=device, channels_last=True)
    if task == "detection":  # bf16 in the box head only: random-weight proposals are not stable in bf16
        return InferenceOptions(device=device, dtype="bf16", amp_scope="box_head")
    return InferenceOptions(device=device, dtype="bf16", channels_last=True)


def engine_path(device: str, task: str) -> InferenceOptions | None:
    """The fastest engine path expected on ``device``: TensorRT fp16 for classifiers on CUDA, OpenVINO bf16 on a CPU
    with native bf16 (else f32), ONNX Runtime fp32 when OpenVINO is missing; None when no engine fits."""
    from harness.engines import engine_installed

    if device.startswith("cuda"):
        if task == "classification" and engine_installed("tensorrt"):
            return InferenceOptions(device=device, engine="tensorrt", dtype="fp16")
        return None
    if engine_installed("openvino"):
        return InferenceOptions(engine="openvino", dtype="bf16" if cpu_has_bf16() else "fp32")
    return InferenceOptions(engine="onnxruntime") if engine_installed("onnxruntime") else None


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("bench-cache")


@pytest.fixture(scope="session")
def sample_sets(cache_root):
    """``sample_sets(task, size)``: real slices of the benchmark cohort, loaded once per task and size."""
    from harness.bench.scenarios import load_samples

    loaded = {}

    def get(task: str, size: int):
        if (task, size) not in loaded:
            loaded[task, size] = load_samples(task, image_size=size, count=16, cache_root=cache_root)
        return loaded[task, size]

    return get


@pytest.fixture(scope="session")
def study(cache_root):
    """The first patient's T2WI study of the benchmark cohort (files and tumour boxes)."""
    from harness.bench.e2e import find_study
    from harness.bench.scenarios import cohort_root

    return find_study(cohort_root(cache_root))
