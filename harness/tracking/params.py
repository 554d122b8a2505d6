"""What a run's params and metrics look like when logged: the resolved config flattened, each key once, only the
keys the task uses, no file paths; metrics numeric and finite. Pure functions: no MLflow import."""

from __future__ import annotations

import math
from typing import Any

# Keys of the resolved config that one task does not use: not logged as params of that task's runs.
UNUSED_KEYS = {
    "classification": ("data.image_size", "data.spacing_mm", "data.targets", "data.label_mode", "data.negatives"),
    "detection": ("data.crop_size", "data.margin_mm"),
}
# Logged under their short names (the comparison axes), so not again under their config keys.
SHORT_NAMES = {"data.sequence": "sequence", "data.augment": "augment", "model_kwargs.backbone": "backbone"}
PATH_KEYS = ("data.root", "data.synth.out", "output_dir")  # never logged: file paths
MAX_PARAM_LENGTH = 500


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def trial_params(config: dict[str, Any], *, configuration: bool = False) -> dict[str, str]:
    """Params of a run, each once: ``task, model, sequence, augment, backbone, epochs``, then the rest of the resolved
    config flattened (``train.stage2_lr``, ``data.split.fold``...), without file paths and without the keys the task
    does not use. ``configuration=True``: the configuration's params (no fold, no repeat)."""
    from harness.config import trial_epochs

    detection = config["task"] == "detection"
    backbone = config["model"].removeprefix("fasterrcnn_") if detection else config["model_kwargs"].get("backbone")
    stable = {
        "task": config["task"],
        "model": config["model"],
        "sequence": config["data"]["sequence"],
        "augment": config["data"]["augment"],
        "backbone": backbone or "resnet18",
        "epochs": trial_epochs(config),
    }
    skipped = {"name", *stable, *UNUSED_KEYS[config["task"]], *SHORT_NAMES}
    if configuration:
        skipped |= {"data.split.fold", "repeat"}
    flat = {k: v for k, v in flatten(config).items() if not k.startswith(PATH_KEYS) and k not in skipped}
    return {k: str(v)[:MAX_PARAM_LENGTH] for k, v in {**stable, **flat}.items()}


def finite_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Numeric, finite metrics only (MLflow rejects NaN in some stores; a NaN AUC means 'undefined')."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(float(value)):
            out[key] = float(value)
    return out
