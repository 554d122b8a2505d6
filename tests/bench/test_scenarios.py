"""The scenarios' statistics, driven by fake backends on a fake clock (exact numbers), and the null backend."""

import numpy as np
import pytest
import torch

from harness.bench.scenarios import (
    NullBackend,
    Samples,
    ScenarioResult,
    case_time,
    harness_overhead,
    interleaved,
    offline,
    single_stream,
)


class FakeClock:
    """A clock that only moves when a fake backend works."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeBackend:
    """Each query costs ``fixed + per_image * batch`` seconds of fake time; query q of the timed run costs
    ``costs[q]`` instead when given. Records the batch sizes it saw."""

    name = "fake"

    def __init__(self, clock: FakeClock, fixed: float = 0.0, per_image: float = 0.0, costs=None):
        self.clock, self.fixed, self.per_image, self.costs = clock, fixed, per_image, list(costs or [])
        self.seen: list[int] = []
        self.synced = 0
        self.prepare_cost, self.prepared = 0.0, 0

    def load(self, samples) -> None:
        pass

    def prepare(self, images):
        self.clock.now += self.prepare_cost  # a loader's work: must happen before the clock starts
        self.prepared += 1
        return images

    def predict(self, images, clinical):
        self.seen.append(images.shape[0])
        cost = self.costs.pop(0) if self.costs else self.fixed + self.per_image * images.shape[0]
        self.clock.now += cost
        return images

    def synchronize(self) -> None:
        self.synced += 1


@pytest.fixture
def samples() -> Samples:
    generator = torch.Generator().manual_seed(0)
    return Samples(torch.rand(5, 3, 8, 8, generator=generator), torch.zeros(5, 1))


def test_single_stream_percentiles_match_numpy(samples):
    clock = FakeClock()
    costs = [0.010 * (q + 1) for q in range(100)]  # 10 ms, 20 ms ... 1000 ms
    # Two warm-up queries come first and are not timed: give them their own (huge) cost.
    backend = FakeBackend(clock, costs=[99.0, 99.0, *costs])
    backend.prepare_cost = 7.0  # the hand-over (pinning, uint8 quantisation) is not part of a query's latency
    result = single_stream(backend, samples, queries=100, warmup=2, clock=clock)
    summary = result.summary()
    assert backend.seen == [1] * 102 and backend.prepared == 100
    assert summary["queries"] == 100 and summary["batch"] == 1
    for q in (50, 90, 99):
        assert summary[f"p{q}_ms"] == pytest.approx(1e3 * np.percentile(costs, q))
    assert summary["p50_ms"] == pytest.approx(505.0)
    assert summary["images_per_s"] == pytest.approx(100 / sum(costs))
    assert backend.synced >= 100  # synchronised before every clock read


def test_single_stream_refuses_no_queries(samples):
    with pytest.raises(ValueError, match="queries"):
        single_stream(NullBackend(), samples, queries=0)


def test_offline_picks_the_batch_size_with_the_best_throughput(samples):
    clock = FakeClock()
    # 40 ms per call + 10 ms per image: batch 1 = 20 img/s, batch 4 = 50 img/s, batch 16 = 80 img/s.
    backend = FakeBackend(clock, fixed=0.040, per_image=0.010)
    result = offline(backend, samples, batch_sizes=(1, 4, 16), images=32, warmup=1, clock=clock)
    assert result.batch == 16
    assert result.per_batch == pytest.approx({1: 20.0, 4: 50.0, 16: 80.0})
    assert result.images_per_s == pytest.approx(80.0)
    assert result.images == 32 and len(result.latencies) == 2
    assert set(backend.seen) == {1, 4, 16}


def test_case_time_runs_every_slice_in_batches(samples):
    clock = FakeClock()
    backend = FakeBackend(clock, fixed=0.1, per_image=0.01)
    seconds = case_time(backend, samples, batch=16, slices=100, clock=clock)
    # One untimed query of each batch size first (a new shape may compile or capture a CUDA graph), then the case.
    assert sorted(backend.seen[:2]) == [4, 16] and backend.seen[2:] == [16] * 6 + [4]
    assert seconds == pytest.approx(7 * 0.1 + 100 * 0.01)


def test_interleaved_takes_turns(samples):
    clock = FakeClock()
    slow, fast = FakeBackend(clock, fixed=0.2), FakeBackend(clock, fixed=0.1)
    latencies = interleaved([slow, fast], samples, batch=2, rounds=3, warmup=1, clock=clock)
    assert latencies == [pytest.approx([0.2] * 3), pytest.approx([0.1] * 3)]


def test_samples_wrap_around(samples):
    images, clinical = samples.batch(4, 3)
    assert images.shape == (3, 3, 8, 8) and clinical.shape == (3, 1)
    assert torch.equal(images[1], samples.images[0])


def test_null_backend_overhead_is_small_and_returns_input(samples):
    images, clinical = samples.batch(0, 2)
    assert NullBackend().predict(images, clinical) is images
    result = harness_overhead(samples, queries=50)
    assert isinstance(result, ScenarioResult) and len(result.latencies) == 50
    assert 0 <= result.percentile(50) < 1e-3  # a function call and two clock reads: far below a millisecond


def test_a_path_a_model_cannot_take_is_reported_not_timed():
    from torchvision.ops.misc import FrozenBatchNorm2d

    from harness.bench.run import bench_model
    from harness.bench.scenarios import load_samples
    from harness.bench.weights import BenchWeights, benchmark_model, spread_detector_scores
    from harness.inference import InferenceOptions

    model = benchmark_model("fasterrcnn_lite_fpn", image_size=64)
    for parent in list(model.backbone.modules()):  # as pretrained torchvision detectors have them
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.BatchNorm2d):
                setattr(parent, name, FrozenBatchNorm2d(child.num_features))
    samples = load_samples("detection", image_size=64, count=4)
    spread_detector_scores(model, samples.images)
    weights = BenchWeights("fasterrcnn_lite_fpn", model.eval(), image_size=64)
    reference, fused = bench_model(
        "fasterrcnn_lite_fpn",
        [InferenceOptions(), InferenceOptions(fuse=True)],
        scenario="single-stream",
        queries=2,
        case_slices=1,
        samples=samples,
        weights=weights,
    )
    assert reference.equal and reference.timings["p50_ms"] > 0
    assert not fused.equal and fused.timings is None
    assert fused.equality.startswith("not applicable: fuse: BatchNorm layers (FrozenBatchNorm2d)")
