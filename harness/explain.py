"""Attention maps of the classifiers (Wu 2020 eMethods 5, Grad-CAM) and drawings of detections, as PNG files.

Maps take one image (3, H, W) and return a numpy (H, W) array in [0, 1]. They run the model in eval mode (dropout
off, batch norm on its running statistics, which a forward pass in train mode would otherwise update) and give every
module its own training flag back afterwards. Gradients are taken with ``torch.autograd.grad`` with respect to a
fresh leaf copy of the image (or to the hooked activation), so the parameters' ``.grad`` is never touched. Both work
inside a caller's ``torch.no_grad()`` or ``torch.inference_mode()`` block (the image may be an inference tensor; the
model's parameters may not, i.e. the model must not have been built inside inference mode).

Figures use the object-oriented API (``Figure`` + ``FigureCanvasAgg``), never pyplot: no backend switch, no window,
no global figure registry (Ray workers and CI are headless).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

Score = Literal["logit", "probability"]


@contextmanager
def _explaining(model: nn.Module) -> Iterator[None]:
    """Eval mode with gradients on (even under no_grad / inference_mode); every module's training flag restored."""
    modes = {module: module.training for module in model.modules()}
    try:
        # inference_mode(False) turns grad mode on by itself today; enable_grad says so and does not rely on it
        with torch.inference_mode(False), torch.enable_grad():
            model.eval()
            yield
    finally:
        for module, training in modes.items():
            module.training = training  # per module: a frozen batch norm inside a training model stays frozen


