"""Checkpoints: a state_dict plus what rebuilds the model (registry name, builder kwargs, resolved config).

Never a pickled model: checkpoints load with ``torch.load(..., weights_only=True)``, so opening one runs no code.
Written atomically (temporary file, then rename), so a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from harness.models import create_model

CHECKPOINT_VERSION = 1


def save_checkpoint(path: Path, *, model: torch.nn.Module, config: dict, **extra: Any) -> Path:
    """Write ``model``'s state_dict with ``model.registry_name``, ``model.build_kwargs``, the config and ``extra``
    (optimizer state, loop state...; tensors, numbers, strings, lists and dicts only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "version": CHECKPOINT_VERSION,
        "model_name": model.registry_name,
        "model_kwargs": model.build_kwargs,
        "model_state": model.state_dict(),
        "config": config,
        **extra,
    }
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint safely (``weights_only=True``). Raises ValueError naming the file if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which
        raise ValueError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or "model_state" not in payload or "model_name" not in payload:
        raise ValueError(f"{path}: not an lnm-harness checkpoint (no model_state / model_name)")
    return payload


def model_from_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the model from the registry with its recorded kwargs and load its weights."""
    payload = load_checkpoint(path, map_location)
    kwargs = {k: v for k, v in payload["model_kwargs"].items() if k not in ("weights", "weights_backbone")}
    model = create_model(payload["model_name"], **kwargs)  # weights come from the state_dict, not ImageNet
    model.load_state_dict(payload["model_state"])
    return model, payload
