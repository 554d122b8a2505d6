"""Inference with a registry model: fast paths as options, each checked against fp32 eager before it is trusted.

`InferenceOptions` names a path (device, dtype, channels_last, compile, batch); `Predictor` applies it to a model
from `harness.models` and runs it under ``torch.inference_mode``:

- classifiers (``wu2020``, ``wu2020_hybrid``): the whole forward under autocast (bf16 / fp16), channels_last weights
  and inputs, ``torch.compile`` of the whole model at a fixed input size; the output is the positive-class
  probability in float32.
- detectors (torchvision Faster R-CNN): only the dense parts run fast. The backbone, the RPN head's convolutions and
  the box head's fully connected layers run under autocast / channels_last (the backbone also compiled, at the
  fixed size set by the model's ``min_size`` / ``max_size``); their outputs are cast back to float32, so anchors,
  box decoding, NMS and RoIAlign stay eager fp32. Decoding boxes in bf16 would quantise coordinates to 1-2 px at
  256 px (8 mantissa bits), and whole torchvision detectors do not compile (data-dependent shapes, NMS).

- on any model: ``uint8`` host-to-device transfer (`Uint8Images`: quantised per image on the host, restored to
  float32 on the device) and, for classifiers on CUDA, ``cuda_graphs`` (`CudaGraphs`: the forward replayed as one
  graph per input shape).

- on another engine (``engine``: ONNX Runtime, OpenVINO, TensorRT; `harness.engines`): the model exported to ONNX
  and run there (`harness.predictors.make_predictor` returns a `harness.engines.runtimes.EnginePredictor`, called
  like `Predictor`).

A fast path is trusted only when its outputs equal fp32 eager outputs on the same images
(`harness.predictors.verify_fast_path`, `harness.equality.check_equal`). Weights for timing without training:
`harness.bench.weights`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn as nn

from harness.engines import ENGINE_DEVICES, ENGINE_DTYPES, ENGINES
from harness.fast_parts import CudaGraphs, FastPart, Uint8Images, _channels_last, _to_float32, fold_batch_norms
from harness.models import model_task

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
AMP_SCOPES = ("all", "box_head")


FLAGS = ("channels_last", "fuse", "compile", "uint8", "cuda_graphs")  # path parts after the dtype, in label order


@dataclass(frozen=True)
class InferenceOptions:
    """One inference path.

    Attributes:
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:1"``...).
        dtype: ``"fp32"``, ``"bf16"`` (autocast) or ``"fp16"`` (autocast, CUDA only).
        channels_last: convolution weights and inputs in NHWC memory format.
        fuse: fold every BatchNorm into the convolution before it (`fold_batch_norms`; the classifier, or the
            detector's backbone), as inference engines do: one pass over the feature map instead of two.
        compile: ``torch.compile`` the classifier, or the detector's backbone, at a fixed input size.
        batch: images per forward call.
        amp_scope: where a detector runs in ``dtype``: ``"all"`` (backbone, RPN head, box head) or ``"box_head"``
            (the box head's fully connected layers only: the backbone and RPN stay fp32, so the proposals are
            eager fp32's; the box head is most of a VGG16 detector's work). Classifiers ignore it.
        uint8: images cross to the device as uint8 (quantised per image on the host by `Predictor.prepare`, a
            quarter of float32's bytes) and are restored to float32 on the device (`Uint8Images`).
        cuda_graphs: replay the classifier's forward as a CUDA graph captured once per input shape (CUDA,
            classifiers only; not with ``compile``, whose ``mode="reduce-overhead"`` does the same).
        engine: ``"torch"``, or an inference engine that runs the model exported to ONNX (``"onnxruntime"``,
            ``"openvino"``, ``"tensorrt"``; `harness.engines`) at ``dtype``; engine paths take none of the torch flags.
    """

    device: str = "cpu"
    dtype: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    batch: int = 1
    fuse: bool = False
    amp_scope: str = "all"
    uint8: bool = False
    cuda_graphs: bool = False
    engine: str = "torch"

    def __post_init__(self) -> None:
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if self.engine != "torch":
            self._check_engine()  # an engine has precisions of its own, and no torch flags
            return
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {self.dtype!r}")
        if self.dtype == "fp16" and self.device == "cpu":
            raise ValueError("fp16 autocast is a GPU path; on the CPU use bf16")
        if self.amp_scope not in AMP_SCOPES:
            raise ValueError(f"amp_scope must be one of {AMP_SCOPES}, got {self.amp_scope!r}")
        if self.cuda_graphs and not self.device.startswith("cuda"):
            raise ValueError("cuda_graphs is a GPU path: use it with device 'cuda'")
        if self.cuda_graphs and self.compile:
            raise ValueError(
                "cuda_graphs and compile together: choose one (compile's reduce-overhead mode also uses CUDA graphs)"
            )

    def _check_engine(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}: choose from {', '.join(ENGINES)}")
        if self.dtype not in ENGINE_DTYPES[self.engine]:
            offered = ", ".join(f"{self.engine}:{d}" for d in ENGINE_DTYPES[self.engine])
            raise ValueError(f"the {self.engine} engine has no {self.dtype} path: use {offered}")
        kind = "cuda" if self.device.startswith("cuda") else "cpu"
        if kind not in ENGINE_DEVICES[self.engine]:
            where = " or ".join(ENGINE_DEVICES[self.engine])
            raise ValueError(f"the {self.engine} engine runs on {where}, not on {self.device!r}")
        flags = [flag for flag in FLAGS if getattr(self, flag)]
        if flags or self.amp_scope != "all":
            raise ValueError(
                f"{self.engine}:{self.dtype} is an engine path: torch options ({', '.join(flags) or 'amp_scope'}) "
                "do not apply to it"
            )

    @property
    def is_eager_fp32(self) -> bool:
        """True for the reference path (torch, fp32, contiguous, float32 input, no compile or graphs), whatever the
        batch."""
        return self.engine == "torch" and self.dtype == "fp32" and not any(getattr(self, flag) for flag in FLAGS)

    @property
    def label(self) -> str:
        """Short name of the path: ``eager-fp32``, ``bf16+channels_last+compile``, ``bf16@box_head``,
        ``openvino:bf16``..."""
        if self.engine != "torch":
            return f"{self.engine}:{self.dtype}"
        scope = f"@{self.amp_scope}" if self.dtype != "fp32" and self.amp_scope != "all" else ""
        parts = [self.dtype + scope] + [flag for flag in FLAGS if getattr(self, flag)]
        return "eager-fp32" if self.is_eager_fp32 else "+".join(parts)

    def baseline(self) -> InferenceOptions:
        """The fp32 eager path on the same device and batch: what this path is checked and timed against."""
        return replace(self, dtype="fp32", amp_scope="all", engine="torch", **dict.fromkeys(FLAGS, False))


def parse_paths(text: str, device: str = "cpu") -> InferenceOptions:
    """Options on ``device`` from a path label (``eager-fp32``, ``bf16``, ``bf16@box_head+compile``,
    ``fp32+channels_last``, ``bf16+cuda_graphs``, ``onnxruntime:fp32``, ``openvino:bf16``...)."""
    if text == "eager-fp32":
        return InferenceOptions(device=device)
    if ":" in text:
        engine, _, dtype = text.partition(":")
        return InferenceOptions(device=device, engine=engine, dtype=dtype or "fp32")
    parts = text.split("+")
    dtype, _, scope = parts[0].partition("@")
    has_dtype = dtype in DTYPES
    flags = set(parts[1:] if has_dtype else parts)
    unknown = flags - set(FLAGS)
    if unknown:
        raise ValueError(
            f"unknown path part(s) {sorted(unknown)} in {text!r}: use DTYPE[@box_head] followed by any of "
            + "".join(f"[+{flag}]" for flag in FLAGS)
        )
    return InferenceOptions(
        device=device,
        dtype=dtype if has_dtype else "fp32",
        amp_scope=scope or "all",
        **{flag: flag in flags for flag in FLAGS},
    )


class Predictor:
    """A registry model prepared for one inference path.

    Call it with a float32 image batch (B, 3, H, W) on the host, or what `prepare` made of one (and, for
    ``wu2020_hybrid``, the clinical variables): classifiers return the positive-class probability (B,), detectors
    torchvision's list of ``{"boxes", "labels", "scores"}``, all float32 on the host (so a call includes the
    device-to-host copy and, on CUDA, its sync).

    Args:
        model: a model from ``create_model`` (its weights are copied, not changed).
        options: the path.
    """

    def __init__(self, model: nn.Module, options: InferenceOptions):
        self.options = options
        self.name = getattr(model, "registry_name", type(model).__name__)
        self.task = model_task(self.name) if hasattr(model, "registry_name") else _guess_task(model)
        if options.cuda_graphs and self.task != "classification":
            raise ValueError(
                f"cuda_graphs: classifiers only ({self.name} is a detector: its shapes depend on the "
                "data, so it cannot be captured as one graph)"
            )
        self.device = torch.device(options.device)
        self.hybrid = self.task == "classification" and getattr(model, "clinical_features", None) is not None
        model = copy.deepcopy(model).eval().to(self.device)
        if options.fuse:
            if self.task == "detection":
                model.backbone = fold_batch_norms(model.backbone)
            else:
                model = fold_batch_norms(model)
        if options.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self._dtype = None if options.dtype == "fp32" else DTYPES[options.dtype]
        if self.task == "detection":
            self._prepare_detector()
            self._forward = self.model
        else:
            self._forward = torch.compile(self.model, dynamic=False) if options.compile else self.model
            self._classify = CudaGraphs(self._probabilities) if options.cuda_graphs else self._probabilities

    def _prepare_detector(self) -> None:
        m, o, device_type = self.model, self.options, self.device.type
        dense = self._dtype if o.amp_scope == "all" else None  # dtype of the backbone and RPN head
        if dense is not None or o.channels_last or o.compile:
            m.backbone = FastPart(m.backbone, device_type, dense, o.channels_last)
            if o.compile:  # the backbone only, at the transform's fixed size: RPN / NMS / RoIAlign stay eager
                m.backbone = torch.compile(m.backbone, dynamic=False)
        if dense is not None:
            m.rpn.head = FastPart(m.rpn.head, device_type, dense, o.channels_last)
        if self._dtype is not None:
            m.roi_heads.box_head = FastPart(m.roi_heads.box_head, device_type, self._dtype, False, cast_weights=True)

    def synchronize(self) -> None:
        """Wait for the device (a no-op on the CPU): call before reading a clock."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def prepare(self, images: torch.Tensor) -> torch.Tensor | Uint8Images:
        """The host side of a call, as a data loader's workers would hand it over: quantised to uint8 on the uint8
        path, in pinned memory on CUDA (so that the copy to the device is asynchronous)."""
        batch = Uint8Images.quantise(images) if self.options.uint8 else images
        return batch.pin_memory() if self.device.type == "cuda" else batch

    def _to_device(self, images: torch.Tensor | Uint8Images) -> torch.Tensor:
        if self.options.uint8 and isinstance(images, torch.Tensor) and images.device.type == "cpu":
            # A host batch not prepared beforehand: quantise now (and pay for it). A batch already on the GPU (the
            # end-to-end path preprocesses there) has no copy left to save.
            images = Uint8Images.quantise(images)
        if isinstance(images, Uint8Images):
            return images.to_float(self.device)
        return images.to(self.device, non_blocking=True)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor | Uint8Images, clinical: torch.Tensor | None = None) -> Any:
        images = self._to_device(images)
        if self.task == "detection":
            outputs = self._forward(list(images))
            return [{k: _to_float32(v).cpu() for k, v in out.items()} for out in outputs]
        if self.options.channels_last:
            images = _channels_last(images)
        if self.hybrid:
            if clinical is None:
                clinical = torch.zeros(images.shape[0], self.model.clinical_features)
            clinical = clinical.to(self.device, torch.float32, non_blocking=True)
        return self._classify(images, clinical if self.hybrid else None).cpu()

    def _probabilities(self, images: torch.Tensor, clinical: torch.Tensor | None) -> torch.Tensor:
        # No autocast weight cache under CUDA graph capture: cached casts would be freed after the capture.
        cache = not self.options.cuda_graphs
        with torch.autocast(
            self.device.type, dtype=self._dtype or torch.float32, enabled=self._dtype is not None, cache_enabled=cache
        ):
            logits = self._forward(images) if clinical is None else self._forward(images, clinical)
        return logits.float().softmax(dim=1)[:, -1]


def _guess_task(model: nn.Module) -> str:
    return "detection" if hasattr(model, "roi_heads") else "classification"
