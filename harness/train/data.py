"""From a trial's ``data`` section to datasets: the dataset folder (generated first for a synthetic spec), the
index, the patient split, and the Wu or Lu samples of each split."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock
from torch.utils.data import Dataset

from harness.config import DATA_PLACEHOLDER, ConfigError, DataConfig, SynthSpec, TrialConfig
from harness.datasets.augment import create_augmentation
from harness.datasets.classification import TumourSliceDataset
from harness.datasets.detection import NodeSliceDataset
from harness.datasets.index import DatasetIndex, index_dataset
from harness.datasets.splits import Split, split_by_center, split_cv, split_stratified

log = logging.getLogger(__name__)


def _real_path(path: Path | None, key: str) -> None:
    """A stored config (``config.yaml``, a checkpoint's) holds ``<data>`` in place of the dataset's path: say so."""
    if path is not None and str(path) == DATA_PLACEHOLDER:
        raise ConfigError(
            f"{key}: {DATA_PLACEHOLDER} stands for a dataset path left out of a stored config; give the dataset "
            f"(harness train ... --data ROOT, or --set {key}=ROOT)"
        )


def synth_folder(spec: SynthSpec) -> Path:
    """Where a synthetic spec's cohort lives: ``spec.out``, or a name made of its parameters that differs whenever
    the cohort does (``synth-60p-3c-seed0-signal2.5``, ``synth-48p-2c-seed0-planted-T2WI3-CET1WI0-ADC1.5``)."""
    from harness.datasets.synthetic import DEFAULT_SIGNAL
    from harness.datasets.synthetic.planted import canonical_planting, format_strength, planting_label

    _real_path(spec.out, "data.synth.out")
    stem = f"synth-{spec.patients}p-{spec.centers}c-seed{spec.seed}"
    if spec.signal_by_sequence is not None:
        # Canonical (all keys, DWI folded into ADC): equal plantings share a folder, different ones never do.
        name = f"{stem}-{planting_label(canonical_planting(spec.signal_by_sequence), spec.shared_signal or 0.0)}"
    else:
        name = f"{stem}-signal{format_strength(DEFAULT_SIGNAL if spec.signal is None else spec.signal)}"
    return (spec.out or Path("data") / name).resolve()


def ensure_dataset(data: DataConfig) -> Path:
    """The dataset folder: ``data.root``, or the synthetic cohort, generated when it is not there yet."""
    _real_path(data.root, "data.root")
    if data.root is not None:
        return Path(data.root).resolve()
    from harness.datasets.synthetic import generate_cohort

    spec = data.synth
    folder = synth_folder(spec)
    if (folder / "manifest.csv").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Several sweeps with the same spec may start together: one generates, the others wait and find it done.
    with FileLock(str(folder.with_name(f".{folder.name}.lock")), timeout=3600):
        if (folder / "manifest.csv").is_file():
            return folder
        log.warning("generating the synthetic cohort %s (once)", folder)
        generate_cohort(
            folder,
            patients=spec.patients,
            centers=spec.centers,
            seed=spec.seed,
            signal=spec.signal,  # None: the generator's default
            signal_by_sequence=spec.signal_by_sequence,
            shared_signal=spec.shared_signal,
        )
    return folder


def make_split(index: DatasetIndex, data: DataConfig) -> Split:
    """The patient split the config asks for, over the usable patients."""
    patients = [index.patients[p] for p in index.usable_patients()]
    spec = data.split
    if spec.by == "center":
        return split_by_center(patients, spec.val_centers, spec.test_centers)
    if spec.by == "cv":
        return split_cv(
            patients,
            folds=spec.folds,
            fold=spec.fold,
            seed=spec.seed,
            test_centers=spec.test_centers,
            test_fraction=spec.test_fraction,
        )
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
