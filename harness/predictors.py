"""The predictor for any inference path: a torch path (`harness.inference.Predictor`) or an engine
(`harness.engines.runtimes.EnginePredictor`), and the check that trusts a path only when it equals eager fp32."""

from __future__ import annotations

import torch
import torch.nn as nn

from harness.equality import EqualityReport, check_equal
from harness.inference import InferenceOptions, Predictor


def make_predictor(
    model: nn.Module,
    options: InferenceOptions,
    *,
    image_size: int | None = None,
):
    """A `Predictor` for a torch path, or an `harness.engines.runtimes.EnginePredictor` (called the same way) for an
    engine path; an engine's model is exported at ``image_size`` (detectors; classifiers take any batch)."""
    if options.engine == "torch":
        return Predictor(model, options)
    from harness.engines.runtimes import EnginePredictor

    return EnginePredictor(model, options, image_size=image_size)


def verify_fast_path(
    model: nn.Module,
    options: InferenceOptions,
    images: torch.Tensor,
    clinical: torch.Tensor | None = None,
    fast=None,
) -> EqualityReport:
    """Run ``model`` on ``images`` through the fp32 eager path and through ``options``; compare (`check_equal`).
    ``fast``: the predictor of ``options`` already in use (checked as is; default: a new one)."""
    reference = Predictor(model, options.baseline())
    fast = fast or make_predictor(model, options, image_size=int(images.shape[-1]))
    return check_equal(reference(images, clinical), fast(images, clinical), fast.task, options.dtype)
