"""``harness export``: a checkpoint or a registry model to an ONNX file, checked against eager fp32 first.

The exported graph is run by ONNX Runtime (OpenVINO when ONNX Runtime is missing) on slices of the benchmark
cohort (`harness.bench.scenarios.load_samples`: the checkpoint's sequence and slice size) and its outputs must equal
eager fp32's (`harness.equality.check_equal`, fp32 tolerance) before the file is written; a failed check writes
nothing. The file carries the model's description in its ONNX metadata (`harness.engines.onnx_export`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from harness.equality import EqualityReport, check_equal

from . import engine_installed
from .onnx_export import OnnxModel, export_onnx

CHECK_IMAGES = {"classification": 16, "detection": 4}


@dataclass
class ExportResult:
    """What `export_checked` made: the export, the engine path that checked it, and the check."""

    onnx: OnnxModel
    checked_with: str
    equality: EqualityReport


def default_out(source: str) -> Path:
    """``<checkpoint>.onnx`` beside a checkpoint; ``<name>.onnx`` in the working folder for a registry name."""
    path = Path(source)
    return path.with_suffix(".onnx") if path.suffix == ".pt" else Path(f"{source}.onnx")


def export_checked(
    model: torch.nn.Module,
    images: torch.Tensor,
    clinical: torch.Tensor,
    *,
    batch: int | None = None,
    metadata: dict | None = None,
) -> ExportResult:
    """Export ``model`` at ``images``' size and compare the export with eager fp32 on ``images``.

    Args:
        model: a registry model or a checkpoint's.
        images: check inputs (N, 3, S, S), e.g. `load_samples` slices.
        clinical: their clinical variables (the hybrid classifier's).
        batch: a classifier's fixed batch size (None: dynamic); the check then runs in batches of it.
        metadata: more ``harness.*`` metadata properties (the checkpoint's path, sequence...).
    """
    from harness.inference import InferenceOptions, Predictor

    from .runtimes import EnginePredictor

    engine = next((e for e in ("onnxruntime", "openvino") if engine_installed(e)), None)
    if engine is None:
        raise ValueError("no engine to check the export with: pip install -e '.[onnx]' (ONNX Runtime)")
    onnx = export_onnx(model, image_size=int(images.shape[-1]), batch=batch, metadata=metadata)
    options = InferenceOptions(engine=engine)
    runner = EnginePredictor(model, options, onnx=onnx)
    reference = Predictor(model, InferenceOptions())
    step = batch or len(images)
    rows = range(0, len(images) - len(images) % step, step)  # whole batches (a fixed batch takes no other size)
    expected, got = [], []
    for start in rows:
        expected.append(reference(images[start : start + step], clinical[start : start + step]))
        got.append(runner(images[start : start + step], clinical[start : start + step]))
    if onnx.task == "classification":
        expected, got = torch.cat(expected), torch.cat(got)
    else:
        expected, got = sum(expected, []), sum(got, [])
    return ExportResult(onnx, options.label, check_equal(expected, got, onnx.task, "fp32"))
