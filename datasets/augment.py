"""Augmentation sets: a registry of named, seedable augmentations over sample dicts (``harness.datasets.augment``).

A sample is a dict. Classifier samples (Wu 2020) hold ``"image"`` (float32, (3, 64, 64), z-scored); detector samples
(Lu 2018) hold ``"image"`` (float32, (C, H, W)) and ``"target"`` = ``{"boxes": float32 (N, 4) XYXY pixels,
"labels": int64 (N,)}``, N >= 0. An augmentation returns a new dict with the same keys: only the image and the boxes
change, every other key passes through. Geometry uses ``torchvision.transforms.v2`` so that boxes move with the
image; boxes pushed out of the image are clipped, and those left with no area are dropped together with their labels.

Randomness comes from torch's global RNG only, so ``torch.manual_seed`` and DataLoader worker seeding reproduce it.

Fill value: areas shifted in by an affine or elastic warp take each channel's *minimum*, not 0. On a z-scored image 0
is the mean intensity, i.e. mid-grey tissue, and a mid-grey border is a shape the network could learn; the minimum
is the air / no-signal background of a full slice, which is what a shifted field of view really shows. Channels are
different slices or sequences, each z-scored on its own, hence one minimum per channel.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

Augmentation = Callable[[dict], dict]
TASKS = ("classification", "detection")

_REGISTRY: dict[str, Callable[..., Augmentation]] = {}


class UnknownAugmentationError(KeyError, ValueError):
    """No augmentation set of that name is registered (a KeyError for lookups, a ValueError for config checks)."""

    def __str__(self) -> str:  # KeyError would print the message's repr, quotes and escaped newlines included
        return str(self.args[0])


def register_augmentation(name: str) -> Callable[[Callable[..., Augmentation]], Callable[..., Augmentation]]:
    """Registers a builder ``builder(task, **params) -> Augmentation`` under ``name``.

    Args:
        name: the key used by ``create_augmentation`` and in sweep configs.

    Returns:
        A decorator that registers the builder and returns it unchanged.

    Raises:
        ValueError: ``name`` is already registered (a silent overwrite would change what a config means).
    """

    def decorator(builder: Callable[..., Augmentation]) -> Callable[..., Augmentation]:
        if name in _REGISTRY:
            raise ValueError(f"augmentation {name!r} is already registered (by {_REGISTRY[name].__qualname__})")
        _REGISTRY[name] = builder
        return builder

    return decorator


def list_augmentations(pattern: str = "*") -> list[str]:
    """Returns the sorted names of the registered augmentation sets that match a shell-style ``pattern``."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def create_augmentation(name: str, task: str, **params: Any) -> Augmentation:
    """Builds the augmentation set ``name`` for ``task``.

    Args:
        name: a registered set (see ``list_augmentations``).
        task: ``"classification"`` or ``"detection"``.
        **params: keyword parameters of the set's builder (its defaults are in its docstring).

    Returns:
        A callable from sample dict to a new sample dict.

    Raises:
        UnknownAugmentationError: no such set; the message lists close matches and all names.
        ValueError: unknown task.
        TypeError: parameters the builder does not take; the message names them and the accepted ones.
    """
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownAugmentationError(
            f"unknown augmentation {name!r}.{hint} Registered: {', '.join(list_augmentations())}"
        )
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: expected one of {', '.join(TASKS)}")
    builder = _REGISTRY[name]
    accepted = [p for p in inspect.signature(builder).parameters if p != "task"]
    unknown = sorted(set(params) - set(accepted))
    if unknown:  # Python's own TypeError names only the first one; a config usually has all its typos at once
        raise TypeError(
            f"augmentation {name!r} got unknown parameter(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(accepted) or 'none'}"
        )
    return builder(task, **params)


