"""An exported model on an inference engine, called like `harness.inference.Predictor`.

`EnginePredictor(model, options)` exports the model to ONNX (once per model and input size: `exported`) and opens a
session on ``options.engine`` at ``options.dtype``:

- ``onnxruntime``: an ``InferenceSession`` with every graph optimisation on (``ORT_ENABLE_ALL``), CPU or CUDA
  execution provider; fp32 (its graph optimisations are what it adds over torch eager on the CPU).
- ``openvino``: the ONNX graph read by ``openvino.Core``, compiled for the CPU with ``INFERENCE_PRECISION_HINT``
  ``f32`` or ``bf16`` (bf16 only on a CPU with native bf16: elsewhere OpenVINO would quietly run f32, so the path is
  refused) and ``PERFORMANCE_HINT`` ``LATENCY``; compiled once per input shape (static shapes run faster).
  (No int8 path: NNCF's post-training int8 quantisation of the trained example classifier moved probabilities by up
  to 0.18 on validation crops, docs/benchmarks.md "Engines".)
- ``tensorrt``: an engine built from the ONNX graph (fp32, or the ``FP16`` builder flag), run on torch CUDA
  buffers. Classifiers only: a detector's outputs have data-dependent shapes (NMS), which this runner does not
  handle; such a path is reported not applicable.

Threads: the session uses torch's thread count (``harness bench --threads``), set explicitly on each engine so that
engines and torch paths are compared on the same cores; `EnginePredictor.threads` reports it.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from harness.inference import InferenceOptions
from harness.models import model_task

from . import require
from .onnx_export import OnnxModel, export_onnx

_EXPORTS: weakref.WeakKeyDictionary[nn.Module, dict[int, OnnxModel]] = weakref.WeakKeyDictionary()


def exported(model: nn.Module, image_size: int) -> OnnxModel:
    """The model exported at ``image_size`` (dynamic batch), made once per model object and size: every engine
    path of a benchmark reads the same export. The model's weights must not change afterwards."""
    per_size = _EXPORTS.setdefault(model, {})
    if image_size not in per_size:
        per_size[image_size] = export_onnx(model, image_size=image_size)
    return per_size[image_size]


class EnginePredictor:
    """A registry model run by an inference engine; the same call and outputs as `harness.inference.Predictor`.

    Args:
        model: a registry model (fp32 weights; exported, not changed).
        options: an engine path (``options.engine`` is not ``"torch"``).
        image_size: the detector's input side (its ONNX graph has a fixed size); classifiers take their
            inputs' size (exported at 64 px when not given).
        threads: engine threads (default: ``torch.get_num_threads()``).
        onnx: an export of ``model`` to run (default: `exported`, made once per model and size).

    Raises:
        harness.engines.EngineMissing: the engine's package is not installed.
        ValueError: the engine cannot take this model or precision here (a reason a bench reports as
            "not applicable").
    """

    def __init__(
        self,
        model: nn.Module,
        options: InferenceOptions,
        *,
        image_size: int | None = None,
        threads: int | None = None,
        onnx: OnnxModel | None = None,
    ):
        if options.engine == "torch":
            raise ValueError("EnginePredictor runs engine paths; use harness.inference.Predictor for torch")
        self.options, self.device = options, torch.device(options.device)
        self.model = model
        self.name = getattr(model, "registry_name", type(model).__name__)
        self.task = model_task(self.name)
        self.threads = threads or torch.get_num_threads()
        self.hybrid = self.task == "classification" and getattr(model, "clinical_features", None) is not None
        self.onnx = onnx or exported(model, image_size or 64)
        self.image_size = self.onnx.image_size
        self.session = _open_session(options, self.onnx, self.threads)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Nothing to hand over: engines read host float32 arrays (a zero-copy view of the tensor)."""
        return images.contiguous()

    def synchronize(self) -> None:
        """Wait for a CUDA engine (the host engines return finished results)."""
        self.session.synchronize()

    def __call__(self, images: torch.Tensor, clinical: torch.Tensor | None = None) -> Any:
        if isinstance(images, torch.Tensor) and images.device.type != "cpu":
            images = images.cpu()
        array = np.ascontiguousarray(images.numpy(), dtype=np.float32)
        if self.task == "detection":
            return [self._detect(image) for image in array]
        feeds = {"images": array}
        if self.hybrid:
            clinical = torch.zeros(len(array), self.model.clinical_features) if clinical is None else clinical
            feeds["clinical"] = np.ascontiguousarray(clinical.cpu().numpy(), dtype=np.float32)
        (probability,) = self.session.run(feeds)
        return torch.from_numpy(np.asarray(probability, dtype=np.float32).reshape(len(array)))

    def _detect(self, image: np.ndarray) -> dict[str, torch.Tensor]:
        if image.shape[-1] != self.image_size or image.shape[-2] != self.image_size:
            raise ValueError(
                f"the {self.options.engine} detector was exported for {self.image_size}x{self.image_size} px slices, "
                f"got {image.shape[-2]}x{image.shape[-1]}"
            )
        boxes, labels, scores = self.session.run({"image": image})
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        keep = scores > self.onnx.score_thresh  # the model's threshold, left out of the graph (onnx_export)
        return {
            "boxes": torch.from_numpy(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)[keep]),
            "labels": torch.from_numpy(np.asarray(labels, dtype=np.int64).reshape(-1)[keep]),
            "scores": torch.from_numpy(scores[keep]),
        }


def _open_session(options: InferenceOptions, onnx: OnnxModel, threads: int):
    sessions = {"onnxruntime": OrtSession, "openvino": OpenVinoSession, "tensorrt": TensorRTSession}
    return sessions[options.engine](onnx, options, threads)


class OrtSession:
    """ONNX Runtime: every graph optimisation on, ``threads`` intra-op threads, one inter-op thread."""

    def __init__(self, onnx: OnnxModel, options: InferenceOptions, threads: int):
        ort = require("onnxruntime")
        settings = ort.SessionOptions()
        settings.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        settings.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        settings.intra_op_num_threads, settings.inter_op_num_threads = threads, 1
        settings.log_severity_level = 3  # errors only: the CPU provider warns about every node it leaves to others
        providers: list = ["CPUExecutionProvider"]
        if options.device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ValueError(
                    "onnxruntime has no CUDA execution provider here: install onnxruntime-gpu instead of onnxruntime"
                )
            index = torch.device(options.device).index or 0
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
        self.session = ort.InferenceSession(onnx.data, settings, providers=providers)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs, in the export's order."""
        return self.session.run(None, feeds)

    def synchronize(self) -> None:
        """ONNX Runtime returns host arrays: nothing to wait for."""


