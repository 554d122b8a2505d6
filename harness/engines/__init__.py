"""Inference engines beside PyTorch: ONNX Runtime and OpenVINO on the CPU, TensorRT on NVIDIA GPUs.

A registry model reaches an engine as ONNX (`harness.engines.onnx_export.export_onnx`: classifiers output the
positive-class probability, detectors boxes / labels / scores of one image, with torchvision's pre- and
post-processing inside the graph). `harness.engines.runtimes.EnginePredictor` runs it with the same call as
`harness.inference.Predictor`, so `harness bench`, the CI gate and `harness predict` time and check an engine like
any torch path: an engine path is trusted only after its outputs equal eager fp32's (`harness.equality`).

Engine paths are named ``ENGINE:DTYPE`` (``onnxruntime:fp32``, ``openvino:bf16``, ``tensorrt:fp16``). The engines are
optional extras; a missing one is a clear error naming the ``pip install`` that brings it (`require`).

This module holds the tables only (no engine is imported here), so that `harness.inference` can validate a path
without importing an engine.
"""

from __future__ import annotations

import importlib
from types import ModuleType

ENGINES = ("torch", "onnxruntime", "openvino", "tensorrt")
# Precisions each engine offers: ONNX Runtime runs the fp32 graph (its graph optimisations on), OpenVINO's
# INFERENCE_PRECISION_HINT f32 / bf16, TensorRT's builder flag fp16 (fp32 without it).
ENGINE_DTYPES = {
    "torch": ("fp32", "bf16", "fp16"),
    "onnxruntime": ("fp32",),
    "openvino": ("fp32", "bf16"),
    "tensorrt": ("fp32", "fp16"),
}
ENGINE_DEVICES = {"torch": ("cpu", "cuda"), "onnxruntime": ("cpu", "cuda"), "openvino": ("cpu",), "tensorrt": ("cuda",)}
# The Python module each engine needs and the extra of pyproject.toml that installs it.
ENGINE_MODULES = {
    "onnxruntime": ("onnxruntime", "onnx"),
    "openvino": ("openvino", "openvino"),
    "tensorrt": ("tensorrt", "tensorrt"),
}


class EngineMissing(ImportError):
    """An engine's Python package is not installed; the message says which ``pip install`` brings it."""


def require(engine: str) -> ModuleType:
    """Import the engine's module (and ``onnx``, through which every engine gets its model), or raise
    `EngineMissing` naming the extra to install."""
    module, extra = ENGINE_MODULES[engine]
    try:
        importlib.import_module("onnx")
        return importlib.import_module(module)
    except ImportError as exc:
        raise EngineMissing(
            f"the {engine} engine needs the Python package {module!r}, which is not installed ({exc}): "
            f"pip install -e '.[{extra}]'"
        ) from exc


def engine_installed(engine: str) -> bool:
    """True when the engine's module imports (torch always)."""
    if engine == "torch":
        return True
    try:
        require(engine)
    except EngineMissing:
        return False
    return True


def engine_version(engine: str) -> str:
    """``"<engine> <version>"`` of an installed engine (torch's own for ``"torch"``)."""
    if engine == "torch":
        import torch

        return f"torch {torch.__version__}"
    from importlib.metadata import PackageNotFoundError, version

    module = require(engine)
    try:
        return f"{engine} {version(engine if engine != 'onnxruntime' else module.__name__)}"
    except PackageNotFoundError:  # onnxruntime-gpu, or a tensorrt from another distribution
        return f"{engine} {getattr(module, '__version__', '?')}"


def engine_paths(engine: str, device: str) -> list[str]:
    """The path labels ``--engine ENGINE`` stands for on ``device``: each precision the engine offers there
    (torch's own paths come from the torch options instead)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: choose from {', '.join(ENGINES)}")
    if engine == "torch":
        return []
    kind = "cuda" if device.startswith("cuda") else "cpu"
    if kind not in ENGINE_DEVICES[engine]:
        where = " or ".join(ENGINE_DEVICES[engine])
        raise ValueError(f"the {engine} engine runs on {where}, not on {device!r}")
    return [f"{engine}:{dtype}" for dtype in ENGINE_DTYPES[engine]]