class _V2Augmentation:
    """Runs a ``transforms.v2`` pipeline on a sample dict and returns plain tensors again.

    Args:
        transform: the v2 pipeline; for detection it sees ``{"image", "boxes", "labels"}``.
        task: ``"classification"`` or ``"detection"``.
        fill_min: shift each channel so its minimum is 0 before the pipeline (whose fill is 0) and back after, so
            that shifted-in areas get the channel minimum. Interpolation is linear, so the shift commutes with it.
    """

    def __init__(self, transform: Callable[[Any], Any], task: str, fill_min: bool):
        self.transform, self.task, self.fill_min = transform, task, fill_min

    def __call__(self, sample: dict) -> dict:
        image = sample["image"]
        offset = image.amin(dim=(-2, -1), keepdim=True) if self.fill_min else None
        x = tv_tensors.Image(image - offset if offset is not None else image)
        out = dict(sample)
        if self.task == "classification":
            y = self.transform(x)
        else:
            target = sample["target"]
            n = len(target["boxes"])
            stale = [
                k for k, v in target.items() if k not in ("boxes", "labels") and torch.is_tensor(v) and len(v) == n
            ]
            if stale and n:  # they would not follow dropped boxes and silently desynchronise
                raise ValueError(f"target keys {stale} look per-box; only 'boxes' and 'labels' follow the boxes")
            boxes = tv_tensors.BoundingBoxes(
                torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4),
                format="XYXY",
                canvas_size=tuple(image.shape[-2:]),
            )
            labels = torch.as_tensor(target["labels"], dtype=torch.int64)
            # SanitizeBoundingBoxes finds the labels under the "labels" key of the dict it is given.
            res = self.transform({"image": x, "boxes": boxes, "labels": labels})
            y = res["image"]
            out["target"] = {
                **target,
                "boxes": res["boxes"].as_subclass(torch.Tensor).to(torch.float32),
                "labels": res["labels"].as_subclass(torch.Tensor).to(torch.int64),
            }
        y = y.as_subclass(torch.Tensor)
        out["image"] = (y + offset if offset is not None else y).to(image.dtype)
        return out


def _pipeline(task: str, geometric: list[Any], fill_min: bool) -> Augmentation:
    """Wraps geometric v2 transforms; for detection, clips boxes to the image and drops empty ones with labels."""
    if task == "detection":
        geometric = [*geometric, v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1.0)]
    return _V2Augmentation(v2.Compose(geometric), task, fill_min)


@register_augmentation("none")
def none(task: str) -> Augmentation:
    """No augmentation: returns the sample unchanged (validation, test, and the baseline arm of a sweep)."""
    return lambda sample: sample


@register_augmentation("flip")
def flip(task: str, *, p: float = 0.5) -> Augmentation:
    """Random horizontal (left-right) flip with probability ``p`` (default 0.5); the pelvis is near-symmetric."""
    return _pipeline(task, [v2.RandomHorizontalFlip(p=p)], fill_min=False)


@register_augmentation("light")
def light(task: str, *, flip_p: float = 0.5, shift: float = 0.05, rotation: float = 5.0) -> Augmentation:
    """Flip plus a small affine: horizontal flip (p=0.5), shift ±5 % of width/height, rotation ±5°."""
    affine = v2.RandomAffine(degrees=rotation, translate=(shift, shift), interpolation=v2.InterpolationMode.BILINEAR)
    return _pipeline(task, [v2.RandomHorizontalFlip(p=flip_p), affine], fill_min=True)


@register_augmentation("paper")
def paper(
    task: str,
    *,
    shift: float = 0.1,
    zoom: tuple[float, float] = (0.9, 1.1),
    rotation: float = 15.0,
    shear: float = 0.0,
    elastic_p: float = 0.5,
    elastic_alpha: float = 50.0,
    elastic_sigma: float = 5.0,
    flip_p: float = 0.5,
) -> Augmentation:
    """Wu 2020 eMethods 3: "random width and height shift, zooming, rotation, deformation, and flipping".

    The paper gives no ranges; these defaults are typical Keras ``ImageDataGenerator`` settings of its era:

    - shift: ±10 % of width and height (``shift=0.1``);
    - zoom: scale factor in [0.9, 1.1] (``zoom``);
    - rotation: ±15° (``rotation``); shear ±``shear``° (0 by default: the deformation is the elastic one);
    - deformation: elastic warp with probability 0.5 (``elastic_p``), ``elastic_alpha=50``, ``elastic_sigma=5``
      pixels, i.e. about 1.2 px mean and 3 px largest displacement (small on a 64 px image);
    - flipping: horizontal, probability 0.5 (``flip_p``).

    Shifted-in areas take the channel minimum (module docstring). The elastic warp needs images larger than
    ``4 * elastic_sigma`` pixels per side (its smoothing kernel pads by reflection).
    """
    affine = v2.RandomAffine(
        degrees=rotation,
        translate=(shift, shift),
        scale=zoom,
        shear=shear or None,
        interpolation=v2.InterpolationMode.BILINEAR,
    )
    elastic = v2.RandomApply([v2.ElasticTransform(alpha=elastic_alpha, sigma=elastic_sigma)], p=elastic_p)
    return _pipeline(task, [v2.RandomHorizontalFlip(p=flip_p), affine, elastic], fill_min=True)