class OpenVinoSession:
    """OpenVINO on the CPU: compiled per input shape, at ``INFERENCE_PRECISION_HINT`` f32 or bf16."""

    def __init__(self, onnx: OnnxModel, options: InferenceOptions, threads: int):
        ov = require("openvino")
        self.core = ov.Core()
        if options.dtype == "bf16" and "BF16" not in self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise ValueError("this CPU has no native bf16 (OpenVINO would run f32 and call it bf16)")
        self.model = self.core.read_model(onnx.data)
        self.config = {
            "INFERENCE_PRECISION_HINT": "bf16" if options.dtype == "bf16" else "f32",
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
        }
        self.requests: dict[tuple, Any] = {}

    def _request(self, feeds: dict[str, np.ndarray]):
        key = tuple((name, array.shape) for name, array in feeds.items())
        if key not in self.requests:
            model = self.model.clone()
            model.reshape({name: list(array.shape) for name, array in feeds.items()})
            compiled = self.core.compile_model(model, "CPU", self.config)
            self.requests[key] = (compiled.create_infer_request(), compiled.outputs)
        return self.requests[key]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs, in the export's order (copies: the request's buffers are reused by the next call)."""
        request, outputs = self._request(feeds)
        result = request.infer(feeds)
        return [np.array(result[output]) for output in outputs]

    def synchronize(self) -> None:
        """``infer`` is synchronous: nothing to wait for."""


class TensorRTSession:
    """TensorRT: an engine built from the ONNX graph (fp32 or fp16), batch 1-64, run on torch CUDA buffers."""

    MAX_BATCH = 64

    def __init__(self, onnx: OnnxModel, options: InferenceOptions, threads: int):
        if onnx.task != "classification":
            raise ValueError(
                "the TensorRT runner takes classifiers only (a detector's outputs have data-dependent shapes); "
                "run detectors on onnxruntime:fp32 with --device cuda or on the torch paths"
            )
        trt = require("tensorrt")
        if not torch.cuda.is_available():
            raise ValueError("TensorRT needs a CUDA device")
        self.trt, self.device = trt, torch.device(options.device)
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(onnx.data):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ValueError(f"TensorRT could not parse the ONNX graph: {errors}")
        config = builder.create_builder_config()
        if options.dtype == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            rest = tuple(tensor.shape)[1:]
            profile.set_shape(tensor.name, (1, *rest), (1, *rest), (self.MAX_BATCH, *rest))
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise ValueError("TensorRT could not build an engine from the ONNX graph (see its log above)")
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
        self.context = self.engine.create_execution_context()
        self.outputs = list(onnx.outputs)
        self.stream = torch.cuda.Stream(self.device)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Copy the inputs to the GPU, run the engine on its stream, return the outputs on the host."""
        if any(len(array) > self.MAX_BATCH for array in feeds.values()):
            raise ValueError(f"the TensorRT engine takes batches of at most {self.MAX_BATCH}")
        keep = []
        with torch.cuda.stream(self.stream):
            for name, array in feeds.items():
                tensor = torch.from_numpy(array).to(self.device, non_blocking=True)
                self.context.set_input_shape(name, tuple(array.shape))
                self.context.set_tensor_address(name, tensor.data_ptr())
                keep.append(tensor)
            results = []
            for name in self.outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                out = torch.empty(shape, dtype=torch.float32, device=self.device)
                self.context.set_tensor_address(name, out.data_ptr())
                results.append(out)
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            host = [out.cpu() for out in results]
        return [tensor.numpy() for tensor in host]

    def synchronize(self) -> None:
        """``run`` copies its outputs to the host, which waits for the stream."""
        self.stream.synchronize()
