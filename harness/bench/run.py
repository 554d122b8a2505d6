"""One model on its inference paths, each checked against eager fp32, then timed (`bench_model`).

For each model the eager fp32 path runs first (the reference); every other path is checked against its outputs
(`harness.inference.check_equal`) and is timed only when the check passes. On a GPU the compute floor is the model's
FLOPs per image (``torch.utils.flop_counter.FlopCounterMode`` over one batch-1 forward of the eager model: the
convolutions and matrix products; RoIAlign and NMS are not counted) divided by the device's dense peak for the
path's dtype (`PEAK_TFLOPS`, or ``--peak-tflops``).
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.engines import engine_version
from harness.equality import EqualityReport, check_equal
from harness.inference import InferenceOptions, Predictor

from .scenarios import (
    CASE_SLICES,
    CLASSIFIER_SIZE,
    DETECTOR_SIZE,
    PAPER_SECONDS_PER_IMAGE,
    ModelBackend,
    Samples,
    ScenarioResult,
    case_time,
    harness_overhead,
    interleaved,
    load_samples,
    offline,
    single_stream,
)
from .weights import BenchWeights

# Dense peak TFLOP/s by device name fragment and dtype (vendor data sheets, SXM parts; fp32 without TF32).
PEAK_TFLOPS = {
    "H200": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "H100": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "A100": {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5},
}


@dataclass
class PathResult:
    """One model on one path: the equality check, the timings (None when the check failed) and the derived numbers."""

    model: str
    task: str
    options: InferenceOptions
    equal: bool
    equality: str
    scenario: str = "single-stream"
    timings: dict[str, float] | None = None
    per_batch: dict[int, float] = field(default_factory=dict)
    case_s: float | None = None
    case_slices: int = CASE_SLICES
    gflop_per_image: float | None = None
    floor_ms: float | None = None
    weights: str = "random"
    inputs: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-able record: model, path, settings, ``p50_ms``/``p90_ms``/``p99_ms``, ``images_per_s``..."""
        record = {
            "model": self.model,
            "task": self.task,
            "path": self.options.label,
            "engine": self.options.engine,
            "engine_version": engine_version(self.options.engine),
            "threads": torch.get_num_threads(),
            "scenario": self.scenario,
            "device": self.options.device,
            "dtype": self.options.dtype,
            "channels_last": self.options.channels_last,
            "compile": self.options.compile,
            "fuse": self.options.fuse,
            "uint8": self.options.uint8,
            "cuda_graphs": self.options.cuda_graphs,
            "weights": self.weights,
            "inputs": self.inputs,
            "equal": self.equal,
            "equality": self.equality,
            "per_case_s": self.case_s,
            "case_slices_measured": self.case_slices,
            "gflop_per_image": self.gflop_per_image,
            "floor_ms": self.floor_ms,
        }
        timings = self.timings or dict.fromkeys(("p50_ms", "p90_ms", "p99_ms", "mean_ms", "images_per_s", "batch"))
        record |= timings
        record["offline_images_per_s_by_batch"] = {str(k): v for k, v in self.per_batch.items()}
        seconds = self.seconds_per_image
        record["ratio_to_paper"] = None if seconds is None else seconds / PAPER_SECONDS_PER_IMAGE
        return record

    @property
    def seconds_per_image(self) -> float | None:
        """Single-stream: p50 latency; offline: 1 / images/s."""
        if not self.timings:
            return None
        if self.scenario == "single-stream":
            return self.timings["p50_ms"] / 1e3
        return 1.0 / self.timings["images_per_s"]


