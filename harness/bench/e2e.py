"""End to end for one study: DICOM read (or the preprocessed cache) -> preprocessing -> model -> post-processing.

What `end_to_end_case` times is what a reading station would do with a new study: parse every file of the T2WI
series once (pydicom: headers and pixels; serially, or in a `torch.utils.data.DataLoader`'s worker processes, a
chunk of files each), build the volume through the data layer's validation (`load_series`, in the main process),
preprocess it as the training datasets do (detector: on the predictor's device, volume z-score, bilinear resize with
antialiasing to the model's size, three channels; classifier: Wu 2020's three-slice 64x64 crops around the tumour
boxes, on the host), run the model in batches of slices, and reduce the outputs (detector: boxes above a score
threshold per slice, as numpy; classifier: the patient's DL score, the mean slice probability).

On CUDA the detector's volume is assembled in page-locked memory, so that its one copy to the GPU is asynchronous.
With a cache (`end_to_end_case(..., cache=ArrayCache("e2e-volumes"))`) a study read before comes back memory-mapped
from the preprocessed cache, without parsing any DICOM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from harness.datasets.cache import ArrayCache
from harness.datasets.dicom_io import SliceHeader, frames_of, read_dicom, read_pixels
from harness.datasets.errors import DataError
from harness.datasets.series import Volume, load_series
from harness.datasets.volumes import cached_volume
from harness.inference import Predictor

Frames = list[tuple[SliceHeader, np.ndarray]]  # each frame's header and its pixels, float32 after rescale


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


def read_frames(files: Sequence[Path]) -> Frames:
    """Parse each file once: the header of every frame and its pixels, float32 after rescale.

    Raises:
        DicomFileError: naming the file that cannot be read, placed in space or decoded.
    """
    frames = []
    for path in map(Path, files):
        ds = read_dicom(path)
        # float32 here, as load_series stores it: half the bytes to send from a worker, and the same rounding.
        frames.extend((header, read_pixels(header, ds).astype(np.float32)) for header in frames_of(ds, path))
    return frames


class _FileChunks(Dataset):
    """Item i: the i-th chunk of files parsed (`read_frames`), packed for the trip to the main process (`_unpack`),
    or the data layer's error that parsing it raised."""

    def __init__(self, chunks: Sequence[Sequence[Path]]):
        self.chunks = chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, index: int) -> tuple[list[SliceHeader], torch.Tensor] | DataError:
        try:
            frames = read_frames(self.chunks[index])
        except DataError as error:
            # Raised here, DataLoader would re-raise it in the main process as a RuntimeError holding the traceback
            # text; returned, it arrives with its type, file and message, and the reader raises it.
            return error
        # One tensor per chunk reaches the main process through one shared-memory segment; numpy arrays would be
        # pickled through a pipe (slower than parsing them), and a tensor per frame would hold a file descriptor
        # open per frame (a long DWI series would exhaust them).
        return [header for header, _ in frames], torch.from_numpy(np.concatenate([f.ravel() for _, f in frames]))


def _unpack(headers: list[SliceHeader], packed: torch.Tensor) -> Frames:
    """The frames of one chunk from `_FileChunks`: views of ``packed``, each ``rows x columns`` as its header says."""
    flat, start, frames = packed.numpy(), 0, []
    for header in headers:
        end = start + header.rows * header.columns
        frames.append((header, flat[start:end].reshape(header.rows, header.columns)))
        start = end
    return frames


def _keep_as_is(item: object) -> object:
    """DataLoader's collate_fn: keep the worker's item as it is (headers stay headers)."""
    return item


def _split(files: Sequence[Path], parts: int) -> list[tuple[Path, ...]]:
    """``files`` in at most ``parts`` contiguous chunks of nearly equal length, in order."""
    bounds = np.linspace(0, len(files), min(parts, len(files)) + 1).round().astype(int)
    return [tuple(files[start:end]) for start, end in zip(bounds[:-1], bounds[1:], strict=True)]


def read_frames_parallel(files: Sequence[Path], workers: int) -> Frames:
    """`read_frames` of ``files`` split into one chunk per worker process, by a ``DataLoader``; same order.

    Raises:
        DicomFileError: naming the first file, in order, that cannot be read.
    """
    chunks = _split(files, workers)
    # No pin_memory here: load_series copies these frames into the volume, so pinning them would only add a copy;
    # read_volume pins the volume itself, which is what is copied to the GPU.
    loader = DataLoader(_FileChunks(chunks), batch_size=None, num_workers=len(chunks), collate_fn=_keep_as_is)
    frames: Frames = []
    for chunk in loader:
        if isinstance(chunk, DataError):
            raise chunk
        frames.extend(_unpack(*chunk))
    return frames


