"""The benchmark driver (MLPerf LoadGen style): scenarios that know no model, backends that know one.

A `Backend` has ``load(samples)``, ``prepare(images)`` (the host-side hand-over a data loader would make: pinned
memory on CUDA, uint8 quantisation on that path; done before the clock starts), ``predict(images, clinical)`` (host
inputs in, post-processed host results out) and ``synchronize()``; `ModelBackend` wraps a registry model on an
inference path (`harness.inference`), `NullBackend` returns its input and so measures the harness's own overhead
(the call, the clock, the loop).

Scenarios:
- `single_stream`: one image per query, queries one after another, after ``warmup`` untimed ones; the latency
  of each query is read after ``synchronize()``; p50 / p90 / p99 and images/s.
- `offline`: batches of every size in ``batch_sizes``; images/s of each, the best one reported.
- `case_time`: the slices of one study (``slices``, 100 by default) in batches: the per-case latency.

Inputs are slices of a small synthetic cohort (`load_samples`: 2 patients generated once into the cache folder),
never zeros: a detector's cost depends on what it sees (proposals, NMS).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from harness.inference import InferenceOptions
from harness.predictors import make_predictor

from .weights import benchmark_model, spread_detector_scores

PAPER_SECONDS_PER_IMAGE = 0.2  # Lu 2018: 0.2 s per image, 20 s per 100-slice case
CASE_SLICES = 100
CLASSIFIER_SIZE = 64  # Wu 2020's 64x64 crops
DETECTOR_SIZE = 256  # a CPU-sized detector input (the papers' 512 is an option)
OFFLINE_BATCHES = (1, 4, 16)
BENCH_COHORT = {"patients": 2, "centers": 1, "seed": 0}
Clock = Callable[[], float]


@dataclass
class Samples:
    """Benchmark inputs: ``images`` (N, 3, S, S) float32 and ``clinical`` (N, 1) float32 (MR-LN status)."""

    images: torch.Tensor
    clinical: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, start: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``size`` samples from ``start`` on, wrapping around (a contiguous copy, as a loader would hand over)."""
        index = torch.arange(start, start + size) % len(self)
        return self.images[index].contiguous(), self.clinical[index].contiguous()


def cohort_root(cache_root: Path | None = None) -> Path:
    """The benchmark cohort (`BENCH_COHORT`), generated into the cache folder on first use."""
    from harness.datasets.cache import default_cache_root
    from harness.datasets.synthetic import generate_cohort

    root = (cache_root or default_cache_root()) / "bench-cohort"
    if not (root / "manifest.csv").is_file():
        with contextlib.suppress(FileExistsError):  # another process finished it meanwhile
            generate_cohort(root, **BENCH_COHORT, overwrite=True)
    return root


def load_samples(
    task: str, *, image_size: int, count: int = 16, cache_root: Path | None = None, sequence: str = "T2WI"
) -> Samples:
    """``count`` (at most) real slices of the benchmark cohort, preprocessed as for training.

    Args:
        task: ``"classification"`` (Wu 2020 three-slice tumour crops) or ``"detection"`` (whole axial slices
            resized to ``image_size``).
        image_size: side in pixels.
        count: samples kept, spread evenly over the available ones.
        cache_root: the cache folder (cohort and preprocessed arrays); `default_cache_root` when None.
        sequence: the MRI sequence (T2WI by default; a trained model's own, e.g. DWI).
    """
    from harness.datasets.classification import TumourSliceDataset
    from harness.datasets.detection import NodeSliceDataset
    from harness.datasets.index import index_dataset

    index = index_dataset(cohort_root(cache_root))
    patients = index.usable_patients()
    if task == "classification":
        dataset = TumourSliceDataset(index, patients, sequence=sequence, size=image_size, cache_root=cache_root)
    else:
        dataset = NodeSliceDataset(index, patients, sequence=sequence, image_size=image_size, cache_root=cache_root)
    # The middle of the stacks: end slices are mostly background.
    picks = np.unique(np.linspace(len(dataset) * 0.2, len(dataset) * 0.8 - 1, num=count).round().astype(int))
    if task == "detection":
        picks = _node_slices_first(dataset, picks, count)
    items = [dataset[int(i)] for i in picks]
    images = torch.stack([item["image"] for item in items]).float()
    clinical = torch.tensor([[max(float(item.get("mr_ln_status", 0)), 0.0)] for item in items])
    return Samples(images, clinical)


