"""Registry models to ONNX, the exchange format every engine reads.

- Classifiers (``wu2020``, ``wu2020_hybrid``): input ``images`` (B, 3, S, S) float32 (and ``clinical`` (B, F) for the
  hybrid), output ``probability`` (B,): the positive-class softmax, so that an engine's output is compared as is with
  `harness.inference.Predictor`'s. The batch axis is dynamic unless ``batch`` fixes it.
- Detectors (torchvision Faster R-CNN): input ``image`` (3, S, S) float32, one image per call (torchvision's ONNX
  support is for one image); outputs ``boxes`` (N, 4), ``labels`` (N,), ``scores`` (N,) in input pixels. The
  model's transform (normalisation, resizing to its ``min_size``) and its post-processing (box decoding, NMS) are in
  the graph, as torchvision exports them, with one change: the graph keeps detections of any score (its
  ``score_thresh`` is 0) and the model's own threshold is in the metadata (``score_thresh``), applied by the reader
  (`harness.engines.runtimes.EnginePredictor`: ``scores > score_thresh``). OpenVINO 2026.4 returns one spurious
  detection (a zero box, a score of the previous image) where the graph's result is empty; with no threshold in the
  graph it is never empty. Detections above the threshold are the same: NMS suppresses only lower-scoring boxes,
  and the 100 kept are the highest-scoring.

The exporter is torch's TorchScript-based one (``dynamo=False``, opset 17), the one torchvision's detection models
support. `export_onnx` returns bytes with the model's description in the ONNX metadata (registry name, task, input
size); `harness export` checks them against eager fp32 before writing (`harness.engines.export`).
"""

from __future__ import annotations

import copy
import inspect
import io
import json
import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn

from . import EngineMissing

OPSET = 17


@dataclass(frozen=True)
class OnnxModel:
    """An exported model: the ONNX bytes and what they take and give."""

    data: bytes
    name: str  # registry name
    task: str
    image_size: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    dynamic_batch: bool
    score_thresh: float | None = None  # detectors: the model's own threshold, applied by the reader


class _Probability(nn.Module):
    """A classifier whose output is the positive-class probability (B,)."""

    def __init__(self, model: nn.Module, hybrid: bool):
        super().__init__()
        self.model, self.hybrid = model, hybrid

    def forward(self, images: torch.Tensor, clinical: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.model(images, clinical) if self.hybrid else self.model(images)
        return logits.softmax(dim=1)[:, -1]


class _OneImageDetector(nn.Module):
    """A torchvision detector taking one (3, H, W) image and returning its boxes, labels and scores."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.detector([image])[0]
        return out["boxes"], out["labels"], out["scores"]


def export_onnx(
    model: nn.Module, *, image_size: int, batch: int | None = None, metadata: dict | None = None
) -> OnnxModel:
    """Export a registry model (fp32, eval mode, on the CPU; ``model`` itself is not changed).

    Args:
        model: a model from ``harness.models.create_model`` or a checkpoint.
        image_size: the input side in pixels (classifiers: the crop size; detectors: the slice size).
        batch: classifiers: a fixed batch size (None: a dynamic batch axis). Detectors take one image.
        metadata: more ``harness.*`` metadata properties (a checkpoint's path, sequence...).
    """
    from harness.models import model_task

    name = getattr(model, "registry_name", type(model).__name__)
    task = model_task(name)
    model = copy.deepcopy(model).float().eval().cpu()
    score_thresh = None
    if task == "detection":
        score_thresh, model.roi_heads.score_thresh = float(model.roi_heads.score_thresh), 0.0
        wrapper, inputs, outputs = _OneImageDetector(model), ("image",), ("boxes", "labels", "scores")
        example: tuple = (torch.rand(3, image_size, image_size),)
        dynamic = None
    else:
        hybrid = getattr(model, "clinical_features", None) is not None
        wrapper, outputs = _Probability(model, hybrid), ("probability",)
        rows = batch or 2
        example = (torch.rand(rows, 3, image_size, image_size),)
        inputs = ("images",)
        if hybrid:
            example += (torch.zeros(rows, model.clinical_features),)
            inputs += ("clinical",)
        dynamic = None if batch else {key: {0: "batch"} for key in inputs + outputs}
    buffer = io.BytesIO()
    kwargs = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's warnings about Python values in torchvision's code
        torch.onnx.export(
            wrapper,
            example,
            buffer,
            opset_version=OPSET,
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=dynamic,
            **kwargs,
        )
    fields = {"registry_name": name, "task": task, "image_size": image_size, "batch": batch or "dynamic"}
    if score_thresh is not None:
        fields["score_thresh"] = score_thresh
    data = with_metadata(buffer.getvalue(), fields | (metadata or {}))
    dynamic_batch = task == "classification" and not batch
    return OnnxModel(data, name, task, image_size, inputs, outputs, dynamic_batch, score_thresh)


def with_metadata(data: bytes, fields: dict) -> bytes:
    """The ONNX bytes with ``harness.*`` metadata properties (readable by any ONNX tool)."""
    onnx = _onnx()

    proto = onnx.load_from_string(data)
    for key, value in fields.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = f"harness.{key}", json.dumps(value) if not isinstance(value, str) else value
    return proto.SerializeToString()


def read_metadata(data: bytes) -> dict[str, str]:
    """The ``harness.*`` metadata properties of exported ONNX bytes."""
    proto = _onnx().load_from_string(data)
    return {p.key.removeprefix("harness."): p.value for p in proto.metadata_props if p.key.startswith("harness.")}


def _onnx():
    """The ``onnx`` package, or `harness.engines.EngineMissing` naming the extra that installs it."""
    try:
        import onnx
    except ImportError as exc:
        raise EngineMissing(f"exporting to ONNX needs the 'onnx' package ({exc}): pip install -e '.[onnx]'") from exc
    return onnx
