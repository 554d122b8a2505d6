"""The model registry: one name per builder, timm-style ``create_model`` / ``list_models``.

Builders are thin keyword-only functions named after their key (torchvision's ``fasterrcnn_resnet50_fpn(*, ...)``
style). ``register_model`` wraps each one so that, however it is called (through ``create_model`` or directly), the
returned module carries ``registry_name`` and ``build_kwargs`` (every argument after defaults, JSON-able): a checkpoint
records both and rebuilds the same architecture later. Registration happens at import time: the package ``__init__``
imports every model module explicitly, so a name is never missing because its module was not imported yet.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import torch.nn as nn

TASKS = ("classification", "detection")

# Builder arguments that point at pretrained weights. ``build_kwargs`` records them as given; to rebuild a model from a
# checkpoint (whose state_dict holds the trained weights anyway) set them to None so nothing is read from disk.
WEIGHT_KWARGS = ("weights", "weights_backbone")


class UnknownModelError(KeyError):
    """No model is registered under the requested name (a KeyError whose message reads as a sentence)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class _Entry:
    builder: Callable[..., nn.Module]
    task: str
    signature: inspect.Signature


_REGISTRY: dict[str, _Entry] = {}


def register_model(name: str, *, task: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder under ``name``.

    Args:
        name: the registry key; by convention the builder function has the same name.
        task: ``"classification"`` or ``"detection"``.

    Returns:
        A decorator that registers the builder and returns it wrapped, so that direct calls also record
        ``registry_name`` and ``build_kwargs`` on the model.

    Raises:
        ValueError: the task is unknown, or the name is already registered.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            previous = _REGISTRY[name].builder
            raise ValueError(
                f"model {name!r} is already registered (by {previous.__module__}.{previous.__qualname__}); "
                "pick another name"
            )
        signature = inspect.signature(fn)
        positional = [p.name for p in signature.parameters.values() if p.kind is not p.KEYWORD_ONLY]
        if positional:
            raise TypeError(f"builder {fn.__qualname__} must take keyword-only arguments; positional: {positional}")

        @functools.wraps(fn)
        def builder(**kwargs: Any) -> nn.Module:
            _check_kwargs(name, signature, kwargs)
            bound = signature.bind(**kwargs)
            bound.apply_defaults()
            model = fn(**bound.arguments)
            model.registry_name = name
            model.build_kwargs = {key: _jsonable(value, f"{name}({key}=...)") for key, value in bound.arguments.items()}
            return model

        _REGISTRY[name] = _Entry(builder, task, signature)
        return builder

    return decorator


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from ``list_models()``.
        **kwargs: the builder's keyword arguments (see its docstring).

    Returns:
        The model (a plain ``nn.Module``) with ``registry_name`` and ``build_kwargs`` attributes.

    Raises:
        UnknownModelError: no such name (the message lists close matches).
        TypeError: an argument the builder does not take (the message lists the ones it takes).
    """
    return _entry(name).builder(**kwargs)


def list_models(pattern: str = "*", task: str | None = None) -> list[str]:
    """Registered names matching a shell-style pattern (``"wu2020*"``), sorted.

    Args:
        pattern: an ``fnmatch`` pattern, case-sensitive.
        task: keep only ``"classification"`` or ``"detection"`` models; None keeps all.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {TASKS} or None, got {task!r}")
    return sorted(
        name
        for name, entry in _REGISTRY.items()
        if fnmatch.fnmatchcase(name, pattern) and (task is None or entry.task == task)
    )


def model_task(name: str) -> str:
    """The task (``"classification"`` or ``"detection"``) of a registered model."""
    return _entry(name).task


def model_signature(name: str) -> inspect.Signature:
    """The builder's signature: its keyword arguments and their defaults (for config validation and help)."""
    return _entry(name).signature


def check_model_kwargs(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` checked against the builder of ``name`` and coerced to its annotated types, the way the rest of a
    config is (YAML 1.1's ``5e-1`` is a string; the builder wants a float).

    Raises:
        ValueError: an argument the builder does not take (with the close matches), or a value its annotation
            refuses; the message starts with the argument's name.
    """
    import typing

    from pydantic import TypeAdapter, ValidationError

    entry = _entry(name)
    accepted = [p for p in entry.signature.parameters if p not in ("self",)]
    hints = typing.get_type_hints(entry.builder)
    checked = {}
    for key, value in kwargs.items():
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(f"{key}: not an argument of {name}{hint} Accepted: {', '.join(sorted(accepted))}")
        if key not in hints:
            checked[key] = value
            continue
        try:
            checked[key] = TypeAdapter(hints[key]).validate_python(value)
        except ValidationError as error:
            expected = getattr(hints[key], "__name__", None) or str(hints[key]).replace("typing.", "")
            raise ValueError(f"{key}: {value!r} is not a valid {expected} ({error.errors()[0]['msg']})") from None
    return checked


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        pass
    close = difflib.get_close_matches(str(name).lower(), list(_REGISTRY), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    raise UnknownModelError(f"unknown model {name!r}{hint} Registered models: {', '.join(list_models())}")


def _check_kwargs(name: str, signature: inspect.Signature, kwargs: dict[str, Any]) -> None:
    # A config typo ("backbone_block") should say which arguments exist instead of Python's bare TypeError.
    accepted = list(signature.parameters)
    for key in kwargs:
        if key not in signature.parameters:
            close = difflib.get_close_matches(key, accepted, n=3, cutoff=0.5)
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            raise TypeError(f"model {name!r} takes no argument {key!r}{hint}; it takes: {', '.join(accepted)}")


def _jsonable(value: Any, where: str) -> Any:
    """Turn a builder argument into plain JSON data (tuples become lists, paths strings) or fail naming it."""
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, where) for item in value]
    if isinstance(value, dict):
        return {str(key): _jsonable(item, where) for key, item in value.items()}
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{where}: {type(value).__name__} value is not JSON-able; pass plain data") from exc
    return value