def _node_slices_first(dataset, picks: np.ndarray, count: int) -> list[int]:
    """Up to half of ``count`` slices with target nodes, first, then the other ``picks``.

    Equality checks run on the first samples and compare confident detections: a trained detector has none on a
    background slice, so a check on background alone would compare nothing.
    """
    with_nodes = [i for i in range(len(dataset)) if len(dataset[i]["target"]["boxes"])]
    spread = np.linspace(0, len(with_nodes) - 1, num=min(count // 2, len(with_nodes))).round().astype(int)
    first = list(dict.fromkeys(with_nodes[int(j)] for j in spread))
    return first + [int(i) for i in picks if i not in first][: count - len(first)]


class Backend(Protocol):
    """What a scenario drives: ``load`` once, then ``predict`` per query, ``synchronize`` before the clock."""

    name: str

    def load(self, samples: Samples) -> None: ...

    def prepare(self, images: torch.Tensor) -> Any: ...

    def predict(self, images: torch.Tensor, clinical: torch.Tensor) -> Any: ...

    def synchronize(self) -> None: ...


class NullBackend:
    """The identity: what a query costs the harness itself (call, clock reads, loop), with no model."""

    name = "null"
    task = "classification"

    def load(self, samples: Samples) -> None:
        """Nothing to load."""

    def prepare(self, images: torch.Tensor) -> Any:
        """Nothing to hand over."""
        return images

    def predict(self, images: torch.Tensor, clinical: torch.Tensor) -> Any:
        """Return the input unchanged."""
        return images

    def synchronize(self) -> None:
        """Nothing to wait for."""


class ModelBackend:
    """A registry model on one inference path (`harness.predictors.make_predictor`: a torch path or an engine).

    Args:
        name: a registry name.
        options: the inference path.
        image_size: the detector's fixed input side (classifiers take their samples' size).
        model: an already built model (its weights are copied); built with `benchmark_model` when None.
    """

    def __init__(self, name: str, options: InferenceOptions, image_size: int | None = None, model=None):
        self.name, self.options, self.image_size, self.model = name, options, image_size, model
        self.predictor = None  # a Predictor or an EnginePredictor, made by load

    def load(self, samples: Samples) -> None:
        """Build the model (seeded random weights; a detector's scores spread on ``samples``) and its path (an
        engine's export is made at the samples' size)."""
        if self.model is None:
            self.model = benchmark_model(self.name, image_size=self.image_size)
            if hasattr(self.model, "roi_heads"):
                spread_detector_scores(self.model, samples.images[:4])
        self.predictor = make_predictor(self.model, self.options, image_size=int(samples.images.shape[-1]))

    def prepare(self, images: torch.Tensor) -> Any:
        """The predictor's host-side hand-over (`Predictor.prepare`)."""
        return self.predictor.prepare(images)

    def predict(self, images: torch.Tensor, clinical: torch.Tensor) -> Any:
        """Post-processed host outputs: probabilities, or detections."""
        return self.predictor(images, clinical)

    def synchronize(self) -> None:
        """CUDA synchronize (no-op on the CPU)."""
        self.predictor.synchronize()


@dataclass
class ScenarioResult:
    """Timings of one scenario: per-query latencies (s) and the throughput they imply."""

    scenario: str
    batch: int
    latencies: list[float]
    images: int
    per_batch: dict[int, float] = field(default_factory=dict)  # offline: images/s of each batch size tried

    @property
    def seconds(self) -> float:
        return float(sum(self.latencies))

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("inf")

    def percentile(self, q: float) -> float:
        """Latency percentile (s) of the queries, linear interpolation (numpy's default)."""
        return float(np.percentile(self.latencies, q))

    def summary(self) -> dict[str, float]:
        """``p50_ms``, ``p90_ms``, ``p99_ms``, ``mean_ms`` (per query), ``images_per_s``, ``batch``, ``queries``."""
        return {
            "p50_ms": 1e3 * self.percentile(50),
            "p90_ms": 1e3 * self.percentile(90),
            "p99_ms": 1e3 * self.percentile(99),
            "mean_ms": 1e3 * float(np.mean(self.latencies)),
            "images_per_s": self.images_per_s,
            "batch": self.batch,
            "queries": len(self.latencies),
        }


def _prepared(backend: Backend, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[Any, torch.Tensor]]:
    return [(backend.prepare(images), clinical) for images, clinical in batches]


def _timed_queries(backend: Backend, queries: Sequence[tuple[Any, torch.Tensor]], clock: Clock) -> list[float]:
    latencies = []
    for images, clinical in queries:
        start = clock()
        backend.predict(images, clinical)
        backend.synchronize()
        latencies.append(clock() - start)
    return latencies


def _warm(backend: Backend, samples: Samples, batch: int, rounds: int) -> None:
    for i in range(rounds):
        backend.predict(*samples.batch(i * batch, batch))
    backend.synchronize()


def single_stream(
    backend: Backend, samples: Samples, *, queries: int = 32, warmup: int = 2, clock: Clock = time.perf_counter
) -> ScenarioResult:
    """MLPerf SingleStream: ``queries`` one-image queries, each issued when the previous one has finished.

    Inputs are batched and prepared (`Backend.prepare`) before the clock starts: the scenario times the system under
    test, not our slicing.
    """
    if queries < 1:
        raise ValueError(f"queries must be >= 1, got {queries}")
    _warm(backend, samples, 1, warmup)
    inputs = _prepared(backend, [samples.batch(q, 1) for q in range(queries)])
    return ScenarioResult("single-stream", 1, _timed_queries(backend, inputs, clock), images=queries)


def offline(
    backend: Backend,
    samples: Samples,
    *,
    batch_sizes: Sequence[int] = OFFLINE_BATCHES,
    images: int = 32,
    warmup: int = 1,
    clock: Clock = time.perf_counter,
) -> ScenarioResult:
    """MLPerf Offline: throughput at each batch size (about ``images`` images each); the best one is returned,
    with every batch size's images/s in ``per_batch``."""
    best: ScenarioResult | None = None
    per_batch: dict[int, float] = {}
    for size in batch_sizes:
        _warm(backend, samples, size, warmup)
        rounds = max(1, -(-images // size))
        inputs = _prepared(backend, [samples.batch(r * size, size) for r in range(rounds)])
        result = ScenarioResult("offline", size, _timed_queries(backend, inputs, clock), images=rounds * size)
        per_batch[size] = result.images_per_s
        if best is None or result.images_per_s > best.images_per_s:
            best = result
    best.per_batch = per_batch
    return best


def case_time(
    backend: Backend, samples: Samples, *, batch: int, slices: int = CASE_SLICES, clock: Clock = time.perf_counter
) -> float:
    """Seconds for one study of ``slices`` slices, run in batches of ``batch`` (inputs prepared beforehand)."""
    inputs = _prepared(backend, [samples.batch(start, min(batch, slices - start)) for start in range(0, slices, batch)])
    for size in {int(images.shape[0]) for images, _ in inputs}:  # a new shape may compile or capture: not timed
        _warm(backend, samples, size, 1)
    return float(sum(_timed_queries(backend, inputs, clock)))


def harness_overhead(samples: Samples, *, queries: int = 200, clock: Clock = time.perf_counter) -> ScenarioResult:
    """Single-stream through the `NullBackend`: the per-query cost of the harness itself."""
    return single_stream(NullBackend(), samples, queries=queries, warmup=5, clock=clock)


def interleaved(
    backends: Sequence[Backend],
    samples: Samples,
    *,
    batch: int = 1,
    rounds: int = 5,
    warmup: int = 1,
    clock: Clock = time.perf_counter,
) -> list[list[float]]:
    """Per backend, ``rounds`` latencies of one ``batch``-image query, the backends taking turns in every round.

    On a shared machine the load changes from second to second: taking turns exposes every backend to the same
    load, so the ratio of their medians means something where their absolute times do not.
    """
    for backend in backends:
        _warm(backend, samples, batch, warmup)
    latencies: list[list[float]] = [[] for _ in backends]
    for r in range(rounds):
        query = samples.batch(r * batch, batch)
        for i, backend in enumerate(backends):
            latencies[i] += _timed_queries(backend, _prepared(backend, [query]), clock)
    return latencies