def _page_locked_empty(shape: tuple[int, int, int]) -> np.ndarray:
    """An uninitialised float32 array in page-locked (pinned) memory, from torch's caching host allocator."""
    return torch.empty(shape, dtype=torch.float32, pin_memory=True).numpy()


def read_volume(
    files: Sequence[Path], *, workers: int = 0, pin_memory: bool = False, cache: ArrayCache | None = None
) -> Volume:
    """Parse the files, each once, into the series' volume (the highest b-value for DWI).

    Args:
        files: the series' files.
        workers: DataLoader worker processes parsing the files (0: in this process).
        pin_memory: assemble the volume in page-locked memory (needs CUDA), for an asynchronous copy to the GPU.
        cache: the preprocessed cache: a study read before comes back from it memory-mapped, with no DICOM parsing
            (`cached_volume`; keyed by the files' paths, sizes and mtimes). None parses every time.

    Raises:
        DicomFileError, SeriesError: the data layer's errors, naming the file (`read_dicom`, `load_series`).
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if cache is not None:
        volume = cached_volume(files, lambda: read_volume(files, workers=workers), cache)
        if pin_memory:  # the cache hands out read-only memory maps: copy into page-locked memory for the GPU
            pinned = _page_locked_empty(volume.pixels.shape)
            pinned[...] = volume.pixels
            volume = replace(volume, pixels=pinned)
        return volume
    frames = read_frames_parallel(files, workers) if workers else read_frames(files)
    headers = [header for header, _ in frames]
    pixels = {(header.path, header.frame): frame for header, frame in frames}
    volumes = load_series(headers, pixels, empty=_page_locked_empty) if pin_memory else load_series(headers, pixels)
    return volumes[max(volumes, key=lambda b: -1.0 if b is None else b)]


def detector_inputs(pixels: np.ndarray, image_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Volume z-score, resize to ``image_size`` squared, grey to three channels: (slices, 3, S, S) on ``device``.

    The volume crosses to ``device`` once, as float32 (asynchronously when ``pixels`` is page-locked), and every
    per-slice step runs there.
    """
    pixels = np.asarray(pixels, dtype=np.float32)
    if not pixels.flags.writeable:  # memory-mapped from the cache: torch wants memory it may write
        pixels = np.array(pixels)
    volume = torch.from_numpy(pixels).to(device, non_blocking=True)
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
    predictor: Predictor,
    study: Study,
    *,
    image_size: int,
    batch: int = 8,
    score_threshold: float = 0.5,
    workers: int = 0,
    cache: ArrayCache | None = None,
) -> float | list[dict[str, np.ndarray]]:
    """Run one study end to end (see the module docstring).

    Args:
        predictor: the model and its inference path (device included).
        study: the series' files (and, for a classifier, the tumour boxes).
        image_size: the detector's input side, pixels.
        batch: slices (or crops) per model call.
        score_threshold: detections kept from this score up.
        workers: DataLoader worker processes parsing the DICOM files (0: in this process); same result for any value.
        cache: read the volume from the preprocessed cache when the study was read before (`read_volume`).

    Returns:
        Classifier: the patient's DL score. Detector: per slice, ``{"boxes", "scores", "labels"}`` above
        ``score_threshold`` as numpy arrays.
    """
    detector_on_cuda = predictor.task == "detection" and predictor.device.type == "cuda"
    volume = read_volume(study.files, workers=workers, pin_memory=detector_on_cuda, cache=cache)
    if predictor.task == "classification":
        if not study.tumour_boxes:
            raise ValueError("a classifier needs the study's tumour boxes")
        images = classifier_inputs(volume, study.tumour_boxes)
        clinical = torch.zeros(images.shape[0], 1)
        starts = range(0, len(images), batch)
        probabilities = [predictor(images[i : i + batch], clinical[i : i + batch]) for i in starts]
        return float(torch.cat(probabilities).mean())
    # `volume` stays referenced until the detections are back on the host (a sync): its page-locked buffer
    # outlives the asynchronous copy that detector_inputs starts.
    images = detector_inputs(volume.pixels, image_size, predictor.device)
    detections = []
    for i in range(0, len(images), batch):
        for out in predictor(images[i : i + batch]):
            keep = out["scores"] >= score_threshold
            detections.append({key: value[keep].numpy() for key, value in out.items()})
    return detections
