"""``harness bench``'s output: a rich table per model, and one MLflow run per model and path."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from .run import PathResult
from .scenarios import PAPER_SECONDS_PER_IMAGE

EXPERIMENT = "benchmarks"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def print_results(
    results: Sequence[PathResult], overhead: dict[str, float], *, device: str, scenario: str, console: Console
) -> None:
    """One table per model (rows: inference paths), then how the compute floor is computed and the overhead."""
    by_model: dict[str, list[PathResult]] = {}
    for result in results:
        trained = "" if result.weights == "random" else f" (trained: {result.weights})"
        by_model.setdefault(result.model + trained, []).append(result)
    for model, rows in by_model.items():
        table = Table(title=f"{model} - {scenario} on {device}", title_justify="left")
        for column in (
            "path",
            "engine",
            "equal",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "img/s",
            "batch",
            "case s",
            f"/{PAPER_SECONDS_PER_IMAGE}s",
            "speed-up",
            "GFLOP",
            "floor ms",
        ):
            table.add_column(column, justify="left" if column in ("path", "engine", "equal") else "right")
        reference = rows[0].seconds_per_image
        for row in rows:
            record = row.as_dict()
            seconds = row.seconds_per_image
            speedup = "-" if not (seconds and reference) else f"{reference / seconds:.2f}x"
            equal = "[green]yes[/]" if row.equal else "[red]NO[/]"
            table.add_row(
                row.options.label,
                record["engine_version"],
                equal,
                _ms(record["p50_ms"]),
                _ms(record["p90_ms"]),
                _ms(record["p99_ms"]),
                "-" if record["images_per_s"] is None else f"{record['images_per_s']:.1f}",
                "-" if record["batch"] is None else str(record["batch"]),
                "-" if row.case_s is None else f"{row.case_s:.2f} s",
                "-" if record["ratio_to_paper"] is None else f"{record['ratio_to_paper']:.3f}",
                speedup,
                "-" if row.gflop_per_image is None else f"{row.gflop_per_image:.2f}",
                _ms(row.floor_ms),
            )
        console.print(table)
        for row in rows[1:]:
            console.print(f"  {row.options.label}: {'equal' if row.equal else 'NOT equal, not timed'}: {row.equality}")
    console.print(
        f"case s: one 100-slice study in batches (scaled from the slices run); /{PAPER_SECONDS_PER_IMAGE}s: "
        f"seconds per image over the papers' {PAPER_SECONDS_PER_IMAGE} s/image; speed-up: over eager fp32"
    )
    if any(r.floor_ms is not None for r in results):
        console.print(
            "compute floor = FLOPs per image (FlopCounterMode, one batch-1 eager forward: convolutions and "
            "matrix products) / the device's dense peak for the dtype; GFLOP / (TFLOP/s) = ms"
        )
    else:
        console.print("compute floor: GPU only (FLOPs per image / the device's dense peak); none on this device")
    console.print(
        f"harness overhead (null backend, single-stream): p50 {1e3 * overhead['p50_ms']:.1f} us, "
        f"p99 {1e3 * overhead['p99_ms']:.1f} us per query"
    )


def log_results(records: Sequence[dict[str, Any]], *, uri: str, scenario: str, device: str) -> list[str]:
    """Log each record as a run of the ``benchmarks`` experiment; returns the run ids."""
    import torch

    from harness.provenance import git_commit
    from harness.tracking import log_benchmark_run

    run_ids = []
    for record in records:
        params = {
            "model": record["model"],
            "task": record["task"],
            "scenario": scenario,
            "path": record["path"],
            "engine": record["engine"],
            "engine_version": record["engine_version"],
            "device": record["device"],
            "device_name": device,
            "torch_version": torch.__version__,
            "threads": record["threads"],
            "dtype": record["dtype"],
            "channels_last": record["channels_last"],
            "compile": record["compile"],
            "fuse": record["fuse"],
            "uint8": record["uint8"],
            "cuda_graphs": record["cuda_graphs"],
            "weights": record["weights"],
            "batch_size": record["batch"],
            "case_slices_measured": record["case_slices_measured"],
            "equal": record["equal"],
            "equality": record["equality"],
        }
        metrics = {
            k: record[k]
            for k in (
                "p50_ms",
                "p90_ms",
                "p99_ms",
                "mean_ms",
                "images_per_s",
                "per_case_s",
                "ratio_to_paper",
                "gflop_per_image",
                "floor_ms",
            )
        }
        tags = {"harness.commit": git_commit()}
        run_ids.append(
            log_benchmark_run(uri, EXPERIMENT, f"{record['model']} {record['path']} {scenario}", params, metrics, tags)
        )
    return run_ids
