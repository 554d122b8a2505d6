"""Detector samples as in Lu 2018: whole axial slices (T2WI or DWI) with lymph-node boxes as torchvision targets.

Lu 2018 annotated metastatic nodes by their five locations; benign nodes are in the images but are not targets,
so by default the targets are the metastatic nodes labelled by location (1..5, 0 is background), or all labelled 1
with ``label_mode="single"``. ``targets="all"`` makes every node a target (node detection rather than metastasis
detection). Slices without target nodes are kept as negatives (``negatives=False`` drops them).

Each slice is resized to ``image_size`` x ``image_size`` (bilinear with antialiasing; boxes scaled with it) after a
z-score over the whole volume, so intensities are comparable slice to slice; the grey slice is repeated into three
channels for ImageNet-style backbones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import track
from torch.utils.data import Dataset

from .cache import ArrayCache
from .common import Pseudonyms, check_patients, volume_key
from .errors import DataError
from .index import DatasetIndex
from .manifest import NODE_LOCATIONS, Box
from .volumes import PlacedBox, load_sequence, place_boxes

DETECTOR_SEQUENCES = ("T2WI", "DWI")
TARGET_CHOICES = ("metastatic", "all")
LABEL_MODES = ("location", "single")


def class_names(label_mode: str) -> list[str]:
    """Class names by label index (index 0 is the background)."""
    return ["background", *NODE_LOCATIONS] if label_mode == "location" else ["background", "metastatic_node"]


def resize_volume(
    pixels: np.ndarray, image_size: int, pixel_spacing: tuple[float, float], spacing_mm: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Z-scored slices resized to ``image_size`` squared, and the box transform ``(sx, sy, ox, oy)``.

    Without ``spacing_mm`` the whole slice is stretched to the square. With it, the slice is resampled to
    ``spacing_mm`` per pixel in both directions, then centre-cropped or padded (with the volume minimum) to the
    square; a box ``x`` becomes ``x * sx + ox`` (and ``y * sy + oy``).
    """
    volume = torch.from_numpy(np.array(pixels, dtype=np.float32))  # a copy: cached arrays are read-only
    volume = (volume - volume.mean()) / max(float(volume.std()), 1e-6)
    rows, columns = volume.shape[1:]
    if spacing_mm is None:
        size = (image_size, image_size)
    else:
        row_mm, column_mm = (float(v) for v in pixel_spacing)
        size = (max(1, round(rows * row_mm / spacing_mm)), max(1, round(columns * column_mm / spacing_mm)))
    resized = F.interpolate(volume[:, None], size=size, mode="bilinear", antialias=True)[:, 0]
    sy, sx = size[0] / rows, size[1] / columns
    # Centre crop (negative offset) or pad (positive offset), per axis.
    oy, ox = (image_size - size[0]) // 2, (image_size - size[1]) // 2
    canvas = torch.full((volume.shape[0], image_size, image_size), float(volume.min()))
    part = resized[:, max(0, -oy) : max(0, -oy) + image_size, max(0, -ox) : max(0, -ox) + image_size]
    canvas[:, max(0, oy) : max(0, oy) + part.shape[1], max(0, ox) : max(0, ox) + part.shape[2]] = part
    return canvas.numpy(), np.array([sx, sy, ox, oy], dtype=np.float64)


