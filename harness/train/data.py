"""From a trial's ``data`` section to datasets: the dataset folder (generated first for a synthetic spec), the
index, the patient split, and the Wu or Lu samples of each split."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from harness.config import DataConfig, SynthSpec, TrialConfig
from harness.datasets.augment import create_augmentation
from harness.datasets.classification import TumourSliceDataset
from harness.datasets.detection import NodeSliceDataset
from harness.datasets.index import DatasetIndex, index_dataset
from harness.datasets.splits import Split, split_by_center, split_stratified

log = logging.getLogger(__name__)


def synth_folder(spec: SynthSpec) -> Path:
    """Where a synthetic spec's cohort lives (``spec.out`` or a name made of its parameters)."""
    from harness.datasets.synthetic import DEFAULT_SIGNAL

    signal = DEFAULT_SIGNAL if spec.signal is None else spec.signal
    name = f"synth-{spec.patients}p-{spec.centers}c-seed{spec.seed}-signal{signal:g}"
    return (spec.out or Path("data") / name).resolve()


def ensure_dataset(data: DataConfig) -> Path:
    """The dataset folder: ``data.root``, or the synthetic cohort, generated when it is not there yet."""
    if data.root is not None:
        return Path(data.root).resolve()
    from harness.datasets.synthetic import DEFAULT_SIGNAL, generate_cohort

    spec = data.synth
    folder = synth_folder(spec)
    if not (folder / "manifest.csv").is_file():
        log.warning("generating the synthetic cohort %s (once)", folder)
        signal = DEFAULT_SIGNAL if spec.signal is None else spec.signal
        folder.parent.mkdir(parents=True, exist_ok=True)
        generate_cohort(folder, patients=spec.patients, centers=spec.centers, seed=spec.seed, signal=signal)
    return folder


def make_split(index: DatasetIndex, data: DataConfig) -> Split:
    """The patient split the config asks for, over the usable patients."""
    patients = [index.patients[p] for p in index.usable_patients()]
    spec = data.split
    if spec.by == "center":
        return split_by_center(patients, spec.val_centers, spec.test_centers)
    return split_stratified(patients, val_fraction=spec.val_fraction, test_fraction=spec.test_fraction, seed=spec.seed)


@dataclass
class TrialData:
    """The datasets of one run: train (augmented), train without augmentation (to choose thresholds), val, test."""

    root: Path
    index: DatasetIndex
    split: Split
    train: Dataset
    train_eval: Dataset
    val: Dataset
    test: Dataset | None


def build_data(config: TrialConfig, root: Path | None = None, progress: bool = False) -> TrialData:
    """Index the dataset, split it by patient and build the task's datasets for every split."""
    data = config.data
    root = root or ensure_dataset(data)
    required = [data.sequence] if data.sequence != "ADC" else ["ADC"]
    index = index_dataset(root, required=required, on_error=data.on_error, progress=progress)
    index.raise_for_errors()
    split = make_split(index, data)

    if config.task == "classification":

        def make(patients, transform=None):
            return TumourSliceDataset(
                index,
                patients,
                sequence=data.sequence,
                size=data.crop_size,
                margin_mm=data.margin_mm,
                transform=transform,
                progress=progress,
            )
    else:

        def make(patients, transform=None, negatives=True):
            return NodeSliceDataset(
                index,
                patients,
                sequence=data.sequence,
                image_size=data.image_size,
                targets=data.targets,
                label_mode=data.label_mode,
                negatives=negatives,
                transform=transform,
                progress=progress,
                spacing_mm=data.spacing_mm,
            )

    augment = create_augmentation(data.augment, config.task)
    # Only the training set may drop slices without targets (Lu trained on annotated slices); evaluation keeps
    # every slice, because FROC counts false positives per patient and image AUC needs negative slices.
    train_kwargs = {"negatives": data.negatives} if config.task == "detection" else {}
    return TrialData(
        root=root,
        index=index,
        split=split,
        train=make(split.train, augment, **train_kwargs),
        train_eval=make(split.train),
        val=make(split.val),
        test=make(split.test) if split.test else None,
    )
