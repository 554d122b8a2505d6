"""The sweep file: typed, validated, expanded into the exact list of trials before anything runs.

A sweep holds studies; a study is a trial template (the keys of ``harness train``'s TRIAL.yaml: task, model,
model_kwargs, data, train, ...) plus how to vary it:

- ``grid``: every combination runs. ``sequence`` and ``augment`` set ``data.sequence`` / ``data.augment``;
  ``backbone`` picks the detector (``fasterrcnn_<backbone>``) or the classifier's ``model_kwargs.backbone``;
  any other dotted key (``train.stage2_lr``, ``data.image_size``) sets that key.
- ``search``: sampled keys (``{choice: [...]}``, ``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}``), drawn
  ``num_samples`` times per grid point from the study's seed, here, so that ``--dry-run`` shows exactly what runs
  and a resumed sweep runs the same trials.

Every expanded trial is validated as a `TrialConfig` before Ray starts: a bad value fails with its key path
(``studies[1].grid.backbone[2]: unknown backbone 'vgg19'; known: ...``).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import Field, ValidationError, field_validator

from harness.config import (
    ConfigError,
    StrictModel,
    TrialConfig,
    format_validation_error,
    load_yaml,
    parse_config,
    set_dotted,
    trial_epochs,
)

SPECIAL_AXES = ("sequence", "augment", "backbone")
SWEEP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(value: str) -> str:
    """A sweep or study name: it names folders, trials and MLflow runs."""
    if not SWEEP_NAME.match(value):
        raise ValueError(f"{value!r}: use letters, digits, '_', '-', '.' (it names folders and runs)")
    return value


class SweepError(RuntimeError):
    """The sweep cannot start or go on (resources this cluster lacks, nothing to resume, ...)."""


class Scheduler(StrictModel):
    """``none`` runs every trial to its end; ``asha`` stops the weak ones early on ``metric``."""

    type: Literal["none", "asha"] = "none"
    metric: str = "val_auc"
    mode: Literal["max", "min"] = "max"
    grace_period: int = Field(1, ge=1, description="epochs every trial gets before it can be stopped")
    reduction_factor: float = Field(2.0, gt=1)
    # No max_t: it is the study's longest schedule plus one, so that ASHA never stops a trial at its last epoch,
    # before its final evaluation (a trial reports once per epoch, then once more with its final metrics).


class Resources(StrictModel):
    """What one trial asks Ray for. ``workers`` > 1 trains data-parallel (each worker gets cpus and gpus)."""

    cpus: float = Field(1.0, gt=0)
    gpus: float = Field(0.0, ge=0, description="fractional, e.g. 0.25: four trials share one GPU")
    workers: int = Field(1, ge=1, description="data-parallel workers per trial (DDP; gloo on CPU, nccl on GPU)")

    @field_validator("gpus")
    @classmethod
    def _whole_or_fraction(cls, value: float) -> float:
        if value > 1 and value != int(value):
            raise ValueError(f"{value} GPUs: use a fraction below 1 (shared GPU) or a whole number")
        return value


class Study(StrictModel):
    """The sweep-only keys of a study; the rest of the study's mapping is the trial template."""

    name: str
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    search: dict[str, dict[str, list[Any]]] = Field(default_factory=dict)
    num_samples: int = Field(1, ge=1)
    scheduler: Scheduler = Field(default_factory=Scheduler)
    resources: Resources = Field(default_factory=Resources)
    max_concurrent: int = Field(0, ge=0, description="0: as many as the resources allow")
    max_failures: int = Field(2, ge=0, description="retries of a failed trial, from its last checkpoint")
    backbone_kwargs: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="model_kwargs added for one backbone only (e.g. returned_layers)"
    )

    _safe_name = field_validator("name")(classmethod(lambda cls, value: check_name(value)))

    @field_validator("grid")
    @classmethod
    def _non_empty_axes(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if not values:
                raise ValueError(f"{key}: an empty list gives no trials")
            if len({repr(v) for v in values}) != len(values):
                raise ValueError(f"{key}: repeated values {values}")
        return grid

    @field_validator("search")
    @classmethod
    def _known_distributions(cls, search: dict[str, dict[str, list[Any]]]) -> dict[str, dict[str, list[Any]]]:
        for key, spec in search.items():
            if len(spec) != 1 or next(iter(spec)) not in ("choice", "uniform", "loguniform"):
                raise ValueError(f"{key}: give one of choice: [...], uniform: [lo, hi], loguniform: [lo, hi]")
            kind, values = next(iter(spec.items()))
            if kind != "choice":
                values = spec[kind] = [_number(v) for v in values]
                if len(values) != 2 or not all(isinstance(v, (int, float)) for v in values) or values[0] >= values[1]:
                    raise ValueError(f"{key}: {kind} needs [low, high] numbers with low < high, got {values}")
                if kind == "loguniform" and values[0] <= 0:
                    raise ValueError(f"{key}: loguniform needs low > 0, got {values[0]}")
            elif not values:
                raise ValueError(f"{key}: choice needs at least one value")
        return search


class SweepSettings(StrictModel):
    """The top level of a sweep file (besides ``studies``)."""

    name: str
    storage: Path = Field(Path("runs/sweeps"), description="Ray Tune results and trial outputs")
    tracking_uri: str | None = Field(None, description="default: sqlite:///<working dir>/mlflow.db")

    _safe_name = field_validator("name")(classmethod(lambda cls, value: check_name(value)))

    @field_validator("storage")
    @classmethod
    def _absolute_storage(cls, storage: Path) -> Path:
        return storage.expanduser().resolve()  # trials chdir: every path they get must be absolute


@dataclass
class TrialSpec:
    """One trial, fully resolved: what Ray runs and what MLflow records."""

    study: str
    key: str  # unique in the sweep, safe as a folder name: "<study>-<index>"
    run_name: str  # the grid point, for people: "sequence=T2WI augment=flip"
    point: dict[str, Any]  # the varied values (grid and sampled), logged as params
    config: dict[str, Any]  # the resolved TrialConfig


@dataclass
class StudyPlan:
    """A study and its trials."""

    index: int
    study: Study
    task: str
    trials: list[TrialSpec] = field(default_factory=list)

    @property
    def max_epochs(self) -> int:
        """The longest schedule of the study's trials, in reported epochs."""
        return max((trial_epochs(t.config) for t in self.trials), default=1)


@dataclass
class SweepPlan:
    """The whole sweep, ready to run."""

    settings: SweepSettings
    studies: list[StudyPlan]
    source: Path

    @property
    def trials(self) -> list[TrialSpec]:
        return [t for plan in self.studies for t in plan.trials]


def _number(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` as a string; a bound of a numeric distribution is a number."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _known_backbones(task: str) -> list[str]:
    from harness.models import list_models
    from harness.models.backbones import CLASSIFIER_BACKBONES

    if task == "detection":
        return [m.removeprefix("fasterrcnn_") for m in list_models("fasterrcnn_*")]
    return list(CLASSIFIER_BACKBONES)


def _apply_point(template: dict, point: dict[str, Any], backbone_kwargs: dict[str, dict]) -> dict:
    """The trial's raw config: the template with the point's values set."""
    raw = yaml.safe_load(yaml.safe_dump(template))  # a deep copy of plain data
    for key, value in point.items():
        if key == "sequence":
            set_dotted(raw, "data.sequence", value, "grid")
        elif key == "augment":
            set_dotted(raw, "data.augment", value, "grid")
        elif key == "backbone":
            if raw.get("task") == "detection":
                raw["model"] = f"fasterrcnn_{value}"
            else:
                set_dotted(raw, "model_kwargs.backbone", value, "grid")
            raw.setdefault("model_kwargs", {}).update(backbone_kwargs.get(value, {}))
        else:
            set_dotted(raw, key, value, "grid/search")
    return raw


def _check_axis(where: str, key: str, values: list[Any], task: str) -> None:
    """Special axes are checked value by value, so the error points at the bad item."""
    from harness.datasets.augment import list_augmentations
    from harness.datasets.sequences import SEQUENCES

    known = {"sequence": list(SEQUENCES), "augment": list_augmentations(), "backbone": _known_backbones(task)}
    if key not in known:
        return
    for i, value in enumerate(values):
        if value not in known[key]:
            raise ConfigError(f"{where}.{key}[{i}]: unknown {key} {value!r}; known: {', '.join(known[key])}")


def _sample(spec: dict[str, list[Any]], rng: np.random.Generator) -> Any:
    kind, values = next(iter(spec.items()))
    if kind == "choice":
        return values[int(rng.integers(len(values)))]
    low, high = float(values[0]), float(values[1])
    if kind == "uniform":
        return float(rng.uniform(low, high))
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _format_value(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _plan_study(index: int, raw: dict, sweep: SweepSettings, source: str) -> StudyPlan:
    where = f"studies[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {where}: expected a mapping")
    sweep_keys = set(Study.model_fields)
    try:
        study = Study.model_validate({k: v for k, v in raw.items() if k in sweep_keys})
    except ValidationError as error:
        message = format_validation_error(error, f"{source}: {where}").replace(f"{where}: ", f"{where}.")
        # grid / search validators name the key first: "studies[0].grid: augment: ..." -> "studies[0].grid.augment:"
        message = re.sub(r"(\.(?:grid|search)): ([\w.]+): ", r"\1.\2: ", message)
        raise ConfigError(message) from None
    template = {k: v for k, v in raw.items() if k not in sweep_keys}
    task = template.get("task")
    for key, values in study.grid.items():
        _check_axis(f"{source}: {where}.grid", key, values, task)
    for key in study.search:
        if key in SPECIAL_AXES:
            raise ConfigError(f"{source}: {where}.search.{key}: vary {key} in grid (it is a comparison axis)")
        if key in study.grid:
            raise ConfigError(f"{source}: {where}.search.{key}: also in grid; vary a key in one place")
    if study.scheduler.type == "asha" and task == "detection":
        eval_every = (template.get("train") or {}).get("eval_every", 1)
        if not eval_every:
            raise ConfigError(f"{source}: {where}.scheduler: asha needs a metric every epoch; set train.eval_every")

    plan = StudyPlan(index, study, task)
    rng = np.random.default_rng(template.get("seed", 0))
    axes = list(study.grid)
    for combo in itertools.product(*(study.grid[k] for k in axes)) if axes else [()]:
        for sample in range(study.num_samples):
            point = dict(zip(axes, combo, strict=True))
            point.update({key: _sample(spec, rng) for key, spec in study.search.items()})
            key = f"{study.name}-{len(plan.trials):03d}"
            trial_raw = _apply_point(template, point, study.backbone_kwargs)
            trial_raw["name"] = key
            trial_raw["output_dir"] = str(sweep.storage / sweep.name / "outputs")
            label = ", ".join(f"{k}={_format_value(v)}" for k, v in point.items()) or "base"
            try:
                config = parse_config(trial_raw, f"{source}: {where}")
            except ConfigError as error:  # "<source>: studies[i]: key: msg" -> "<source>: studies[i].key: msg"
                lines = str(error).replace(f"{where}: ", f"{where}.").splitlines()
                suffix = f" (in the trial {label})" if point else ""
                raise ConfigError("\n".join(line + suffix for line in lines)) from None
            _check_data(config, f"{source}: {where}.data")
            run_name = f"{study.name}: {label}" + (f" #{sample}" if study.num_samples > 1 else "")
            plan.trials.append(TrialSpec(study.name, key, run_name, point, config.resolved()))
    return plan


def _check_data(config: TrialConfig, where: str) -> None:
    root = config.data.root
    if root is not None and not (Path(root) / "manifest.csv").is_file():
        raise ConfigError(f"{where}.root: {root} holds no manifest.csv; give a dataset folder or data.synth")


def _absolute_paths(raw: dict) -> None:
    """Relative data paths are relative to the working directory; trials chdir, so make them absolute."""
    data = raw.get("data")
    if isinstance(data, dict):
        if isinstance(data.get("root"), str):
            data["root"] = str((Path(data["root"]).expanduser()).resolve())
        synth = data.get("synth")
        if isinstance(synth, dict):
            from harness.config import SynthSpec
            from harness.train.data import synth_folder

            # An invalid spec is reported with its key path when the trial is validated.
            with contextlib.suppress(ValidationError):
                synth["out"] = str(synth_folder(SynthSpec.model_validate(synth)))


def plan_sweep(raw: Any, source: str = "sweep") -> SweepPlan:
    """Validate a raw sweep mapping and expand it into trials. Raises `ConfigError` naming the key path."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with name and studies")
    raw = dict(raw)
    studies = raw.pop("studies", None)
    try:
        settings = SweepSettings.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None
    if not isinstance(studies, list) or not studies:
        raise ConfigError(f"{source}: studies: give a list of at least one study")
    plans = []
    for i, study_raw in enumerate(studies):
        if isinstance(study_raw, dict):
            _absolute_paths(study_raw)
        plans.append(_plan_study(i, study_raw, settings, source))
    names = [p.study.name for p in plans]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: studies: names must differ, got {names}")
    return SweepPlan(settings, plans, Path(source))


def load_sweep(path: Path | str) -> SweepPlan:
    """Load a sweep YAML (``yaml.safe_load``), validate it and expand its trials."""
    return plan_sweep(load_yaml(path), str(path))
