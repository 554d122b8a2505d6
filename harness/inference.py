"""Inference with a registry model: fast paths as options, each checked against fp32 eager before it is trusted.

`InferenceOptions` names a path (device, dtype, channels_last, compile, batch); `Predictor` applies it to a model
from `harness.models` and runs it under ``torch.inference_mode``:

- classifiers (``wu2020``, ``wu2020_hybrid``): the whole forward under autocast (bf16 / fp16), channels_last weights
  and inputs, ``torch.compile`` of the whole model at a fixed input size; the output is the positive-class
  probability in float32.
- detectors (torchvision Faster R-CNN): only the dense parts run fast. The backbone, the RPN head's convolutions and
  the box head's fully connected layers run under autocast / channels_last (the backbone also compiled, at the
  fixed size set by the model's ``min_size`` / ``max_size``); their outputs are cast back to float32, so anchors,
  box decoding, NMS and RoIAlign stay eager fp32. Decoding boxes in bf16 would quantise coordinates to 1-2 px at
  256 px (8 mantissa bits), and whole torchvision detectors do not compile (data-dependent shapes, NMS).

`check_equal` compares a fast path's outputs with fp32 eager outputs on the same images: classifier probabilities
within `PROBABILITY_TOLERANCE` (absolute), detector detections above `SCORE_THRESHOLD` matched one to one (same
label, IoU >= `MIN_IOU`, score within the same tolerance), ignoring detections within `SCORE_MARGIN` of the
threshold, which may fall on either side of it in reduced precision.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn as nn
from torchvision.ops import box_iou

from harness.models import create_model, model_task

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
AMP_SCOPES = ("all", "box_head")
# Stated tolerances of the equality check (absolute, on probabilities / scores in [0, 1]).
PROBABILITY_TOLERANCE = {"fp32": 1e-4, "bf16": 0.03, "fp16": 0.01}
SCORE_THRESHOLD = 0.5
SCORE_MARGIN = 0.05
MIN_IOU = 0.9


@dataclass(frozen=True)
class InferenceOptions:
    """One inference path.

    Attributes:
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:1"``...).
        dtype: ``"fp32"``, ``"bf16"`` (autocast) or ``"fp16"`` (autocast, CUDA only).
        channels_last: convolution weights and inputs in NHWC memory format.
        compile: ``torch.compile`` the classifier, or the detector's backbone, at a fixed input size.
        batch: images per forward call.
        amp_scope: where a detector runs in ``dtype``: ``"all"`` (backbone, RPN head, box head) or ``"box_head"``
            (the box head's fully connected layers only: the backbone and RPN stay fp32, so the proposals are
            eager fp32's; the box head is most of a VGG16 detector's work). Classifiers ignore it.
    """

    device: str = "cpu"
    dtype: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    batch: int = 1
    amp_scope: str = "all"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {self.dtype!r}")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.dtype == "fp16" and self.device == "cpu":
            raise ValueError("fp16 autocast is a GPU path; on the CPU use bf16")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if self.amp_scope not in AMP_SCOPES:
            raise ValueError(f"amp_scope must be one of {AMP_SCOPES}, got {self.amp_scope!r}")

    @property
    def is_eager_fp32(self) -> bool:
        """True for the reference path (fp32, contiguous, not compiled), whatever the batch."""
        return self.dtype == "fp32" and not self.channels_last and not self.compile

    @property
    def label(self) -> str:
        """Short name of the path: ``eager-fp32``, ``bf16+channels_last+compile``, ``bf16@box_head``..."""
        scope = f"@{self.amp_scope}" if self.dtype != "fp32" and self.amp_scope != "all" else ""
        parts = [self.dtype + scope] + ["channels_last"] * self.channels_last + ["compile"] * self.compile
        return "eager-fp32" if self.is_eager_fp32 else "+".join(parts)

    def baseline(self) -> InferenceOptions:
        """The fp32 eager path on the same device and batch: what this path is checked and timed against."""
        return replace(self, dtype="fp32", channels_last=False, compile=False, amp_scope="all")


def parse_paths(text: str) -> InferenceOptions:
    """Options from a path label (``eager-fp32``, ``bf16``, ``bf16@box_head+compile``, ``fp32+channels_last``...)."""
    if text == "eager-fp32":
        return InferenceOptions()
    parts = text.split("+")
    dtype, _, scope = parts[0].partition("@")
    has_dtype = dtype in DTYPES
    flags = set(parts[1:] if has_dtype else parts)
    unknown = flags - {"channels_last", "compile"}
    if unknown:
        raise ValueError(
            f"unknown path part(s) {sorted(unknown)} in {text!r}: use DTYPE[@box_head][+channels_last][+compile]"
        )
    return InferenceOptions(dtype=dtype if has_dtype else "fp32", channels_last="channels_last" in flags,
                            compile="compile" in flags, amp_scope=scope or "all")  # fmt: skip


def _to_float32(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, dict):
        return type(value)((k, _to_float32(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float32(v) for v in value)
    return value


def _channels_last(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.dim() == 4:
        return value.contiguous(memory_format=torch.channels_last)
    if isinstance(value, (list, tuple)):
        return type(value)(_channels_last(v) for v in value)
    return value


class FastPart(nn.Module):
    """Runs ``module`` under autocast and / or with channels_last inputs and returns float32 outputs.

    Args:
        module: the part (a detector's backbone, RPN head or box head).
        device_type: ``"cpu"`` or ``"cuda"``.
        dtype: autocast dtype, or None for fp32.
        channels_last: convert 4-D inputs to channels_last.
        cast_weights: store the part's weights in ``dtype`` once and feed it ``dtype`` inputs instead of autocast.
            For big fully connected layers (VGG16's fc6 holds 103 M weights): autocast casts every weight again
            on every call, which costs more than the bf16 matrix product saves.
    """

    def __init__(
        self,
        module: nn.Module,
        device_type: str,
        dtype: torch.dtype | None,
        channels_last: bool,
        cast_weights: bool = False,
    ):
        super().__init__()
        self.cast_weights = cast_weights and dtype is not None
        if self.cast_weights:
            module = module.to(dtype)
        self.module, self.device_type, self.dtype, self.channels_last = module, device_type, dtype, channels_last

    def forward(self, *args: Any) -> Any:
        if self.channels_last:
            args = tuple(_channels_last(a) for a in args)
        if self.cast_weights:
            args = tuple(a.to(self.dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)
            return _to_float32(self.module(*args))
        with torch.autocast(self.device_type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            out = self.module(*args)
        return _to_float32(out)

    def __getattr__(self, name: str) -> Any:  # out_channels, body, fpn...: torchvision reads them on the backbone
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("module"), name)


class Predictor:
    """A registry model prepared for one inference path.

    Call it with a float32 image batch (B, 3, H, W) on the host (and, for ``wu2020_hybrid``, the clinical variables):
    classifiers return the positive-class probability (B,), detectors torchvision's list of ``{"boxes", "labels",
    "scores"}``, all float32 on the host (so a call includes the device-to-host copy and, on CUDA, its sync).

    Args:
        model: a model from ``create_model`` (its weights are copied, not changed).
        options: the path.
    """

    def __init__(self, model: nn.Module, options: InferenceOptions):
        self.options = options
        self.name = getattr(model, "registry_name", type(model).__name__)
        self.task = model_task(self.name) if hasattr(model, "registry_name") else _guess_task(model)
        self.device = torch.device(options.device)
        self.hybrid = self.task == "classification" and getattr(model, "clinical_features", None) is not None
        model = copy.deepcopy(model).eval().to(self.device)
        if options.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self._dtype = None if options.dtype == "fp32" else DTYPES[options.dtype]
        if self.task == "detection":
            self._prepare_detector()
            self._forward = self.model
        else:
            self._forward = torch.compile(self.model, dynamic=False) if options.compile else self.model

    def _prepare_detector(self) -> None:
        m, o, device_type = self.model, self.options, self.device.type
        dense = self._dtype if o.amp_scope == "all" else None  # dtype of the backbone and RPN head
        if dense is not None or o.channels_last or o.compile:
            m.backbone = FastPart(m.backbone, device_type, dense, o.channels_last)
            if o.compile:  # the backbone only, at the transform's fixed size: RPN / NMS / RoIAlign stay eager
                m.backbone = torch.compile(m.backbone, dynamic=False)
        if dense is not None:
            m.rpn.head = FastPart(m.rpn.head, device_type, dense, o.channels_last)
        if self._dtype is not None:
            m.roi_heads.box_head = FastPart(m.roi_heads.box_head, device_type, self._dtype, False, cast_weights=True)

    def synchronize(self) -> None:
        """Wait for the device (a no-op on the CPU): call before reading a clock."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, clinical: torch.Tensor | None = None) -> Any:
        images = images.to(self.device, non_blocking=True)
        if self.task == "detection":
            outputs = self._forward(list(images))
            return [{k: _to_float32(v).cpu() for k, v in out.items()} for out in outputs]
        if self.options.channels_last:
            images = _channels_last(images)
        with torch.autocast(self.device.type, dtype=self._dtype or torch.float32, enabled=self._dtype is not None):
            if self.hybrid:
                if clinical is None:
                    clinical = torch.zeros(images.shape[0], self.model.clinical_features)
                logits = self._forward(images, clinical.to(self.device, torch.float32))
            else:
                logits = self._forward(images)
        return logits.float().softmax(dim=1)[:, -1].cpu()


def _guess_task(model: nn.Module) -> str:
    return "detection" if hasattr(model, "roi_heads") else "classification"


def benchmark_model(name: str, *, image_size: int | None = None, seed: int = 0, **kwargs: Any) -> nn.Module:
    """A registry model with seeded random weights, ready to benchmark.

    Detectors get ``min_size = max_size = image_size`` (a fixed input size) when given. No trained weights are
    needed to time a model, but a random detector scores every box alike (about 1 / num_classes), so which boxes
    survive the top-k cut is decided by rounding and no comparison of detections means anything. Its classification
    layer is therefore redrawn (`spread_detector_scores`) so that scores spread over (0, 1) as a trained model's do.
    """
    torch.manual_seed(seed)
    if model_task(name) == "detection" and image_size is not None:
        kwargs = {"min_size": image_size, "max_size": image_size, **kwargs}
    return create_model(name, **kwargs).eval()


@torch.inference_mode()
def spread_detector_scores(model: nn.Module, images: torch.Tensor, logit_std: float = 3.0, seed: int = 0) -> None:
    """Redraw a detector's RPN objectness and class logits layers so that, on ``images``, their logits have
    standard deviation about ``logit_std`` (a random detector's are near 0: every box ties with every other).

    Args:
        model: a torchvision Faster R-CNN (changed in place).
        images: a few representative images (B, 3, H, W).
        logit_std: target spread of the class logits (3 gives well separated scores, few ties).
        seed: the draw.
    """
    generator = torch.Generator().manual_seed(seed)
    # The RPN's objectness first (its inputs do not depend on it), then the box classifier on the new proposals.
    for part, layer in ((model.rpn.head.conv, model.rpn.head.cls_logits),
                        (model.roi_heads.box_head, model.roi_heads.box_predictor.cls_score)):  # fmt: skip
        inputs: list[torch.Tensor] = []
        hook = part.register_forward_hook(lambda _m, _i, out, inputs=inputs: inputs.append(out))
        try:
            model.eval()(list(images))
        finally:
            hook.remove()
        if layer is model.rpn.head.cls_logits:  # conv over every level: weight (A, C, 1, 1) on (C,) feature vectors
            vectors = torch.cat([level.permute(0, 2, 3, 1).reshape(-1, level.shape[1]) for level in inputs])
        else:
            vectors = inputs[0].flatten(1)
        rms = vectors.norm(dim=1).pow(2).mean().sqrt().clamp_min(1e-12)
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * (logit_std / rms))
        layer.bias.zero_()


