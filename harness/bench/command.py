"""The whole ``harness bench`` command: models and checkpoints, every path of each (`harness.bench.run`), the
table, the JSON file and the MLflow records (`harness.bench.report`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from harness.console import wide_when_piped
from harness.inference import InferenceOptions

from .report import log_results, print_results
from .run import PathResult, bench_model, device_name, overhead_summary
from .scenarios import CASE_SLICES, CLASSIFIER_SIZE, load_samples
from .weights import checkpoint_model


@dataclass
class BenchRequest:
    """What ``harness bench`` was asked for (its options, parsed and checked)."""

    models: list[str]  # registry names with seeded random weights; default: wu2020 and fasterrcnn_vgg16
    checkpoints: list[Path]  # trained models to time
    paths: list[InferenceOptions]  # the first sets the device; eager fp32 is added as the reference
    scenario: str = "single-stream"
    queries: int = 32
    batch_sizes: list[int] = field(default_factory=lambda: [1, 4, 16])
    image_size: int | None = None
    case_slices: int = CASE_SLICES
    threads: int | None = None
    peak_tflops: float | None = None
    interleave: bool = False
    json_out: Path | None = None
    tracking_uri: str | None = ""  # None: no MLflow; "": MLFLOW_TRACKING_URI, else ./mlflow.db


def run_benchmark(request: BenchRequest, console) -> list[PathResult]:
    """``harness bench``: time every model on every path, print the table, write JSON, log to MLflow.

    Args:
        request: the parsed options.
        console: a ``rich.console.Console`` for the table and the progress.

    Returns:
        The results of every model and path, the reference first per model.
    """
    device = request.paths[0].device
    if request.threads:
        torch.set_num_threads(request.threads)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    wide_when_piped(console)  # the tables have 13 columns
    trained = [checkpoint_model(path, image_size=request.image_size) for path in request.checkpoints]
    default_models = [] if trained else ["wu2020", "fasterrcnn_vgg16"]
    runs = [(name, None) for name in request.models or default_models] + [(w.name, w) for w in trained]
    results = []
    for name, weights in runs:
        what = name if weights is None else f"{name} from {weights.source}"
        with console.status(f"benchmarking {what} ({request.scenario}, {request.paths[0].label})"):
            results += bench_model(
                name,
                request.paths,
                scenario=request.scenario,
                queries=request.queries,
                batch_sizes=request.batch_sizes,
                image_size=request.image_size,
                case_slices=request.case_slices,
                peak_override=request.peak_tflops,
                weights=weights,
                interleave=request.interleave,
            )
    overhead = overhead_summary(load_samples("classification", image_size=CLASSIFIER_SIZE))
    name_of_device = device_name(device)
    print_results(results, overhead, device=name_of_device, scenario=request.scenario, console=console)
    records = [r.as_dict() for r in results]
    if request.json_out:
        payload = {
            "scenario": request.scenario,
            "device_name": name_of_device,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "harness_overhead": overhead,
            "results": records,
        }
        request.json_out.write_text(json.dumps(payload, indent=2) + "\n")
        console.print(f"wrote {request.json_out}")
    if request.tracking_uri is not None:
        from harness.tracking import tracking_uri_from

        uri = tracking_uri_from(request.tracking_uri or None)
        log_results(records, uri=uri, scenario=request.scenario, device=name_of_device)
        console.print(f"MLflow: experiment 'benchmarks' at {uri}")
    return results