def device_name(device: str) -> str:
    """The GPU's name, or the CPU's model and core count."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def peak_tflops(device: str, dtype: str, override: float | None = None) -> float | None:
    """The dense peak for the path (None on a CPU or an unknown GPU, unless ``override`` is given)."""
    if override is not None:
        return override
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(torch.device(device))
    for fragment, peaks in PEAK_TFLOPS.items():
        if fragment in name:
            return peaks[dtype]
    return None


@torch.inference_mode()
def flops_per_image(predictor: Predictor, samples: Samples) -> float:
    """FLOPs of one batch-1 forward (FlopCounterMode: convolutions and matrix products)."""
    from torch.utils.flop_counter import FlopCounterMode

    images, clinical = samples.batch(0, 1)
    with FlopCounterMode(display=False) as counter:
        predictor(images, clinical)
    return float(counter.get_total_flops())


def bench_model(
    name: str,
    paths: Sequence[InferenceOptions],
    *,
    scenario: str,
    queries: int = 32,
    batch_sizes: Sequence[int] = (1, 4, 16),
    image_size: int | None = None,
    case_slices: int = CASE_SLICES,
    peak_override: float | None = None,
    samples: Samples | None = None,
    weights: BenchWeights | None = None,
    interleave: bool = False,
) -> list[PathResult]:
    """Check and time ``name`` on each path (the eager fp32 reference is added first when missing).

    Args:
        name: a registry name.
        paths: inference paths; their device must be the same.
        scenario: ``"single-stream"`` or ``"offline"``.
        queries: single-stream queries, or images per batch size in offline.
        batch_sizes: offline batch sizes tried.
        image_size: detector input side (default `DETECTOR_SIZE`); classifiers use `CLASSIFIER_SIZE`.
        case_slices: slices of the per-case measurement (reported as is; scale to 100 for a study).
        peak_override: device peak TFLOP/s for the compute floor.
        samples: inputs (default `load_samples`: slices of ``weights.sequence``, else T2WI).
        weights: a trained model (`checkpoint_model`) to time instead of seeded random weights; ``name`` must be
            its registry name.
        interleave: single-stream only: the paths take turns query by query (`harness.bench.scenarios.interleaved`), so
            that on a shared machine every path sees the same load and their ratios mean something.
    """
    from harness.models import model_task

    if scenario not in ("single-stream", "offline"):
        raise ValueError(f"scenario must be 'single-stream' or 'offline', got {scenario!r}")
    task = model_task(name)
    if weights is not None and weights.name != name:
        raise ValueError(f"weights of {weights.name} ({weights.source}) given for model {name}")
    model, source, sequence, trained_size = (
        (weights.model, weights.source, weights.sequence, weights.image_size)
        if weights is not None
        else (None, "random", "T2WI", None)
    )
    size = CLASSIFIER_SIZE if task == "classification" else (image_size or trained_size or DETECTOR_SIZE)
    samples = samples or load_samples(task, image_size=size, sequence=sequence)
    reference_options = paths[0].baseline()
    paths = [reference_options] + [p for i, p in enumerate(paths) if p != reference_options and p not in paths[:i]]
    results, backends = [], []
    for options, backend, report in checked_backends(name, paths, samples, size, model):
        results.append(
            PathResult(
                name,
                task,
                options,
                report.ok,
                report.detail,
                scenario,
                case_slices=case_slices,
                weights=source,
                inputs=f"{sequence} {size}x{size} px",
            )
        )
        backends.append(backend)
    timed = [(result, backend) for result, backend in zip(results, backends, strict=True) if result.equal]
    if interleave and scenario == "single-stream":
        rounds = interleaved([backend for _, backend in timed], samples, batch=1, rounds=queries, warmup=2)
        runs = [ScenarioResult("single-stream", 1, latencies, images=queries) for latencies in rounds]
    else:
        runs = [_scenario(backend, samples, scenario, queries, batch_sizes) for _, backend in timed]
    for (result, backend), run in zip(timed, runs, strict=True):
        result.timings, result.per_batch = run.summary(), run.per_batch
        case_batch = run.batch if scenario == "offline" else result.options.batch
        result.case_s = case_time(backend, samples, batch=case_batch, slices=case_slices) * CASE_SLICES / case_slices
        result.gflop_per_image = results[0].gflop_per_image or flops_per_image(backend.predictor, samples) / 1e9
        peak = peak_tflops(result.options.device, result.options.dtype, peak_override)
        if peak and result.gflop_per_image:
            result.floor_ms = result.gflop_per_image / peak  # GFLOP / (TFLOP/s) = ms
    return results


def checked_backends(name: str, paths: Sequence[InferenceOptions], samples: Samples, size: int, model=None):
    """Yield ``(options, loaded backend, equality report)`` for each path, checked against the first path (the eager
    fp32 reference, reported equal) on the first 4 samples and the last 2 (a detector's samples put slices with
    nodes first, `load_samples`: the last are background, where a path must stay as quiet as eager fp32). A path
    the model cannot take (CUDA graphs of a detector, fuse of frozen BatchNorms) is reported not equal, "not
    applicable: ...", rather than raised.

    Args:
        name: a registry name.
        paths: the reference first, then the paths to check.
        samples: the inputs.
        size: a detector's input side.
        model: the weights (default: seeded random ones, `benchmark_model`).
    """
    reference = ModelBackend(name, paths[0], image_size=size, model=model)
    reference.load(samples)
    picks = list(range(min(4, len(samples)))) + ([len(samples) - 2, len(samples) - 1] if len(samples) > 6 else [])
    check_images, check_clinical = samples.images[picks].contiguous(), samples.clinical[picks].contiguous()
    expected = reference.predict(check_images, check_clinical)
    yield paths[0], reference, EqualityReport(True, "reference")
    for options in paths[1:]:
        backend = ModelBackend(name, options, model=reference.model)
        try:
            backend.load(samples)
        except ValueError as exc:  # a path this model cannot take (CUDA graphs of a detector, fuse of frozen BN)
            yield options, backend, EqualityReport(False, f"not applicable: {exc}")
            continue
        output = backend.predict(check_images, check_clinical)
        yield options, backend, check_equal(expected, output, reference.predictor.task, options.dtype)


def _scenario(backend, samples, scenario, queries, batch_sizes) -> ScenarioResult:
    if scenario == "single-stream":
        return single_stream(backend, samples, queries=queries)
    return offline(backend, samples, batch_sizes=batch_sizes, images=queries)


def overhead_summary(samples: Samples, queries: int = 200) -> dict[str, float]:
    """The null backend's single-stream summary (the harness's own cost per query)."""
    return harness_overhead(samples, queries=queries).summary()