class NodeSliceDataset(Dataset):
    """Lu 2018 detector samples of the given patients (see the module docstring).

    Items are dicts: ``image`` float32 (3, S, S); ``target`` ``{"boxes": float32 (N, 4) XYXY, "labels": int64 (N,)}``;
    ``patient`` (pseudonym); ``lnm``; ``center``; ``slice_position`` (mm).

    Args:
        index: the dataset index, without error-level problems.
        patients: patient ids (from a `Split`).
        sequence: T2WI or DWI (the high-b image).
        image_size: output side in pixels.
        spacing_mm: in-plane pixel size of the output (mm); slices are resampled to it and centre-cropped or padded
            to ``image_size``, so a node has the same size in pixels whatever the centre's field of view. None
            stretches each slice to ``image_size`` (pixel size then follows the field of view and matrix).
        targets: ``metastatic`` (Lu 2018) or ``all`` nodes.
        label_mode: ``location`` (five classes) or ``single`` (one class).
        negatives: keep slices without targets.
        transform: an augmentation (`create_augmentation(..., task="detection")`), applied per item.
        cache_root: the cache folder.
        progress: show a progress bar while building.
    """

    def __init__(
        self,
        index: DatasetIndex,
        patients: Sequence[str],
        *,
        sequence: str = "T2WI",
        image_size: int = 256,
        spacing_mm: float | None = None,
        targets: str = "metastatic",
        label_mode: str = "location",
        negatives: bool = True,
        transform: Callable[[dict], dict] | None = None,
        cache_root: Path | None = None,
        progress: bool = False,
    ):
        for name, value, allowed in (
            ("sequence", sequence, DETECTOR_SEQUENCES),
            ("targets", targets, TARGET_CHOICES),
            ("label_mode", label_mode, LABEL_MODES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if spacing_mm is not None and not spacing_mm > 0:
            raise ValueError(f"spacing_mm must be positive, got {spacing_mm!r}")
        index.raise_for_errors()
        self.sequence, self.image_size, self.transform = sequence, image_size, transform
        self.spacing_mm = None if spacing_mm is None else float(spacing_mm)
        self.targets, self.label_mode = targets, label_mode
        self.classes = class_names(label_mode)
        self.patients = check_patients(index, patients)
        pseudonym = Pseudonyms(index.root)
        cache = ArrayCache("lu2018-slices", cache_root)
        volume_cache = ArrayCache("volumes", cache_root)
        self._arrays: list[np.ndarray] = []
        self._positions: list[np.ndarray] = []
        self._items: list[tuple[int, int, np.ndarray, np.ndarray]] = []
        self._meta: list[dict] = []
        for patient_id in track(self.patients, description=f"Lu slices ({sequence})", disable=not progress):
            try:
                arrays, placed = self._patient_slices(index, patient_id, cache, volume_cache)
            except DataError as error:
                index.exclude_or_raise(patient_id, error)
                continue
            record = index.patients[patient_id]
            sx, sy, ox, oy = (float(v) for v in arrays["box_transform"])
            scale = np.array([sx, sy] * 2, dtype=np.float32), np.array([ox, oy] * 2, dtype=np.float32)
            slot = len(self._arrays)
            self._arrays.append(arrays["slices"])
            self._positions.append(arrays["positions"])
            self._meta.append({"patient": pseudonym(patient_id), "lnm": record.lnm, "center": record.center})
            for k in range(arrays["slices"].shape[0]):
                xyxy, labels = self._target([p.box for p in placed if p.slice_index == k], scale)
                if len(labels) or negatives:
                    self._items.append((slot, k, xyxy, labels))
        if not self._items:
            raise DataError(str(index.root), f"no samples: none of {len(self.patients)} patient(s) gave one")

    def _patient_slices(
        self, index: DatasetIndex, patient_id: str, cache: ArrayCache, volume_cache: ArrayCache
    ) -> tuple[dict[str, np.ndarray], list[PlacedBox]]:
        """One patient's resized slices (cached) and its target boxes placed on them."""
        boxes = index.boxes_of(patient_id, self.sequence, "node")
        boxes = [b for b in boxes if self.targets == "all" or b.metastatic]
        params = {"image_size": self.image_size, "spacing_mm": self.spacing_mm}
        key = {"volume": volume_key(index, patient_id, self.sequence), "params": params}

        def build():
            volume = load_sequence(index, patient_id, self.sequence, volume_cache)
            slices, box_transform = resize_volume(volume.pixels, self.image_size, volume.pixel_spacing, self.spacing_mm)
            arrays = {
                "slices": slices,
                "box_transform": box_transform,
                "positions": np.asarray(volume.positions, dtype=np.float64),
                "grid": np.array(volume.pixels.shape[1:]),
                "spacing": np.array([volume.slice_spacing]),
            }
            return arrays, {}

        arrays, _ = cache.get_or_build(key, build)
        # Boxes are placed on every build of the dataset (cheap), so an annotation edit needs no cache rebuild.
        where = f"{self.sequence} of patient {patient_id!r}"
        grid = tuple(int(v) for v in arrays["grid"])
        return arrays, place_boxes(arrays["positions"], float(arrays["spacing"][0]), grid, boxes, where)

    def _target(self, boxes: list[Box], transform: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        scale, offset = transform
        xyxy = np.array([b.xyxy for b in boxes], dtype=np.float32).reshape(-1, 4) * scale + offset
        # A centre crop can cut a box: clip it to the image, and drop it when nothing of it is left.
        xyxy = np.clip(xyxy, 0, self.image_size)
        keep = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
        boxes, xyxy = [b for b, k in zip(boxes, keep, strict=True) if k], xyxy[keep]
        if self.label_mode == "location":
            labels = [NODE_LOCATIONS.index(b.location) + 1 for b in boxes]
        else:
            labels = [1] * len(boxes)
        return xyxy, np.array(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> dict:
        slot, k, xyxy, labels = self._items[i]
        image = torch.from_numpy(np.array(self._arrays[slot][k], dtype=np.float32))
        sample = {
            "image": image.expand(3, -1, -1).contiguous(),
            "target": {"boxes": torch.from_numpy(xyxy.copy()), "labels": torch.from_numpy(labels.copy())},
            **self._meta[slot],
            "slice_position": float(self._positions[slot][k]),
        }
        return self.transform(sample) if self.transform else sample

    @property
    def positive_items(self) -> int:
        """How many items carry at least one target box."""
        return sum(1 for item in self._items if len(item[3]))


def collate_detection(batch: list[dict]) -> tuple[list[torch.Tensor], list[dict], list[dict]]:
    """torchvision detection style: (images, targets, the remaining fields per item)."""
    images = [item["image"] for item in batch]
    targets = [item["target"] for item in batch]
    rest = [{k: v for k, v in item.items() if k not in {"image", "target"}} for item in batch]
    return images, targets, rest