def _leaf(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    if image.dim() != 3:
        raise ValueError(f"image must be (C, H, W), got {tuple(image.shape)}")
    param = next(model.parameters(), None)
    device, dtype = (param.device, param.dtype) if param is not None else (image.device, image.dtype)
    # clone(): a new leaf outside inference mode, so the caller's tensor (maybe an inference tensor) is left alone
    return image.detach().to(device=device, dtype=dtype).clone()[None].requires_grad_(True)


def _score(model: nn.Module, x: torch.Tensor, clinical: torch.Tensor | None, target: int, score: Score) -> torch.Tensor:
    if clinical is None:
        logits = model(x)
    else:
        logits = model(x, torch.as_tensor(clinical).detach().to(x.device, x.dtype).clone().reshape(1, -1))
    if not 0 <= target < logits.shape[1]:
        raise IndexError(f"target {target} out of range for {logits.shape[1]} outputs")
    return logits.softmax(dim=1)[0, target] if score == "probability" else logits[0, target]


def _normalise(values: torch.Tensor) -> np.ndarray:
    top = float(values.max())
    # divide by the maximum rather than min-max stretching: 0 keeps meaning "no attention"; an all-zero map stays zero
    return (values / top if top > 0 else torch.zeros_like(values)).cpu().numpy()


def gradient_saliency(
    model: nn.Module,
    image: torch.Tensor,
    clinical: torch.Tensor | None = None,
    target: int = 1,
    *,
    score: Score = "logit",
    normalize: bool = True,
) -> np.ndarray:
    """Wu 2020's attention map: the gradient of the predicted value with respect to the input image.

    The map is ``max over channels of |d score / d x|`` (the channels are three adjacent slices). Wu's "predicted
    value" is the probability, but the default score is the target's logit, as in Simonyan et al. 2014: with two
    classes d p1 / dx = p1 p0 d(z1 - z0) / dx, which vanishes numerically on confident slices and mixes in the other
    class's logit. ``score="probability"`` gives Wu's literal reading.

    Args:
        model: classifier returning logits (B, K); hybrids are called as ``model(x, clinical)``.
        image: one input (C, H, W); it is not modified.
        clinical: clinical variables of this image for a hybrid model (scalar or (F,)), else None.
        target: the class whose score is explained (1: node-positive).
        score: ``"logit"`` or ``"probability"`` (softmax).
        normalize: divide by the maximum (to [0, 1]); False returns the raw gradient magnitudes.

    Returns:
        Float array (H, W).
    """
    with _explaining(model):
        x = _leaf(model, image)
        (grad,) = torch.autograd.grad(_score(model, x, clinical, target, score), x)
    saliency = grad[0].abs().amax(dim=0).detach().float()
    return _normalise(saliency) if normalize else saliency.cpu().numpy()


def grad_cam(
    model: nn.Module,
    image: torch.Tensor,
    layer: nn.Module | None = None,
    clinical: torch.Tensor | None = None,
    target: int = 1,
    *,
    score: Score = "logit",
    normalize: bool = True,
) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017): ``ReLU(sum_k w_k A_k)``, ``w_k`` = spatial mean of ``d score / d A_k``.

    ``A`` is the output of ``layer``, captured by a forward hook that is removed afterwards, also on error. Its
    gradient comes from ``torch.autograd.grad`` rather than a backward hook: full backward hooks refuse in-place ops
    downstream, and autograd.grad leaves the parameters' ``.grad`` alone. The map is upsampled bilinearly to (H, W).
    For Wu 2020 (last conv -> global average pooling -> one linear layer) this equals CAM (Zhou et al. 2016).

    Args:
        model: classifier returning logits (B, K); hybrids are called as ``model(x, clinical)``.
        image: one input (C, H, W).
        layer: the convolution layer to explain; default ``model.cam_layer``.
        clinical: clinical variables for a hybrid model, else None.
        target: the class whose score is explained.
        score: ``"logit"`` (Grad-CAM's choice) or ``"probability"``.
        normalize: divide by the maximum (to [0, 1]).

    Returns:
        Float array (H, W).
    """
    layer = getattr(model, "cam_layer", None) if layer is None else layer
    if not isinstance(layer, nn.Module):
        raise ValueError(f"{type(model).__name__} has no cam_layer: pass layer=")
    captured: list[torch.Tensor] = []

    def keep(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        captured.append(output)
        return output.clone()  # later in-place ops (ReLU(inplace=True)) then change the clone, not A

    handle = layer.register_forward_hook(keep)
    try:
        with _explaining(model):
            x = _leaf(model, image)
            value = _score(model, x, clinical, target, score)
            if not captured:
                raise ValueError("the layer was not called in the forward pass")
            (grad,) = torch.autograd.grad(value, captured[-1])
    finally:
        handle.remove()
    activation = captured[-1].detach()
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activation).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam.float(), size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    return _normalise(cam) if normalize else cam.cpu().numpy()


def _numpy(values: Any) -> np.ndarray:
    tensor = torch.as_tensor(values).detach().cpu()
    return (tensor.float() if tensor.is_floating_point() else tensor).numpy()  # numpy has no bfloat16


def _slice(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """The grey image to show: the middle channel (the centre slice of three adjacent slices), or (H, W) as is."""
    array = _numpy(image).astype(np.float32)
    if array.ndim not in (2, 3):
        raise ValueError(f"image must be (C, H, W) or (H, W), got {array.shape}")
    return array[array.shape[0] // 2] if array.ndim == 3 else array


def _show(ax: Any, grey: np.ndarray, overlay: np.ndarray | None = None, label: str = "") -> None:
    h, w = grey.shape
    # extent (0, W, H, 0): pixel j spans [j, j + 1), the coordinates torchvision boxes use
    ax.imshow(grey, cmap="gray", extent=(0, w, h, 0), interpolation="nearest")
    if overlay is not None:
        if overlay.shape != grey.shape:
            raise ValueError(f"map shape {overlay.shape} differs from the image's {grey.shape}")
        ax.imshow(overlay, cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0, extent=(0, w, h, 0))
    ax.set_title(label, fontsize=9)
    ax.set_axis_off()


def _render_attention(
    image: torch.Tensor, saliency: np.ndarray | None, cam: np.ndarray | None, title: str, probability: float | None
) -> Figure:
    grey = _slice(image)
    panels = [(None, "centre slice")]
    panels += [(np.asarray(saliency), "saliency")] if saliency is not None else []
    panels += [(np.asarray(cam), "Grad-CAM")] if cam is not None else []
    fig = Figure(figsize=(3 * len(panels), 3.3), layout="constrained")
    FigureCanvasAgg(fig)
    for i, (overlay, label) in enumerate(panels):
        _show(fig.add_subplot(1, len(panels), i + 1), grey, overlay, label)
    text = ", ".join(filter(None, [title, None if probability is None else f"p = {probability:.3f}"]))
    if text:
        fig.suptitle(text, fontsize=10)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
    return path


def save_attention_png(
    image: torch.Tensor,
    path: str | Path,
    *,
    saliency: np.ndarray | None = None,
    cam: np.ndarray | None = None,
    title: str = "",
    probability: float | None = None,
) -> Path:
    """Write the centre slice and the given maps over it (jet, semi-transparent) side by side.

    Args:
        image: the model input (C, H, W); its middle channel is shown in grey.
        path: output PNG file (folders are created).
        saliency: optional (H, W) map in [0, 1] from ``gradient_saliency``.
        cam: optional (H, W) map in [0, 1] from ``grad_cam``.
        title: figure title.
        probability: optional predicted probability, shown after the title.

    Returns:
        The written path.
    """
    return _save(_render_attention(image, saliency, cam, title, probability), path)


def _name(label: int, class_names: Sequence[str] | None) -> str:
    return class_names[label] if class_names is not None and 0 <= label < len(class_names) else str(label)


def _render_detections(
    image: torch.Tensor | np.ndarray,
    prediction: Mapping[str, Any] | None,
    target: Mapping[str, Any] | None,
    class_names: Sequence[str] | None,
    score_threshold: float,
    title: str,
) -> Figure:
    grey = _slice(image)
    h, w = grey.shape
    fig = Figure(figsize=(5, 5 * h / w))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 0.93 if title else 1))
    _show(ax, grey, label=title)
    boxes: list[tuple[np.ndarray, str, str]] = []
    if target is not None:
        for box, label in zip(_numpy(target["boxes"]), _numpy(target["labels"]), strict=True):
            boxes.append((box, _name(int(label), class_names), "lime"))
    if prediction is not None:
        for box, label, s in zip(*(_numpy(prediction[k]) for k in ("boxes", "labels", "scores")), strict=True):
            if s >= score_threshold:
                boxes.append((box, f"{_name(int(label), class_names)} {s:.2f}", "red"))
    for (x0, y0, x1, y1), text, colour in boxes:
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=1.5))
        ax.text(x0, y0, text, color="white", fontsize=7, va="bottom", bbox={"facecolor": colour, "pad": 1, "lw": 0})
    return fig


def draw_detections(
    image: torch.Tensor | np.ndarray,
    path: str | Path,
    *,
    prediction: Mapping[str, Any] | None = None,
    target: Mapping[str, Any] | None = None,
    class_names: Sequence[str] | None = None,
    score_threshold: float = 0.5,
    title: str = "",
) -> Path:
    """Write the slice with ground-truth boxes (green, class name) and predicted boxes (red, "class score").

    Args:
        image: (C, H, W) (the middle channel is shown) or (H, W).
        path: output PNG file (folders are created).
        prediction: torchvision-style ``{"boxes": (N, 4) XYXY, "scores": (N,), "labels": (N,)}``.
        target: ground truth ``{"boxes", "labels"}``.
        class_names: names indexed by label (index 0 "background"); labels are printed as numbers without it.
        score_threshold: predicted boxes with a score at or above it are drawn.
        title: figure title.

    Returns:
        The written path.
    """
    return _save(_render_detections(image, prediction, target, class_names, score_threshold, title), path)