@dataclass
class EqualityReport:
    """Result of `check_equal`: ``ok``, a one-line ``detail``, and the numbers behind it."""

    ok: bool
    detail: str
    compared: int = 0
    max_diff: float = 0.0
    stats: dict[str, float] = field(default_factory=dict)


def check_classifier(reference: torch.Tensor, output: torch.Tensor, tolerance: float) -> EqualityReport:
    """Probabilities equal within ``tolerance`` (absolute), element by element."""
    if reference.shape != output.shape:
        return EqualityReport(False, f"shape {tuple(output.shape)} != reference {tuple(reference.shape)}")
    diff = float((reference.float() - output.float()).abs().max()) if reference.numel() else 0.0
    ok = diff <= tolerance
    detail = f"max |dp| {diff:.2e} {'<=' if ok else '>'} {tolerance:g} over {reference.numel()} probabilities"
    return EqualityReport(ok, detail, compared=reference.numel(), max_diff=diff)


def _confident(det: dict[str, torch.Tensor], threshold: float) -> torch.Tensor:
    return det["scores"] >= threshold


def check_detections(
    reference: Sequence[dict[str, torch.Tensor]],
    output: Sequence[dict[str, torch.Tensor]],
    *,
    score_tolerance: float,
    threshold: float = SCORE_THRESHOLD,
    margin: float = SCORE_MARGIN,
    min_iou: float = MIN_IOU,
) -> EqualityReport:
    """The same detections above ``threshold`` in both, matched one to one (same label, IoU >= ``min_iou``, scores
    within ``score_tolerance``). A detection scoring within ``margin`` of the threshold need not be matched."""
    if len(reference) != len(output):
        return EqualityReport(False, f"{len(output)} images of detections != reference {len(reference)}")
    compared, worst_iou, worst_score = 0, 1.0, 0.0
    for i, (ref, out) in enumerate(zip(reference, output, strict=True)):
        for a, b, side in ((ref, out, "reference"), (out, ref, "fast path")):
            must = torch.nonzero(_confident(a, threshold + margin)).flatten()
            candidates = torch.nonzero(_confident(b, threshold - margin)).flatten()
            iou = box_iou(a["boxes"][must], b["boxes"][candidates]) if len(candidates) else None
            used: set[int] = set()
            for row, det in enumerate(must.tolist()):
                best, best_iou = None, 0.0
                for col, other in enumerate(candidates.tolist()):
                    if col in used or b["labels"][other] != a["labels"][det]:
                        continue
                    value = float(iou[row, col])
                    if value > best_iou:
                        best, best_iou = col, value
                if best is None or best_iou < min_iou:
                    box = [round(v, 1) for v in a["boxes"][det].tolist()]
                    return EqualityReport(
                        False,
                        f"image {i}: {side} detection {box} label {int(a['labels'][det])} score "
                        f"{float(a['scores'][det]):.3f} has no match (best IoU {best_iou:.2f} < {min_iou})",
                    )
                used.add(best)
                score_diff = abs(float(a["scores"][det]) - float(b["scores"][candidates[best]]))
                if score_diff > score_tolerance:
                    return EqualityReport(
                        False, f"image {i}: matched scores differ by {score_diff:.3f} > {score_tolerance:g}"
                    )
                compared += side == "reference"
                worst_iou, worst_score = min(worst_iou, best_iou), max(worst_score, score_diff)
    if compared == 0:
        return EqualityReport(False, f"vacuous: no reference detection scores >= {threshold + margin:g}")
    detail = f"{compared} detections >= {threshold:g} matched (min IoU {worst_iou:.3f}, max |dscore| {worst_score:.3f})"
    return EqualityReport(True, detail, compared=compared, max_diff=worst_score, stats={"min_iou": worst_iou})


def check_equal(reference: Any, output: Any, task: str, dtype: str) -> EqualityReport:
    """`check_classifier` or `check_detections` with the tolerance stated for ``dtype``."""
    tolerance = PROBABILITY_TOLERANCE[dtype]
    if task == "classification":
        return check_classifier(reference, output, tolerance)
    return check_detections(reference, output, score_tolerance=max(tolerance, 1e-3))


def verify_fast_path(
    model: nn.Module, options: InferenceOptions, images: torch.Tensor, clinical: torch.Tensor | None = None
) -> EqualityReport:
    """Run ``model`` on ``images`` through the fp32 eager path and through ``options``; compare (`check_equal`)."""
    reference = Predictor(model, options.baseline())
    fast = Predictor(model, options)
    return check_equal(reference(images, clinical), fast(images, clinical), fast.task, options.dtype)
