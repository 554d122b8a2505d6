"""The sweep file: typed, validated, expanded into the exact list of trials before anything runs.

A sweep holds studies; a study is a trial template (the keys of ``harness train``'s TRIAL.yaml: task, model,
model_kwargs, data, train, ...) plus how to vary it:

- ``grid``: every combination runs. ``sequence`` and ``augment`` set ``data.sequence`` / ``data.augment``;
  ``backbone`` picks the detector (``fasterrcnn_<backbone>``) or the classifier's ``model_kwargs.backbone``;
  any other dotted key (``train.stage2_lr``, ``data.image_size``) sets that key.
- ``cv`` and ``repeats``: every configuration (a grid point and sample) is trained on each fold of a patient-level
  K-fold cross-validation (the same folds for every configuration of the study: comparisons are paired on patients),
  ``repeats`` times with different training seeds; one configuration x fold x repeat is one trial.
- ``search``: sampled keys (``{choice: [...]}``, ``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}``), drawn
  ``num_samples`` times per grid point from the study's seed, here, so that ``--dry-run`` shows exactly what runs
  and a resumed sweep runs the same trials.

Every expanded trial is validated as a `TrialConfig` before Ray starts: a bad value fails with its key path
(``studies[1].grid.backbone[2]: unknown backbone 'vgg19'; known: ...``).
"""

from __future__ import annotations

import contextlib
import difflib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import ValidationError

from harness.config import (
    ConfigError,
    TrialConfig,
    check_reported,
    format_validation_error,
    load_yaml,
    parse_config,
    set_dotted,
    trial_epochs,
)

from .schema import SPECIAL_AXES, Study, SweepError, SweepSettings, check_name

__all__ = ["SweepError", "SweepPlan", "StudyPlan", "TrialSpec", "check_name", "load_sweep", "plan_sweep"]


@dataclass
class TrialSpec:
    """One trial, fully resolved: what Ray runs and what MLflow records."""

    study: str
    key: str  # unique in the sweep, safe as a folder name: "<configuration>[-f<fold>][-r<repeat>]"
    run_name: str  # for people, the distinguishing values first: "T2WI flip f2 r1"
    point: dict[str, Any]  # the varied values (grid and sampled)
    config: dict[str, Any]  # the resolved TrialConfig
    configuration: str = ""  # "<study>-<index>": the trials of one configuration differ by fold and repeat only
    configuration_name: str = ""  # the configuration's run name: "T2WI flip"
    fold: int | None = None  # None: no cross-validation
    repeat: int = 0


@dataclass
class StudyPlan:
    """A study and its trials."""

    index: int
    study: Study
    task: str
    trials: list[TrialSpec] = field(default_factory=list)

    @property
    def configurations(self) -> dict[str, list[TrialSpec]]:
        """Configuration key -> its trials (folds x repeats), in plan order."""
        groups: dict[str, list[TrialSpec]] = {}
        for trial in self.trials:
            groups.setdefault(trial.configuration, []).append(trial)
        return groups

    @property
    def folds(self) -> int:
        """Folds per configuration (1 without cross-validation)."""
        return self.study.cv.folds if self.study.cv else 1

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

    @property
    def configurations(self) -> dict[str, list[TrialSpec]]:
        """Every configuration of every study -> its trials."""
        return {key: trials for plan in self.studies for key, trials in plan.configurations.items()}


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

    _check_backbone_kwargs(study, task, f"{source}: {where}")
    plan = StudyPlan(index, study, task)
    rng = np.random.default_rng(template.get("seed", 0))
    axes = list(study.grid)
    for combo in itertools.product(*(study.grid[k] for k in axes)) if axes else [()]:
        for sample in range(study.num_samples):
            point = dict(zip(axes, combo, strict=True))
            point.update({key: _sample(spec, rng) for key, spec in study.search.items()})
            configuration = f"{study.name}-{len(plan.configurations):03d}"
            name = _configuration_name(study, point, sample)
            trial_raw = _apply_point(template, point, study.backbone_kwargs)
            label = ", ".join(f"{k}={_format_value(v)}" for k, v in point.items()) or "base"
            for fold, repeat in _folds_and_repeats(study):
                key = (
                    configuration
                    + (f"-f{fold}" if fold is not None else "")
                    + (f"-r{repeat}" if study.repeats > 1 else "")
                )
                raw = _with_fold(trial_raw, study, fold, repeat, f"{source}: {where}")
                raw["name"] = key
                raw["output_dir"] = str(sweep.storage / sweep.name / "outputs")
                config = _validated_trial(raw, f"{source}: {where}", label if point else "")
                run_name = " ".join(
                    [name] + ([f"f{fold}"] if fold is not None else []) + ([f"r{repeat}"] if study.repeats > 1 else [])
                )
                plan.trials.append(
                    TrialSpec(study.name, key, run_name, point, config.resolved(), configuration, name, fold, repeat)
                )
    _check_study_trials(plan, f"{source}: {where}")
    return plan


