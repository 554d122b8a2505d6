"""Running a trained checkpoint on studies: the detector on every slice, the classifier on the tumour ROI.

Preprocessing is the training's own (`resize_volume` for the detector, `crop_three_slices` around the tumour boxes
for the classifier), with the checkpoint's config. Detector boxes come back in the series' pixel grid (the inverse
of the resize) and in patient coordinates (LPS, mm); a patient's detector score is its highest detection score (the
image-level score of docs/metrics.md, maximised over slices), a classifier's the mean of its slice probabilities
(Wu 2020). A fast inference path (``--path``) is used only after it passed the project's equality check against
eager fp32 on this model and the first study's own images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from harness.datasets.classification import crop_three_slices, merged_boxes, roi_with_margin
from harness.datasets.detection import class_names, resize_volume
from harness.datasets.errors import DataError
from harness.datasets.label_maps import series_affine
from harness.datasets.manifest import Box
from harness.datasets.series import Volume
from harness.datasets.volumes import place_boxes
from harness.equality import EqualityReport
from harness.inference import InferenceOptions
from harness.predictors import make_predictor, verify_fast_path


@dataclass
class Detection:
    """One detected box on one slice of the series."""

    slice_index: int
    slice_position_mm: float
    box_px: list[float]  # x_min, y_min, x_max, y_max in the series' pixel grid (half-open, x = column)
    centre_mm: list[float]  # the box centre in patient coordinates (LPS, mm)
    score: float
    label: int
    class_name: str


@dataclass
class PatientPrediction:
    patient_id: str
    sequence: str
    series_uid: str
    series_description: str
    task: str
    score: float  # detector: highest detection score; classifier: mean slice probability
    detections: list[Detection] = field(default_factory=list)
    slice_probabilities: dict[str, float] = field(default_factory=dict)  # classifier: slice position -> p

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def voxel_to_patient(volume: Volume, k: int, row: float, column: float) -> np.ndarray:
    """Patient coordinates (LPS, mm) of a point at pixel-index coordinates (row, column) on slice k (centres at
    integer indices, as ImagePositionPatient is the centre of the first pixel)."""
    return (
        np.asarray(volume.origin)
        + k * volume.slice_spacing * np.asarray(volume.normal)
        + row * volume.pixel_spacing[0] * np.asarray(volume.col_dir)
        + column * volume.pixel_spacing[1] * np.asarray(volume.row_dir)
    )


def roi_boxes(volume: Volume, corners_mm: list[float], patient_id: str, sequence: str) -> list[Box]:
    """Tumour boxes from a box in patient coordinates (``--roi X0,Y0,Z0,X1,Y1,Z1``, LPS mm, two opposite corners):
    on every slice whose centre plane the box spans, the pixels whose centres lie inside it (for an oblique series,
    the box's bounding box in the series' grid).

    Raises:
        DataError: the box misses the series.
    """
    low, high = np.minimum(corners_mm[:3], corners_mm[3:]), np.maximum(corners_mm[:3], corners_mm[3:])
    corners = np.array(
        [[x, y, z, 1.0] for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])]
    )
    index = (corners @ np.linalg.inv(series_affine(volume)).T)[:, :3]  # (slice, row, column)
    first, last = np.ceil(index.min(axis=0) - 1e-6), np.floor(index.max(axis=0) + 1e-6)
    shape = np.array(volume.pixels.shape)
    first, last = np.maximum(first, 0).astype(int), np.minimum(last, shape - 1).astype(int)
    if (last < first).any():
        raise DataError(f"--roi {corners_mm}", f"misses the {sequence} series of patient {patient_id!r}")
    xyxy = (float(first[2]), float(first[1]), float(last[2] + 1), float(last[1] + 1))
    return [
        Box(patient_id, sequence, float(volume.positions[k]), "tumour", None, None, xyxy, 0)
        for k in range(first[0], last[0] + 1)
    ]


class Runner:
    """A checkpoint's model on one inference path, with the preprocessing of its training config."""

    def __init__(self, model: torch.nn.Module, config: dict, options: InferenceOptions, batch_size: int):
        self.model, self.config, self.options, self.batch_size = model, config, options, batch_size
        self.task = config["task"]
        data = config["data"]
        size = int(data["image_size"] if self.task == "detection" else data["crop_size"])  # what the model sees
        self.predictor = make_predictor(model, options, image_size=size)
        self.verified: EqualityReport | None = None

    def _check_path(self, images: torch.Tensor, clinical: torch.Tensor | None = None) -> None:
        """Refuse a fast path whose outputs differ from eager fp32's on these images (once, on the first study)."""
        if self.verified is not None or self.options.is_eager_fp32:
            return
        self.verified = verify_fast_path(self.model, self.options, images, clinical, fast=self.predictor)
        if not self.verified.ok:
            raise ValueError(
                f"--path {self.options.label}: its outputs differ from eager fp32 on this model and study "
                f"({self.verified.detail}); run with the default path, or another one"
            )

    def detect(self, volume: Volume, progress: Callable[[int], None] | None = None) -> list[Detection]:
        data = self.config["data"]
        slices, (sx, sy, ox, oy) = resize_volume(
            volume.pixels, int(data["image_size"]), volume.pixel_spacing, data.get("spacing_mm")
        )
        images = torch.from_numpy(slices)[:, None].expand(-1, 3, -1, -1).contiguous()
        names = class_names(data.get("label_mode", "location"))
        rows, columns = volume.pixels.shape[1:]
        found = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size]
            self._check_path(batch)
            for offset, output in enumerate(self.predictor(self.predictor.prepare(batch))):
                k = start + offset
                for box, score, label in zip(output["boxes"], output["scores"], output["labels"], strict=True):
                    x0, y0, x1, y1 = (float(v) for v in box)
                    # Back through the resize (the inverse of NodeSliceDataset's box transform), inside the image.
                    scaled = (np.array([x0, y0, x1, y1]) - [ox, oy, ox, oy]) / [sx, sy, sx, sy]
                    px = np.clip(scaled, 0.0, [columns, rows, columns, rows]).tolist()
                    centre = voxel_to_patient(volume, k, (px[1] + px[3]) / 2 - 0.5, (px[0] + px[2]) / 2 - 0.5)
                    found.append(
                        Detection(
                            k,
                            float(volume.positions[k]),
                            [round(v, 2) for v in px],
                            [round(float(v), 3) for v in centre],
                            float(score),
                            int(label),
                            names[int(label)] if int(label) < len(names) else str(int(label)),
                        )
                    )
            if progress is not None:
                progress(len(batch))
        return found

    def classify(self, volume: Volume, tumour_boxes: list, clinical: float | None, where: str) -> dict[str, float]:
        """Slice position (mm, 3 decimals) -> probability of every slice with a tumour box (Wu 2020's samples)."""
        if not tumour_boxes:
            raise DataError(where, "no tumour box on this sequence: the classifier reads the tumour ROI")
        data = self.config["data"]
        placed = place_boxes(volume.positions, volume.slice_spacing, volume.pixels.shape[1:], tumour_boxes, where)
        per_slice = merged_boxes(placed)
        ks = sorted(per_slice)
        margin, size = float(data["margin_mm"]), int(data["crop_size"])
        images = torch.from_numpy(
            np.stack(
                [
                    crop_three_slices(volume, k, roi_with_margin(per_slice[k], volume.pixel_spacing, margin), size)
                    for k in ks
                ]
            )
        )
        extra = None
        if self.predictor.hybrid:
            if clinical is None:
                raise DataError(where, "the hybrid model needs mr_ln_status in manifest.csv")
            extra = torch.full((len(ks), self.predictor.model.clinical_features), float(clinical))
        self._check_path(images, extra)
        probabilities = self.predictor(self.predictor.prepare(images), extra)
        return {f"{volume.positions[k]:.3f}": float(p) for k, p in zip(ks, probabilities, strict=True)}
