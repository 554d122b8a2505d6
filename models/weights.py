"""ImageNet weights without downloads.

No hub download works on the machines this project runs on, so nothing here calls one: a builder never passes a
torchvision ``Weights`` enum to a torchvision constructor (that would download). Instead ``resolve_weights`` reads a
state_dict from disk and the builders load the part they use themselves.

``weights`` values accepted everywhere:

- ``None`` / ``False``: random initialisation.
- ``"imagenet"`` (or ``True``): torchvision's ImageNet file for the architecture, looked up in torchvision's cache
  ``$TORCH_HOME/hub/checkpoints/`` (``torch.hub.get_dir()``; default ``~/.cache/torch/hub/checkpoints``) under the
  file name torchvision itself downloads it as (e.g. ``resnet18-f37072fd.pth``). Copy the file there from a machine
  with internet access.
- a path: a ``state_dict`` saved with ``torch.save`` (read with ``weights_only=True``; DataParallel's ``module.``
  prefix and a ``{"state_dict": ...}`` wrapper are accepted). Its keys and shapes must be those of torchvision's
  model for the architecture.
"""

from __future__ import annotations

import functools
import os
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn as nn
import torchvision

IMAGENET = "imagenet"

StateDict = dict[str, torch.Tensor]
WeightsArg = str | os.PathLike | bool | None


class WeightsError(ValueError):
    """A weights file cannot be used: unreadable, not a state_dict, or not the expected architecture."""


def imagenet_cache_dir() -> Path:
    """torchvision's download folder: ``torch.hub.get_dir()/checkpoints`` (follows ``TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def imagenet_file_names(arch: str) -> list[str]:
    """File names torchvision downloads the ImageNet weights of ``arch`` as, preferred first.

    ``IMAGENET1K_V1`` comes first: it is the classic file that torchvision's detection builders and most transfer
    learning papers (Wu 2020, Lu 2018 used Keras / Caffe ImageNet models of that generation) start from; later
    recipes (``V2``) are accepted when only they are present.
    """
    enum = torchvision.models.get_model_weights(arch)
    members = sorted(enum, key=lambda w: (w.name != "IMAGENET1K_V1", w.name))
    return [os.path.basename(urllib.parse.urlparse(w.url).path) for w in members if w.name.startswith("IMAGENET1K")]


def resolve_weights(arch: str, weights: WeightsArg) -> StateDict | None:
    """Read the ImageNet (or user) weights of a torchvision architecture.

    Args:
        arch: torchvision's model name (``"resnet18"``, ``"vgg16"``, ``"mobilenet_v3_large"``...).
        weights: None/False, ``"imagenet"``/True, or a path to a state_dict (see the module docstring).

    Returns:
        The full state_dict of ``arch`` (keys checked against torchvision's model), or None for random init.

    Raises:
        FileNotFoundError: the file (or the ImageNet file in torchvision's cache) does not exist; the message says
            which file to put where.
        WeightsError: the file is unreadable or is not a state_dict of ``arch``.
    """
    if weights is None or weights is False:
        return None
    if weights is True or (isinstance(weights, str) and weights.lower() == IMAGENET):
        path = _find_imagenet_file(arch)
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"weights file {str(path)!r} for {arch} not found; pass an existing state_dict file, "
                f"{IMAGENET!r} for torchvision's ImageNet weights, or None for random initialisation"
            )
    state = _read_state_dict(path)
    _check_architecture(arch, state, path)
    return state


def weights_source(arch: str, weights: WeightsArg) -> str:
    """How to name a ``weights`` argument in messages: the path, or ``resnet18 ImageNet weights``."""
    if weights is True or (isinstance(weights, str) and weights.lower() == IMAGENET):
        return f"{arch} ImageNet weights"
    return str(weights)


def load_into(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: str,
    key_map: Callable[[str], str | None] | None = None,
) -> list[str]:
    """Load the entries of ``state`` that ``module`` has (after ``key_map``) and check none is missing.

    A builder uses this to put part of an ImageNet model (ResNet18's stem and first blocks, VGG16's conv layers) into
    its own sub-module: entries the module does not have are skipped, every parameter and buffer it has must be there.

    Args:
        module: the module to fill.
        state: a state_dict, typically from ``resolve_weights``.
        source: where the weights come from, for error messages (a path, ``"resnet18 ImageNet"``).
        key_map: maps a key of ``state`` to the module's key, or None to skip it; default: same key.

    Returns:
        The module keys that were loaded.

    Raises:
        WeightsError: a module entry has no counterpart in ``state`` or its shape differs.
    """
    own = module.state_dict()
    picked: StateDict = {}
    for key, value in state.items():
        target = key_map(key) if key_map is not None else key
        if target is not None and target in own:
            picked[target] = value
    # BatchNorm's step counter is absent from pre-2018 files (resnet18-f37072fd.pth) and only matters for momentum=None.
    missing = [k for k in own if k not in picked and not k.endswith("num_batches_tracked")]
    wrong = [
        f"{k}: {tuple(picked[k].shape)} in file, {tuple(own[k].shape)} in model"
        for k in picked
        if picked[k].shape != own[k].shape
    ]
    if missing or wrong:
        problems = _some(missing_keys=missing, keys_with_other_shapes=wrong)
        raise WeightsError(f"{source}: does not fit {type(module).__name__}: {problems}")
    module.load_state_dict(picked, strict=False)
    return sorted(picked)


def _find_imagenet_file(arch: str) -> Path:
    folder = imagenet_cache_dir()
    names = imagenet_file_names(arch)
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"ImageNet weights for {arch} not found: expected {folder / names[0]} (torchvision's file name; "
        f"also accepted: {', '.join(names[1:]) or 'none'}). Downloads do not work here: copy the file into {folder} "
        f"(or set TORCH_HOME), pass a path to a state_dict instead, or set `pretrained: false` for random init."
    )


def _read_state_dict(path: Path) -> StateDict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors all mean the same thing to the user
        raise WeightsError(f"cannot read weights file {str(path)!r}: {type(exc).__name__}: {exc}") from exc
    # Unwrap a training checkpoint ({"state_dict": ...}) or a DataParallel model's "module." prefix.
    if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"weights file {str(path)!r} does not hold a state_dict (a dict of tensors)")
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


@functools.cache
def _reference_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    # Built on the meta device: shapes without allocating or initialising (VGG16 alone is 138 M parameters).
    with torch.device("meta"):
        model = torchvision.models.get_model(arch, weights=None)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _check_architecture(arch: str, state: StateDict, path: Path) -> None:
    reference = _reference_shapes(arch)
    missing = [k for k in reference if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in reference]
    wrong = [
        f"{k}: {tuple(state[k].shape)} in file, {reference[k]} expected"
        for k in state
        if k in reference and tuple(state[k].shape) != reference[k]
    ]
    if missing or unexpected or wrong:
        raise WeightsError(
            f"weights file {str(path)!r} is not a torchvision {arch} state_dict: "
            f"{_some(missing_keys=missing, unexpected_keys=unexpected, keys_with_other_shapes=wrong)}"
        )


def _some(shown: int = 4, **problems: list[str]) -> str:
    """``missing keys: a, b, c, d, ... (12 in all); shapes: ...`` for the non-empty lists."""
    parts = []
    for what, items in problems.items():
        if items:
            more = f", ... ({len(items)} in all)" if len(items) > shown else ""
            parts.append(f"{len(items)} {what.replace('_', ' ')} ({', '.join(items[:shown])}{more})")
    return "; ".join(parts)
