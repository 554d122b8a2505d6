"""End to end for one study: DICOM read -> preprocessing -> model -> post-processing, with no cache in between.

What `end_to_end_case` times is what a reading station would do with a new study: parse every file of the T2WI
series (pydicom, headers then pixels, through the data layer's validation), build the volume, preprocess it as the
training datasets do (detector: volume z-score, bilinear resize with antialiasing to the model's size, three
channels; classifier: Wu 2020's three-slice 64x64 crops around the tumour boxes), run the model in batches of
slices, and reduce the outputs (detector: boxes above a score threshold per slice, as numpy; classifier: the
patient's DL score, the mean slice probability).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .inference import Predictor


@dataclass(frozen=True)
class Study:
    """One study to run end to end: the series' files, and (classifier) the tumour boxes as (position_mm, xyxy)."""

    files: tuple[Path, ...]
    tumour_boxes: tuple[tuple[float, tuple[float, float, float, float]], ...] = ()


def find_study(root: Path, patient: int = 0, sequence: str = "T2WI") -> Study:
    """The ``sequence`` series of the ``patient``-th patient of a dataset (files and tumour boxes)."""
    from harness.datasets.index import index_dataset

    index = index_dataset(root)
    patient_id = index.usable_patients()[patient]
    series = index.series_of(patient_id, sequence)
    boxes = tuple((b.slice_position, b.xyxy) for b in index.boxes_of(patient_id, sequence, "tumour"))
    return Study(tuple(series.files), boxes)


def read_volume(files: Sequence[Path]):
    """Parse the files (headers, then pixels) into the series' volume (the highest b-value for DWI)."""
    from harness.datasets.dicom_io import frames_of, read_dicom
    from harness.datasets.series import load_series

    headers = [header for path in files for header in frames_of(read_dicom(path), path)]
    volumes = load_series(headers)
    return volumes[max(volumes, key=lambda b: -1.0 if b is None else b)]


def detector_inputs(pixels: np.ndarray, image_size: int) -> torch.Tensor:
    """Volume z-score, resize to ``image_size`` squared, grey to three channels: (slices, 3, S, S)."""
    volume = torch.from_numpy(np.asarray(pixels, dtype=np.float32))
    volume = (volume - volume.mean()) / volume.std().clamp_min(1e-6)
    resized = F.interpolate(volume[:, None], size=(image_size, image_size), mode="bilinear", antialias=True)
    return resized.expand(-1, 3, -1, -1).contiguous()


def classifier_inputs(volume, tumour_boxes, size: int = 64, margin_mm: float = 5.0) -> torch.Tensor:
    """Wu 2020 crops (three adjacent slices, 64x64, z-scored) around each tumour box: (boxes, 3, size, size)."""
    from harness.datasets.classification import crop_three_slices, roi_with_margin

    crops = []
    for position, xyxy in tumour_boxes:
        k = int(np.argmin(np.abs(volume.positions - position)))
        crops.append(crop_three_slices(volume, k, roi_with_margin(xyxy, volume.pixel_spacing, margin_mm), size))
    return torch.from_numpy(np.stack(crops))


def end_to_end_case(
    predictor: Predictor, study: Study, *, image_size: int, batch: int = 8, score_threshold: float = 0.5
) -> float | list[dict[str, np.ndarray]]:
    """Run one study end to end (see the module docstring).

    Returns:
        Classifier: the patient's DL score. Detector: per slice, ``{"boxes", "scores", "labels"}`` above
        ``score_threshold`` as numpy arrays.
    """
    volume = read_volume(study.files)
    if predictor.task == "classification":
        if not study.tumour_boxes:
            raise ValueError("a classifier needs the study's tumour boxes")
        images = classifier_inputs(volume, study.tumour_boxes)
        clinical = torch.zeros(images.shape[0], 1)
        starts = range(0, len(images), batch)
        probabilities = [predictor(images[i : i + batch], clinical[i : i + batch]) for i in starts]
        return float(torch.cat(probabilities).mean())
    images = detector_inputs(volume.pixels, image_size)
    detections = []
    for i in range(0, len(images), batch):
        for out in predictor(images[i : i + batch]):
            keep = out["scores"] >= score_threshold
            detections.append({key: value[keep].numpy() for key, value in out.items()})
    return detections
