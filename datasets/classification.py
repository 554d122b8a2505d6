"""Classifier samples as in Wu 2020: the tumour + peritumoural ROI, 64x64, z-scored, three adjacent slices.

eMethods 3: "All images (ROI_tumor+peri) were scaled to 64x64 voxel size and standardized by z-score normalization.
To consider three-dimensional tumor information, we combined every three adjacent slices of MR images as input."
How we read it:
- one sample per slice that carries a tumour ROI box (several boxes on one slice are merged into their union);
- ROI_tumor+peri = a square, centred on the tumour box, whose side is the box's longer side plus ``margin_mm`` on
  each side (square in millimetres, so the tumour is not distorted by resizing; the margin is not in the paper);
- channels = slices k-1, k, k+1 cropped with slice k's ROI (at the first and last slice the edge slice repeats);
- resampled to ``size`` x ``size`` by bilinear RoIAlign (torchvision.ops.roi_align with adaptive sampling, so
  downsampling averages); the ROI may reach past the image, where MRI background (0) is used;
- z-score over the three channels of the sample.
A patient's DL-score is the mean of its slice probabilities, so every sample carries its patient's pseudonym.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from rich.progress import track
from torch.utils.data import Dataset
from torchvision.ops import roi_align

from .cache import ArrayCache
from .common import Pseudonyms, boxes_key, check_patients, volume_key
from .errors import DataError
from .index import DatasetIndex
from .series import Volume
from .volumes import load_sequence, place_boxes

CLASSIFIER_SEQUENCES = ("T2WI", "CET1WI", "DWI", "ADC")


def roi_with_margin(xyxy: Sequence[float], pixel_spacing: tuple[float, float], margin_mm: float) -> list[float]:
    """The square (in mm) ROI_tumor+peri around a tumour box, in pixel XYXY (may extend past the image)."""
    x0, y0, x1, y1 = xyxy
    row_mm, col_mm = pixel_spacing
    side_mm = max((x1 - x0) * col_mm, (y1 - y0) * row_mm) + 2 * margin_mm
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half_x, half_y = side_mm / col_mm / 2, side_mm / row_mm / 2
    return [cx - half_x, cy - half_y, cx + half_x, cy + half_y]


def crop_three_slices(volume: Volume, k: int, roi: Sequence[float], size: int) -> np.ndarray:
    """Slices k-1, k, k+1 inside ``roi`` resampled to (3, size, size), z-scored."""
    last = volume.pixels.shape[0] - 1
    stack = np.stack([volume.pixels[min(max(i, 0), last)] for i in (k - 1, k, k + 1)]).astype(np.float32)
    rois = torch.tensor([[0.0, *roi]], dtype=torch.float32)
    # sampling_ratio=-1: ceil(ROI side / size) samples per output pixel and axis, so downsampling averages (no
    # aliasing) and a same-size crop samples exactly the pixel centres.
    crop = roi_align(torch.from_numpy(stack)[None], rois, output_size=size, sampling_ratio=-1, aligned=True)[0]
    crop = crop.numpy()
    return (crop - crop.mean()) / max(float(crop.std()), 1e-6)


def merged_boxes(placed) -> dict[int, list[float]]:
    """Slice index -> the union box of the tumour boxes placed on that slice (Wu 2020's ROI, one per slice)."""
    per_slice: dict[int, list[float]] = {}
    for item in placed:
        x0, y0, x1, y1 = item.box.xyxy
        if item.slice_index in per_slice:
            a = per_slice[item.slice_index]
            per_slice[item.slice_index] = [min(a[0], x0), min(a[1], y0), max(a[2], x1), max(a[3], y1)]
        else:
            per_slice[item.slice_index] = [x0, y0, x1, y1]
    return per_slice


class TumourSliceDataset(Dataset):
    """Wu 2020 classifier samples of the given patients (see the module docstring).

    Items are dicts: ``image`` float32 (3, size, size); ``label`` (lnm, 0/1); ``patient`` (pseudonym); ``center``;
    ``mr_ln_status`` (0/1, -1 when the manifest has none); ``slice_position`` (mm).

    Args:
        index: the dataset index (`index_dataset`), without error-level problems.
        patients: patient ids (from a `Split`).
        sequence: T2WI, CET1WI, DWI (high b) or ADC.
        size: output side in pixels (64 in the paper).
        margin_mm: peritumoural margin around the tumour box.
        transform: an augmentation (`create_augmentation(..., task="classification")`), applied per item.
        cache_root: the cache folder (default `default_cache_root`).
        progress: show a progress bar while building.
    """

    def __init__(
        self,
        index: DatasetIndex,
        patients: Sequence[str],
        *,
        sequence: str = "T2WI",
        size: int = 64,
        margin_mm: float = 5.0,
        transform: Callable[[dict], dict] | None = None,
        cache_root: Path | None = None,
        progress: bool = False,
    ):
        if sequence not in CLASSIFIER_SEQUENCES:
            raise ValueError(f"sequence must be one of {CLASSIFIER_SEQUENCES}, got {sequence!r}")
        index.raise_for_errors()
        self.sequence, self.size, self.margin_mm, self.transform = sequence, size, margin_mm, transform
        self.patients = check_patients(index, patients)
        pseudonym = Pseudonyms(index.root)
        cache = ArrayCache("wu2020-samples", cache_root)
        volume_cache = ArrayCache("volumes", cache_root)
        self._arrays: list[np.ndarray] = []
        self._positions: list[np.ndarray] = []
        self._items: list[tuple[int, int]] = []
        self._meta: list[dict] = []
        for patient_id in track(self.patients, description=f"Wu samples ({sequence})", disable=not progress):
            try:
                arrays = self._patient_samples(index, patient_id, cache, volume_cache)
            except DataError as error:
                index.exclude_or_raise(patient_id, error)
                continue
            record = index.patients[patient_id]
            self._items.extend((len(self._arrays), row) for row in range(arrays["images"].shape[0]))
            self._arrays.append(arrays["images"])
            self._positions.append(arrays["positions"])
            self._meta.append(
                {
                    "label": record.lnm,
                    "patient": pseudonym(patient_id),
                    "center": record.center,
                    "mr_ln_status": -1 if record.mr_ln_status is None else record.mr_ln_status,
                }
            )
        if not self._items:
            raise DataError(str(index.root), f"no samples: none of {len(self.patients)} patient(s) gave one")

    def _patient_samples(
        self, index: DatasetIndex, patient_id: str, cache: ArrayCache, volume_cache: ArrayCache
    ) -> dict[str, np.ndarray]:
        """One patient's samples (images, slice positions), built from its volume once and then cached."""
        boxes = index.boxes_of(patient_id, self.sequence, "tumour")
        if not boxes:
            raise DataError(f"patient {patient_id!r}", f"no tumour ROI box on {self.sequence} in annotations.csv")
        key = {
            "volume": volume_key(index, patient_id, self.sequence),
            "boxes": boxes_key(boxes),
            "params": {"size": self.size, "margin_mm": self.margin_mm},
        }

        def build():
            volume = load_sequence(index, patient_id, self.sequence, volume_cache)
            where = f"{self.sequence} of patient {patient_id!r}"
            grid = volume.pixels.shape[1:]
            per_slice = merged_boxes(place_boxes(volume.positions, volume.slice_spacing, grid, boxes, where))
            slices = sorted(per_slice)
            images = [
                crop_three_slices(
                    volume, k, roi_with_margin(per_slice[k], volume.pixel_spacing, self.margin_mm), self.size
                )
                for k in slices
            ]
            return {"images": np.stack(images), "positions": volume.positions[slices].astype(np.float64)}, {}

        return cache.get_or_build(key, build)[0]

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> dict:
        slot, row = self._items[i]
        sample = {
            "image": torch.from_numpy(np.array(self._arrays[slot][row], dtype=np.float32)),
            **self._meta[slot],
            "slice_position": float(self._positions[slot][row]),
        }
        return self.transform(sample) if self.transform else sample

    @property
    def labels(self) -> np.ndarray:
        """The label of every item (for class weights or samplers)."""
        return np.array([self._meta[slot]["label"] for slot, _ in self._items])
