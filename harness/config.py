"""Typed configuration from YAML: the training run (``harness train TRIAL.yaml``; one point of a sweep), and the
one strict base (`StrictModel`) and one YAML loader (`load_yaml`) that the sweep file (`harness.sweep.plan`) uses too.

``yaml.safe_load`` then pydantic: unknown keys are errors, numbers written ``1e-3`` (a string to YAML 1.1) are
coerced, and every error names its key path (``train.stage2_lr``) and the allowed values. ``--set key=value``
overrides are applied to the raw mapping before validation, so they are checked like the file. The resolved config
(every default filled in) is written next to the results.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.datasets.sequences import check_sequence


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key path and what is allowed."""


# What stands for a file path in the configs a run stores (config.yaml, checkpoints) and MLflow receives: no file path
# leaves the machine (docs/data-format.md, "Where patient data can appear"). `TrialConfig.shareable` writes them.
DATA_PLACEHOLDER = "<data>"
OUTPUT_PLACEHOLDER = "<output>"
PATH_PLACEHOLDERS = {
    ("data", "root"): DATA_PLACEHOLDER,
    ("data", "synth", "out"): DATA_PLACEHOLDER,
    ("output_dir",): OUTPUT_PLACEHOLDER,
}


class StrictModel(BaseModel):
    """The base of every config model: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SynthSpec(StrictModel):
    """A synthetic cohort generated once, before training, when ``out`` does not hold one yet.

    ``signal_by_sequence`` selects planted mode (docs/synthetic.md): each of T2WI, CET1WI and ADC (alias DWI) carries
    its own tumour feature of the given strength (missing keys 0); ``shared_signal`` (None: 0) is then the strength of
    the features every sequence sees, and ``signal`` must be left out. The planting is stored in canonical form (all
    three keys, DWI folded into ADC), so equal plantings resolve to the same cohort.
    """

    patients: int = Field(60, ge=1)
    centers: int = Field(3, ge=1)
    seed: int = Field(0, ge=0)
    signal: float | None = Field(None, ge=0, description="None: the generator's default")
    signal_by_sequence: dict[str, float] | None = Field(
        None, description="planted mode: strength per sequence, keys T2WI, CET1WI, ADC (DWI = ADC), missing keys 0"
    )
    shared_signal: float | None = Field(
        None, ge=0, allow_inf_nan=False, description="planted mode: strength of the shared features; None: 0"
    )
    out: Path | None = Field(
        None,
        description="default: data/synth-<patients>p-<centers>c-seed<seed>-signal<signal>, or in planted mode "
        "data/synth-<patients>p-<centers>c-seed<seed>-planted-T2WI<x>-CET1WI<y>-ADC<z>[-shared<s>]",
    )

    @field_validator("signal_by_sequence")
    @classmethod
    def _canonical_planting(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return None
        from harness.datasets.synthetic.planted import canonical_planting

        return canonical_planting(value)  # known keys, finite values >= 0; ValueError names the allowed keys

    @model_validator(mode="after")
    def _one_mode(self) -> SynthSpec:
        if self.signal_by_sequence is not None and self.signal is not None:
            raise ValueError("give signal or signal_by_sequence, not both (in planted mode use shared_signal)")
        if self.signal_by_sequence is None and self.shared_signal is not None:
            raise ValueError("shared_signal only applies with signal_by_sequence (planted mode)")
        return self


class SplitSpec(StrictModel):
    """Patients into train / val (/ test): by centre (Wu's external validation), stratified random, or fold ``fold``
    of a patient-level K-fold cross-validation (``cv``; stratified by label and centre, the test set held out
    first: ``test_centers`` or ``test_fraction``)."""

    by: Literal["center", "random", "cv"] = "center"
    val_centers: list[str] = Field(default_factory=lambda: ["3"])
    test_centers: list[str] = Field(default_factory=list)
    val_fraction: float = Field(0.3, gt=0, lt=1)
    test_fraction: float = Field(0.0, ge=0, lt=1)
    folds: int = Field(5, ge=2, le=50, description="cv: number of folds")
    fold: int = Field(0, ge=0, description="cv: the fold that validates (0 .. folds-1)")
    seed: int = Field(0, description="random / cv: the assignment of patients (fixed per study)")

    @model_validator(mode="after")
    def _fold_in_range(self) -> SplitSpec:
        if self.by == "cv" and self.fold >= self.folds:
            raise ValueError(f"split.fold: {self.fold} is not a fold of {self.folds} (0 .. {self.folds - 1})")
        if self.by == "cv" and self.test_centers and self.test_fraction:
            raise ValueError("split: give test_centers or test_fraction for the held-out test set, not both")
        return self

    @field_validator("val_centers", "test_centers", mode="before")
    @classmethod
    def _centres_as_strings(cls, value: Any) -> Any:
        return [str(v) for v in value] if isinstance(value, list) else value


class DataConfig(StrictModel):
    root: Path | None = None
    synth: SynthSpec | None = None
    sequence: str = "T2WI"
    augment: str = "none"
    split: SplitSpec = Field(default_factory=SplitSpec)
    on_error: Literal["error", "skip"] = "error"
    crop_size: int = Field(64, ge=8, description="classifier: side of the tumour crop (64 in Wu 2020)")
    margin_mm: float = Field(5.0, ge=0, description="classifier: peritumoural margin around the tumour box")
    image_size: int = Field(256, ge=32, description="detector: slices resized to image_size x image_size")
    spacing_mm: float | None = Field(
        None,
        gt=0,
        description="detector: resample slices to this many mm per pixel, then crop or pad to image_size "
        "(same node size in pixels at every centre); None stretches each slice to image_size",
    )
    targets: Literal["metastatic", "all"] = "metastatic"
    label_mode: Literal["location", "single"] = "location"
    negatives: bool = Field(
        True, description="detector: keep training slices without targets (validation always keeps every slice)"
    )

    _known_sequence = field_validator("sequence")(classmethod(lambda cls, value: check_sequence(value)))

    @field_validator("augment")
    @classmethod
    def _known_augmentation(cls, value: str) -> str:
        from harness.datasets.augment import list_augmentations

        if value not in list_augmentations():
            raise ValueError(f"unknown augmentation set {value!r}; known: {', '.join(list_augmentations())}")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if (self.root is None) == (self.synth is None):
            raise ValueError("give exactly one of data.root (a dataset folder) or data.synth (a synthetic cohort)")
        return self


class ClassifierTraining(StrictModel):
    """Wu 2020 eMethods 4: stage 1 trains sub-networks 2-3 with sub-network 1 frozen, stage 2 trains everything.

    The hybrid then trains sub-network 4 (the MLP) alone on the frozen image features, full batch, with Rprop (the
    paper's "resilient backpropagation with weight backtracking"; torch's Rprop has no weight backtracking), and
    fine-tunes all layers with SGD (lr 1e-3, momentum 0.9). L2 regularisation = weight decay on the MLP.
    """

    stage1_epochs: int = Field(20, ge=0)
    stage1_optimizer: Literal["sgd", "rmsprop", "adam"] = "sgd"
    stage1_lr: float = Field(1e-5, gt=0)
    stage2_epochs: int = Field(30, ge=0)
    stage2_optimizer: Literal["sgd", "rmsprop", "adam"] = "rmsprop"
    stage2_lr: float = Field(5e-5, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1, description="for SGD stages; the paper gives none")
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(128, ge=1)
    hybrid_mlp_epochs: int = Field(100, ge=0, description="hybrid: full-batch Rprop steps on the MLP")
    hybrid_finetune_epochs: int = Field(5, ge=0)
    hybrid_finetune_lr: float = Field(1e-3, gt=0)
    hybrid_l2: float = Field(1e-3, ge=0, description="hybrid: weight decay (L2) on the MLP")


class DetectorTraining(StrictModel):
    """Lu 2018 (Table 2): SGD lr 1e-3, dropped to 1e-4 for the last quarter, momentum 0.9, weight decay 5e-4.

    Training is approximate joint training (RPN and detection losses summed, one backward), torchvision's way; Lu
    used py-faster-rcnn's four-step alternating training, which is not offered here.
    """

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(2, ge=1)
    lr: float = Field(1e-3, gt=0)
    lr_drop_at: float = Field(0.75, gt=0, le=1, description="fraction of the iterations after which lr drops")
    lr_drop_factor: float = Field(0.1, gt=0, le=1)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    warmup_iters: int = Field(0, ge=0, description="linear warm-up iterations (not in the paper)")
    grad_clip: float | None = Field(None, gt=0)
    eval_every: int = Field(1, ge=0, description="validate every N epochs (and after the last); 0: only at the end")
    score_threshold: float = Field(0.05, ge=0, le=1, description="detections kept for evaluation")


class EarlyStopping(StrictModel):
    metric: str = "val_auc"
    mode: Literal["max", "min"] = "max"
    patience: int = Field(10, ge=1)
    min_delta: float = Field(0.0, ge=0)


class TrialConfig(StrictModel):
    """One training run. The same keys are one point of a sweep."""

    name: str = "trial"
    task: Literal["classification", "detection"]
    model: str
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    data: DataConfig
    train: ClassifierTraining | DetectorTraining | None = None
    early_stopping: EarlyStopping | None = None
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda, cuda:1...")
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    seed: int = 0
    repeat: int = Field(0, ge=0, description="the training repeat: the run's seed is seed + repeat (same split)")
    num_workers: int = Field(0, ge=0)
    n_boot: int = Field(1000, ge=100, description="bootstrap resamples for the AUC CI")
    output_dir: Path = Path("runs")
    log_every: int = Field(10, ge=1)

    @field_validator("output_dir")
    @classmethod
    def _not_a_placeholder(cls, value: Path) -> Path:
        if str(value) == OUTPUT_PLACEHOLDER:
            raise ValueError(f"{OUTPUT_PLACEHOLDER} stands for a path left out of a stored config; give a folder")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrialConfig:
        from harness.models import CLASSIFIER_BACKBONES, check_model_kwargs, list_models, model_task

        known = list_models(task=self.task)
        if self.model not in known:
            raise ValueError(f"model: unknown {self.task} model {self.model!r}; known: {', '.join(known)}")
        if model_task(self.model) != self.task:
            raise ValueError(f"model: {self.model!r} is a {model_task(self.model)} model, not {self.task}")
        try:
            # Set through __dict__: an assignment would run this validator again (validate_assignment).
            self.__dict__["model_kwargs"] = check_model_kwargs(self.model, self.model_kwargs)
        except ValueError as error:
            raise ValueError(f"model_kwargs.{error}") from None
        backbone = self.model_kwargs.get("backbone")
        if self.task == "classification" and backbone is not None and backbone not in CLASSIFIER_BACKBONES:
            known = ", ".join(CLASSIFIER_BACKBONES)
            raise ValueError(f"model_kwargs.backbone: unknown classifier backbone {backbone!r}; known: {known}")
        if self.task == "detection" and self.data.sequence not in ("T2WI", "DWI"):
            raise ValueError(f"data.sequence: detection uses axial T2WI or DWI, got {self.data.sequence!r}")
        return self

    def epoch_metrics(self) -> list[str]:
        """The metrics this run reports after every epoch (what early stopping and ASHA can watch)."""
        if self.task == "classification":
            return ["train_loss", "val_auc", "val_slice_auc"]
        from harness.datasets.detection import class_names
        from harness.metrics.detection import detector_report_keys

        evaluates = isinstance(self.train, DetectorTraining) and self.train.eval_every
        return ["train_loss"] + (detector_report_keys(class_names(self.data.label_mode)) if evaluates else [])

    @property
    def training_seed(self) -> int:
        """The seed of initialisation, augmentation and data order: ``seed + repeat`` (the split has its own)."""
        return self.seed + self.repeat

    def resolved(self) -> dict[str, Any]:
        """The config with every default filled in, JSON/YAML-able (what a sweep hands its trials)."""
        return self.model_dump(mode="json")

    def shareable(self) -> dict[str, Any]:
        """`resolved` with every file path replaced by its placeholder (``<data>``, ``<output>``): what a run writes
        to ``config.yaml`` and into its checkpoints, and so what reaches MLflow. Rerun a stored config with
        ``harness train config.yaml --data ROOT --set output_dir=runs``."""
        config = self.resolved()
        for keys, placeholder in PATH_PLACEHOLDERS.items():
            node = config
            for key in keys[:-1]:
                node = node.get(key) or {}
            if node.get(keys[-1]) is not None:
                node[keys[-1]] = placeholder
        return config


def set_dotted(raw: dict, dotted: str, value: Any, where: str = "--set") -> None:
    """Set ``raw["a"]["b"] = value`` for ``dotted = "a.b"``, creating missing sections; ``where`` prefixes errors."""
    keys = dotted.split(".")
    node = raw
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{where} {dotted}: {key!r} is not a section")
        node = child
    node[keys[-1]] = value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``key.path=value`` overrides; values are parsed as YAML (``5``, ``1e-3``, ``[3]``, ``true``)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.stage2_epochs=5")
        key, text = item.split("=", 1)
        set_dotted(raw, key.strip(), yaml.safe_load(text))
    return raw


def format_validation_error(error: ValidationError, source: str) -> str:
    """One line per problem: ``source: key.path: message``."""
    lines = []
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"] if not str(p).startswith(("function-", "Classifier", "Detector")))
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {path}: {message}" if path else f"{source}: {message}")
    return "\n".join(lines)


def parse_config(raw: dict, source: str = "config") -> TrialConfig:
    """Validate a raw mapping. Raises `ConfigError` with every problem's key path."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level")
    # The train section's schema depends on the task: validate it on its own, with its own key prefix.
    raw = dict(raw)
    train_raw = raw.pop("train", None) or {}
    problems, config, train = [], None, None
    try:
        config = TrialConfig.model_validate(raw)
    except ValidationError as error:
        problems.append(format_validation_error(error, source))
    section = ClassifierTraining if raw.get("task") == "classification" else DetectorTraining
    try:
        train = section.model_validate(train_raw)
    except ValidationError as error:
        problems.append(
            format_validation_error(error, f"{source}: train").replace(f"{source}: train: ", f"{source}: train.")
        )
    if problems:
        raise ConfigError("\n".join(problems))
    config.train = train
    if config.early_stopping is not None:
        check_reported(config, config.early_stopping.metric, f"{source}: early_stopping.metric")
    return config


def check_reported(config: TrialConfig, metric: str, where: str) -> None:
    """Raise `ConfigError` at ``where`` when ``config``'s runs never report ``metric`` after an epoch."""
    reported = config.epoch_metrics()
    if metric in reported:
        return
    close = difflib.get_close_matches(metric, reported, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
    raise ConfigError(
        f"{where}: {metric!r} is not reported after each epoch by this {config.task} run; {hint}"
        f"reported: {', '.join(reported)}"
    )


def load_yaml(path: Path | str) -> Any:
    """``yaml.safe_load`` of a config file; a missing file or bad YAML raises `ConfigError` naming the file."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; give a YAML file") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not a text file ({error.reason}); save it as UTF-8") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None


def load_config(path: Path | str, overrides: list[str] = ()) -> TrialConfig:
    """Load a trial YAML, apply ``--set`` overrides, validate."""
    raw = load_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return parse_config(apply_overrides(raw, list(overrides)), str(path))


def trial_epochs(config: dict[str, Any]) -> int:
    """Epochs a resolved trial config reports: the detector's, or the classifier's stages (the hybrid's MLP stage
    counts as one). The sweep planner sizes ASHA with it; tracking logs it as the ``epochs`` param."""
    train = config.get("train") or {}
    if config["task"] == "detection":
        return int(train["epochs"])
    epochs = train["stage1_epochs"] + train["stage2_epochs"]
    if config["model"] == "wu2020_hybrid":
        epochs += 1 + train["hybrid_finetune_epochs"]
    return int(epochs)
