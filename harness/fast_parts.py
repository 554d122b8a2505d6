"""The building blocks of the fast inference paths (`harness.inference`): the uint8 hand-over (`Uint8Images`),
a model part run in reduced precision / channels_last (`FastPart`), BatchNorm folding (`fold_batch_norms`) and CUDA
graph replay (`CudaGraphs`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm


@dataclass(frozen=True)
class Uint8Images:
    """An image batch quantised for a uint8 host-to-device copy: ``pixels`` (B, C, H, W) uint8 and, per image,
    the affine map back to float32, ``image = pixels * scale + offset`` (one quantisation step: (max - min) / 255
    of the image, so at most half a step is lost; the equality check decides whether that matters)."""

    pixels: torch.Tensor
    scale: torch.Tensor  # (B,) float32
    offset: torch.Tensor  # (B,) float32

    @classmethod
    def quantise(cls, images: torch.Tensor) -> Uint8Images:
        """Quantise a float batch (B, C, H, W), each image over its own min..max."""
        flat = images.flatten(1)
        low, high = flat.amin(dim=1), flat.amax(dim=1)
        scale = ((high - low) / 255.0).clamp_min(torch.finfo(torch.float32).tiny)
        steps = (images - low.view(-1, 1, 1, 1)) / scale.view(-1, 1, 1, 1)
        return cls(steps.round_().clamp_(0, 255).to(torch.uint8), scale.float(), low.float())

    def pin_memory(self) -> Uint8Images:
        """The same batch in page-locked host memory (CUDA only), so that a non-blocking copy is asynchronous."""
        return Uint8Images(self.pixels.pin_memory(), self.scale.pin_memory(), self.offset.pin_memory())

    def to_float(self, device: torch.device) -> torch.Tensor:
        """Copy the uint8 pixels to ``device`` and restore float32 there."""
        pixels = self.pixels.to(device, non_blocking=True)
        scale = self.scale.to(device, non_blocking=True).view(-1, 1, 1, 1)
        offset = self.offset.to(device, non_blocking=True).view(-1, 1, 1, 1)
        return torch.addcmul(offset, pixels.float(), scale)

    @property
    def shape(self) -> torch.Size:
        return self.pixels.shape


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


def fold_batch_norms(module: nn.Module) -> nn.Module:
    """``module`` with its BatchNorm layers folded into the convolutions before them
    (``torch.fx.experimental.optimization.fuse``, eval mode); the returned module computes the same function.

    A module that cannot be traced whole (control flow on its inputs, as the hybrid model's clinical branch) has its
    children folded one by one.

    Raises:
        ValueError: a BatchNorm is left (one that follows no convolution, torchvision's ``FrozenBatchNorm2d`` of
            pretrained detectors, or a pair split across an untraceable parent): the path would not be what it says.
    """
    # torch.fx folds torch.nn's BatchNorm only; others (FrozenBatchNorm2d) are traced through and stay unfolded.
    foreign = {type(m).__name__ for m in module.modules() if _is_batch_norm(m) and not isinstance(m, _BatchNorm)}
    folded = _fold(module)
    left = sorted(foreign | {type(m).__name__ for m in folded.modules() if _is_batch_norm(m)})
    if left:
        raise ValueError(
            f"fuse: BatchNorm layers ({', '.join(left)}) could not be folded into a convolution in "
            f"{type(module).__name__}; run this model without fuse"
        )
    return folded


def _is_batch_norm(module: nn.Module) -> bool:
    return "BatchNorm" in type(module).__name__


def _fold(module: nn.Module) -> nn.Module:
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(module.eval())
    except Exception:  # symbolic tracing fails in several ways (TraceError, RuntimeError, TypeError...)
        for name, child in module.named_children():
            setattr(module, name, _fold(child))
        return module


class CudaGraphs:
    """A classifier's forward replayed as CUDA graphs, one captured per input shape.

    Each call copies its inputs into the graph's static input tensors and replays the graph, which launches every
    kernel of the forward at once instead of one by one from Python: at batch 1 a small classifier spends more
    time in launches than in compute. The returned tensor is the graph's static output, overwritten by the next
    call (`Predictor` copies it to the host first).

    Args:
        forward: device tensors (images, clinical or None) to device probabilities; the same kernels every call.
        warmup: eager calls on a side stream before the capture (cuDNN picks its algorithms, allocations settle).
    """

    def __init__(self, forward, warmup: int = 3):
        self.forward, self.warmup = forward, warmup
        self.graphs: dict[tuple, tuple] = {}

    def __call__(self, images: torch.Tensor, clinical: torch.Tensor | None) -> torch.Tensor:
        key = (tuple(images.shape), images.stride(), None if clinical is None else tuple(clinical.shape))
        if key not in self.graphs:
            self.graphs[key] = self._capture(images, clinical)
        graph, static_images, static_clinical, static_out = self.graphs[key]
        static_images.copy_(images)
        if clinical is not None:
            static_clinical.copy_(clinical)
        graph.replay()
        return static_out

    def _capture(self, images: torch.Tensor, clinical: torch.Tensor | None) -> tuple:
        static_images = images.clone()
        static_clinical = None if clinical is None else clinical.clone()
        side = torch.cuda.Stream(images.device)
        side.wait_stream(torch.cuda.current_stream(images.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.forward(static_images, static_clinical)
        torch.cuda.current_stream(images.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.forward(static_images, static_clinical)
        return graph, static_images, static_clinical, static_out
