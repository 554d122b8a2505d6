"""Equality checks: a fast inference path's outputs against fp32 eager outputs on the same images.

Classifier probabilities must agree within `PROBABILITY_TOLERANCE` (absolute). Detector detections above
`SCORE_THRESHOLD` must match one to one (same label, IoU >= `MIN_IOU`, score within the same tolerance); detections
within `SCORE_MARGIN` of the threshold may fall on either side of it in reduced precision and need no match.
A fast path's time counts only when its check passes (`harness.bench.run`, `benchmarks/`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torchvision.ops import box_iou

# Stated tolerances of the equality check (absolute, on probabilities / scores in [0, 1]).
PROBABILITY_TOLERANCE = {"fp32": 1e-4, "bf16": 0.03, "fp16": 0.01}
SCORE_THRESHOLD = 0.5
SCORE_MARGIN = 0.05
MIN_IOU = 0.9


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