def _check_backbone_kwargs(study: Study, task: str, where: str) -> None:
    """backbone_kwargs apply to grid backbones only: any other key would be dropped without a word."""
    if not study.backbone_kwargs:
        return
    axis = study.grid.get("backbone")
    if axis is None:
        raise ConfigError(
            f"{where}.backbone_kwargs: the study has no grid backbone axis, so these would never apply; put them in "
            "model_kwargs, or vary backbone in grid"
        )
    for name in study.backbone_kwargs:
        if name not in axis:
            close = difflib.get_close_matches(str(name), [str(b) for b in axis], n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where}.backbone_kwargs.{name}: not a backbone of grid.backbone {axis}{hint}")


def _check_study_trials(plan: StudyPlan, where: str) -> None:
    """After expansion and coercion: metrics the scheduler watches exist, and no two configurations are the same."""
    scheduler = plan.study.scheduler
    configs = {key: trials[0] for key, trials in plan.configurations.items()}
    if scheduler.type != "none" and configs:
        check_reported(parse_config(next(iter(configs.values())).config), scheduler.metric, f"{where}.scheduler.metric")
    seen: dict[str, str] = {}
    for key, trial in configs.items():
        identity = json.dumps({k: v for k, v in trial.config.items() if k not in ("name",)}, sort_keys=True)
        if identity in seen:
            raise ConfigError(
                f"{where}.grid: configurations {seen[identity]} and {key} are the same trial after the values are "
                f"read as numbers ({trial.point}); remove the duplicate value (e.g. 1e-3 and 1.0e-3)"
            )
        seen[identity] = key


def _configuration_name(study: Study, point: dict[str, Any], sample: int) -> str:
    """A configuration's run name: its values, most telling first, so the first 20 characters tell runs apart in
    the MLflow runs table ("T2WI flip", "DWI none mobilenet_v3"); the study name when nothing varies."""
    values = [_format_value(point[k]) for k in (*SPECIAL_AXES, "model") if k in point]
    values += [
        f"{k.rsplit('.', 1)[-1]}={_format_value(v)}" for k, v in point.items() if k not in (*SPECIAL_AXES, "model")
    ]
    name = " ".join(values) or study.name
    return name + (f" #{sample}" if study.num_samples > 1 else "")


def _folds_and_repeats(study: Study) -> list[tuple[int | None, int]]:
    folds: list[int | None] = list(range(study.cv.folds)) if study.cv else [None]
    return [(fold, repeat) for fold in folds for repeat in range(study.repeats)]


def _with_fold(raw: dict, study: Study, fold: int | None, repeat: int, where: str) -> dict:
    """The trial's raw config for one fold and repeat: the study's cross-validation as ``data.split``."""
    raw = yaml.safe_load(yaml.safe_dump(raw))
    raw["repeat"] = repeat
    if fold is None:
        return raw
    data = raw.setdefault("data", {})
    if not isinstance(data, dict):
        raise ConfigError(f"{where}.data: expected a mapping")
    if data.get("split") not in (None, {}):
        raise ConfigError(f"{where}.data.split: the study's cv sets the split of every trial; remove data.split")
    cv = study.cv
    data["split"] = {
        "by": "cv",
        "folds": cv.folds,
        "fold": fold,
        "seed": cv.seed,
        "test_centers": cv.test_centers,
        "test_fraction": cv.test_fraction,
    }
    return raw


def _validated_trial(raw: dict, where: str, label: str) -> TrialConfig:
    try:
        config = parse_config(raw, where)
    except ConfigError as error:  # "<source>: studies[i]: key: msg" -> "<source>: studies[i].key: msg"
        study_where = where.rsplit(": ", 1)[-1]
        lines = str(error).replace(f"{study_where}: ", f"{study_where}.").splitlines()
        suffix = f" (in the trial {label})" if label else ""
        raise ConfigError("\n".join(line + suffix for line in lines)) from None
    _check_data(config, f"{where}.data")
    return config


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
