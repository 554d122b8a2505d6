"""The weights a benchmark runs: seeded random ones (no training needed to time a model) or a trained checkpoint's.

Random detector weights score every box alike, so `spread_detector_scores` redraws their score layers; a trained
checkpoint (`checkpoint_model`) needs no such help and is what the equality check of reduced-precision detector paths
is meant for: a trained RPN separates nodes from background by a wide margin, a random one ranks near-ties.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from harness.models import create_model, model_task


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
    for part, layer in (
        (model.rpn.head.conv, model.rpn.head.cls_logits),
        (model.roi_heads.box_head, model.roi_heads.box_predictor.cls_score),
    ):
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


@dataclass(frozen=True)
class BenchWeights:
    """A model to benchmark and where its weights come from.

    Attributes:
        name: the registry name.
        model: the model (eval mode).
        source: ``"random"`` (seeded) or the checkpoint's path.
        sequence: the MRI sequence of the slices it should see (a checkpoint's ``data.sequence``).
        image_size: the side of those slices (a checkpoint's ``data.image_size``), None for the benchmark default.
    """

    name: str
    model: nn.Module
    source: str = "random"
    sequence: str = "T2WI"
    image_size: int | None = None


def checkpoint_model(path: Path | str, *, image_size: int | None = None) -> BenchWeights:
    """A trained model from an lnm-harness checkpoint (``runs/<name>/checkpoints/best.pt``), with the sequence and
    slice size it was trained on. ``image_size`` overrides both the slice size and a detector's input size
    (``min_size = max_size``); without it a detector keeps its own (the last of its ``min_size``).

    Raises:
        ValueError: the file is missing or not a checkpoint (the message names it).
    """
    from harness.train.checkpoint import model_from_checkpoint

    try:
        model, payload = model_from_checkpoint(path)
    except (KeyError, RuntimeError, TypeError) as exc:  # a checkpoint of another layout, or weights that do not fit
        raise ValueError(f"{path}: cannot rebuild its model ({type(exc).__name__}: {exc})") from exc
    data = (payload.get("config") or {}).get("data") or {}
    if image_size is not None and hasattr(model, "transform"):
        model.transform.min_size, model.transform.max_size = (image_size,), image_size
    return BenchWeights(
        name=payload["model_name"],
        model=model.eval(),
        source=str(path),
        sequence=data.get("sequence", "T2WI"),
        image_size=image_size or data.get("image_size"),
    )
