"""Attention maps against independent computations (CAM, finite differences) and the PNG writers."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.explain import (
    _render_attention,
    _render_detections,
    draw_detections,
    grad_cam,
    gradient_saliency,
    save_attention_png,
)
from harness.models import create_model

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def wu() -> nn.Module:
    torch.manual_seed(0)
    return create_model("wu2020", width=16, dropout=0.0).eval()


def _image(seed: int = 1, size: int = 64) -> torch.Tensor:
    return torch.randn(3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("target", [0, 1])
def test_grad_cam_equals_cam_for_gap_then_linear(wu, target):
    # CAM (Zhou et al. 2016): ReLU(sum_k W[target, k] A_k); Grad-CAM's weights are W[target, k] / (h * w) here
    image = _image()
    captured = []
    handle = wu.cam_layer.register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
    with torch.no_grad():
        wu(image[None])
    handle.remove()
    activation = captured[0][0]  # (16, 8, 8)
    weight = wu.subnetwork3.weight[target].detach()
    cam = F.relu(torch.einsum("k,khw->hw", weight, activation)) / activation[0].numel()
    expected = F.interpolate(cam[None, None], size=(64, 64), mode="bilinear", align_corners=False)[0, 0].numpy()
    assert expected.max() > 0

    raw = grad_cam(wu, image, target=target, normalize=False)
    np.testing.assert_allclose(raw, expected, rtol=1e-4, atol=1e-7)
    normalised = grad_cam(wu, image, target=target)
    assert normalised.shape == (64, 64) and normalised.dtype == np.float32
    np.testing.assert_allclose(normalised, expected / expected.max(), atol=1e-5)
    assert normalised.min() >= 0 and normalised.max() == pytest.approx(1.0)


def test_grad_cam_with_spatially_varying_gradients():
    # conv -> ReLU -> flatten -> linear: d logit / d A = the linear weight row, reshaped to A's shape, where A > 0
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
    head = nn.Linear(4 * 5 * 5, 2)
    model = nn.Sequential(conv, nn.ReLU(inplace=True), nn.Flatten(), head).double()
    image = torch.randn(3, 10, 10, dtype=torch.float64)
    with torch.no_grad():
        activation = conv(image[None])[0]
    weights = (head.weight[0].detach().reshape(4, 5, 5) * (activation > 0)).mean(dim=(1, 2))
    cam = F.relu(torch.einsum("k,khw->hw", weights, activation))
    expected = F.interpolate(cam[None, None], size=(10, 10), mode="bilinear", align_corners=False)[0, 0].numpy()
    assert expected.max() > 0
    np.testing.assert_allclose(grad_cam(model, image, layer=conv, target=0, normalize=False), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="cam_layer"):
        grad_cam(model, image)


@pytest.mark.parametrize("score", ["logit", "probability"])
def test_saliency_matches_finite_differences(score):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).double()
    image = torch.randn(3, 6, 6, dtype=torch.float64)

    @torch.no_grad()
    def value(x: torch.Tensor) -> float:
        logits = model(x[None])[0]
        return float(logits.softmax(0)[1] if score == "probability" else logits[1])

    raw = gradient_saliency(model, image, target=1, score=score, normalize=False)
    eps = 1e-6
    for i, j in [(0, 0), (2, 3), (5, 5), (4, 1)]:
        derivatives = []
        for c in range(3):
            step = torch.zeros_like(image)
            step[c, i, j] = eps
            derivatives.append(abs(value(image + step) - value(image - step)) / (2 * eps))
        assert raw[i, j] == pytest.approx(max(derivatives), rel=1e-6)
    np.testing.assert_allclose(gradient_saliency(model, image, score=score), raw / raw.max())
    assert not image.requires_grad


def test_no_side_effects_on_the_model(wu):  # 32 px inputs (4x4 maps) keep these tests fast
    wu.train()
    wu.subnetwork2.bn.eval()  # a frozen batch norm inside a training model must stay frozen
    state = {k: v.clone() for k, v in wu.state_dict().items()}
    reference = grad_cam(wu, _image(size=32))
    with torch.inference_mode():
        image = _image(size=32)  # an inference tensor
        maps = [grad_cam(wu, image), gradient_saliency(wu, image)]
    with torch.no_grad():
        maps.append(grad_cam(wu, image))
    np.testing.assert_allclose(maps[0], reference, atol=1e-6)
    np.testing.assert_allclose(maps[2], reference, atol=1e-6)
    with pytest.raises(IndexError):
        grad_cam(wu, image, target=5)
    with pytest.raises(IndexError):
        gradient_saliency(wu, image, target=5)

    assert not wu.cam_layer._forward_hooks and not wu.cam_layer._backward_hooks
    assert wu.training and not wu.subnetwork2.bn.training and wu.subnetwork1.training
    # eval mode inside: no batch-norm running-stat update in the training sub-network 1
    assert all(torch.equal(v, state[k]) for k, v in wu.state_dict().items())
    assert all(p.grad is None for p in wu.parameters())


def test_hybrid_maps_use_the_clinical_input():
    torch.manual_seed(0)
    model = create_model("wu2020_hybrid", width=16).eval()
    image = _image(size=32)
    maps = {}
    for value in (-5.0, 5.0):
        clinical = torch.tensor([value])
        x = image.clone()[None].requires_grad_(True)
        (grad,) = torch.autograd.grad(model(x, clinical[None])[0, 1], x)
        saliency = gradient_saliency(model, image, clinical=clinical)
        np.testing.assert_allclose(saliency, (grad[0].abs().amax(0) / grad.abs().max()).numpy(), atol=1e-6)
        cam = grad_cam(model, image, clinical=clinical, target=1, normalize=False)
        assert cam.shape == (32, 32) and np.isfinite(cam).all()
        maps[value] = (saliency, cam)
    assert not np.allclose(maps[-5.0][0], maps[5.0][0]) or not np.allclose(maps[-5.0][1], maps[5.0][1])
    with pytest.raises(TypeError):  # a hybrid without its clinical input fails loudly
        gradient_saliency(model, image)


def _check_png(path, tmp_path) -> np.ndarray:
    assert path.is_file() and path.is_relative_to(tmp_path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 0 and pixels.shape[1] > 0
    return pixels


def test_save_attention_png(wu, tmp_path):
    image = _image()
    saliency, cam = gradient_saliency(wu, image), grad_cam(wu, image)
    path = save_attention_png(image, tmp_path / "a" / "b" / "att.png", saliency=saliency, cam=cam, probability=0.7)
    _check_png(path, tmp_path)
    fig = _render_attention(image, saliency, cam, "patient", 0.7)
    assert len(fig.axes) == 3 and fig.get_suptitle() == "patient, p = 0.700"
    plain = _render_attention(image, None, None, "", None)
    assert len(plain.axes) == 1 and plain.get_suptitle() == ""
    with pytest.raises(ValueError, match="shape"):
        _render_attention(image, saliency[:32], None, "", None)


def _rgba(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)


def test_draw_detections_draws_boxes_where_they_are(tmp_path):
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0)) * 0.2  # dark: colours stand out
    names = ["background", "superior_rectal", "mesorectal"]
    box = torch.tensor([[10.0, 12.0, 40.0, 30.0]])
    target = {"boxes": box, "labels": torch.tensor([2])}
    strong = {"boxes": box + 10, "labels": torch.tensor([1]), "scores": torch.tensor([0.9])}
    weak = {**strong, "scores": torch.tensor([0.3])}

    base_fig = _render_detections(image, None, None, names, 0.5, "")
    base = _rgba(base_fig)
    assert np.array_equal(_rgba(_render_detections(image, weak, None, names, 0.5, "")), base)  # below threshold

    gt_fig = _render_detections(image, None, target, names, 0.5, "")
    changed = np.abs(_rgba(gt_fig) - base).sum(-1) > 0
    assert [t.get_text() for t in gt_fig.axes[0].texts] == ["mesorectal"]
    # the box (data coordinates) in buffer pixels: display y grows upwards, buffer rows downwards
    (left, top), (right, bottom) = gt_fig.axes[0].transData.transform([[10, 12], [40, 30]])
    row = base.shape[0] - int((top + bottom) / 2)
    assert changed[row, int(left) - 1 : int(left) + 2].any()  # the left edge, where the box is
    assert not changed[row, int((left + right) / 2)]  # unfilled inside
    assert not changed[-5:, -5:].any()  # far from the box
    drawn = _rgba(gt_fig)[changed]
    assert drawn[:, 1].mean() > drawn[:, 0].mean()  # green ground truth

    pred_fig = _render_detections(image, strong, None, names, 0.5, "")
    drawn = _rgba(pred_fig)[np.abs(_rgba(pred_fig) - base).sum(-1) > 0]
    assert drawn[:, 0].mean() > drawn[:, 1].mean()  # red prediction
    assert [t.get_text() for t in pred_fig.axes[0].texts] == ["superior_rectal 0.90"]

    path = draw_detections(image[1], tmp_path / "d" / "det.png", prediction=strong, target=target, class_names=names)
    _check_png(path, tmp_path)
