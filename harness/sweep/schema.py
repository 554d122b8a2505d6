"""The sweep file's schema: the top-level settings and a study's sweep-only keys (grid, search, cv, repeats,
scheduler, resources, retries), as strict pydantic models. Expansion into trials: `harness.sweep.plan`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from harness.config import StrictModel

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


class CrossValidation(StrictModel):
    """Patient-level K-fold cross-validation of a study (``cv: 5`` is short for ``cv: {folds: 5}``)."""

    folds: int = Field(5, ge=2, le=50)
    seed: int = Field(0, description="the assignment of patients to folds, the same for every configuration")
    test_centers: list[str] = Field(default_factory=list, description="held out from every fold: external test")
    test_fraction: float = Field(0.0, ge=0, lt=1, description="or a stratified fraction held out as the test set")

    @field_validator("test_centers", mode="before")
    @classmethod
    def _centres_as_strings(cls, value: Any) -> Any:
        return [str(v) for v in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _one_test_set(self) -> CrossValidation:
        if self.test_centers and self.test_fraction:
            raise ValueError("give test_centers or test_fraction, not both")
        return self


class Study(StrictModel):
    """The sweep-only keys of a study; the rest of the study's mapping is the trial template."""

    name: str
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    search: dict[str, dict[str, list[Any]]] = Field(default_factory=dict)
    num_samples: int = Field(1, ge=1)
    cv: CrossValidation | None = None
    repeats: int = Field(1, ge=1, le=100, description="training seeds per configuration and fold")
    scheduler: Scheduler = Field(default_factory=Scheduler)
    resources: Resources = Field(default_factory=Resources)
    max_concurrent: int = Field(0, ge=0, description="0: as many as the resources allow")
    max_failures: int = Field(2, ge=0, description="retries of a failed trial, from its last checkpoint")
    backbone_kwargs: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="model_kwargs added for one backbone only (e.g. returned_layers)"
    )

    _safe_name = field_validator("name")(classmethod(lambda cls, value: check_name(value)))

    @field_validator("cv", mode="before")
    @classmethod
    def _folds_shorthand(cls, value: Any) -> Any:
        return {"folds": value} if isinstance(value, int) and not isinstance(value, bool) else value

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


def _number(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` as a string; a bound of a numeric distribution is a number."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value
