"""The registry: names, errors, recorded build arguments, and a tiny forward + backward of every registered model."""

import inspect
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.models import create_model, list_models, model_signature, model_task
from harness.models import registry as registry_module
from harness.models.registry import UnknownModelError, register_model

# Arguments that make each model cheap on a 2-core CPU (the registry's defaults are the papers' sizes).
LEAN_RCNN = {
    "min_size": 128,
    "max_size": 128,
    "rpn_pre_nms_top_n_train": 200,
    "rpn_pre_nms_top_n_test": 100,
    "rpn_post_nms_top_n_train": 100,
    "rpn_post_nms_top_n_test": 50,
    "box_batch_size_per_image": 32,
    "box_detections_per_img": 10,
}
TINY = {"fasterrcnn_vgg16": {**LEAN_RCNN, "representation_size": 256}}


def tiny_kwargs(name: str) -> dict:
    return TINY.get(name, LEAN_RCNN if model_task(name) == "detection" else {})


@pytest.fixture
def scratch_registry(monkeypatch):
    """A registry copy that a test may add names to; the real one is restored afterwards."""
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))


def _grad_nonzero(parameter: nn.Parameter) -> bool:
    return parameter.grad is not None and bool(parameter.grad.abs().sum() > 0)


@pytest.mark.parametrize("name", list_models())
def test_every_model_trains_and_predicts(name):
    torch.manual_seed(0)
    model = create_model(name, **tiny_kwargs(name))
    assert isinstance(model, nn.Module)
    assert model.registry_name == name
    assert json.loads(json.dumps(model.build_kwargs)) == model.build_kwargs
    model.train()
    if model_task(name) == "classification":
        x, y = torch.randn(2, 3, 64, 64), torch.tensor([0, 1])
        extra = (torch.tensor([[0.0], [1.0]]),) if "clinical" in inspect.signature(model.forward).parameters else ()
        logits = model(x, *extra)
        assert logits.shape == (2, 2)
        F.cross_entropy(logits, y).backward()
        parameters = [p for p in model.parameters() if p.dim() > 1]  # weights, in definition order
        assert _grad_nonzero(parameters[0]), "first layer gets no gradient"
        assert _grad_nonzero(parameters[-1]), "last layer gets no gradient"
        model.eval()
        with torch.no_grad():
            assert model(x, *extra).shape == (2, 2)
    else:
        images = [torch.randn(3, 128, 128), torch.randn(3, 128, 128)]
        targets = [
            {
                "boxes": torch.tensor([[20.0, 30.0, 44.0, 50.0], [70.0, 60.0, 90.0, 96.0]]),
                "labels": torch.tensor([1, 2]),
            },
            {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)},  # a node-free slice
        ]
        losses = model(images, targets)
        assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
        assert all(math.isfinite(v.item()) for v in losses.values())
        sum(losses.values()).backward()
        assert _grad_nonzero(model.rpn.head.cls_logits.weight)
        assert _grad_nonzero(model.roi_heads.box_predictor.cls_score.weight)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        model.eval()
        with torch.no_grad():
            outputs = model(images)
        assert len(outputs) == 2
        for out in outputs:
            n = len(out["scores"])
            assert out["boxes"].shape == (n, 4) and out["labels"].shape == (n,) and n <= 10


@pytest.mark.parametrize("name", list_models())
def test_builders_are_keyword_only_and_document_every_argument(name):
    signature = model_signature(name)
    builder = registry_module._REGISTRY[name].builder
    for parameter in signature.parameters.values():
        assert parameter.kind is parameter.KEYWORD_ONLY
        assert f"{parameter.name}:" in builder.__doc__, f"{name}: argument {parameter.name} is not documented"


def test_list_models_pattern_and_task():
    assert list_models("wu2020*") == ["wu2020", "wu2020_hybrid"]
    assert list_models(task="classification") == ["wu2020", "wu2020_hybrid"]
    assert list_models(task="detection") == [
        "fasterrcnn_lite_fpn",
        "fasterrcnn_mobilenet_v3_fpn",
        "fasterrcnn_resnet50_fpn",
        "fasterrcnn_vgg16",
    ]
    assert list_models("*fpn", task="detection") == [
        "fasterrcnn_lite_fpn",
        "fasterrcnn_mobilenet_v3_fpn",
        "fasterrcnn_resnet50_fpn",
    ]
    assert list_models("*vgg*", task="classification") == []
    assert list_models() == sorted(list_models(task="classification") + list_models(task="detection"))
    assert model_task("fasterrcnn_vgg16") == "detection"
    with pytest.raises(ValueError, match="task must be one of"):
        list_models(task="segmentation")


def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownModelError) as info:
        create_model("wu2020_hybird")
    assert "wu2020_hybrid" in str(info.value)
    assert isinstance(info.value, KeyError)
    with pytest.raises(KeyError, match="fasterrcnn_vgg16"):
        model_task("faster_rcnn_vgg16")


def test_unknown_argument_names_the_accepted_ones():
    with pytest.raises(TypeError, match="did you mean 'backbone_blocks'"):
        create_model("wu2020", backbone_block=4)


def test_duplicate_name_is_rejected(scratch_registry):
    @register_model("tiny_test_model", task="classification")
    def tiny_test_model(*, width: int = 4) -> nn.Module:
        return nn.Linear(width, 2)

    with pytest.raises(ValueError, match="already registered"):

        @register_model("tiny_test_model", task="classification")
        def other(*, width: int = 4) -> nn.Module:
            return nn.Linear(width, 2)

    with pytest.raises(ValueError, match="already registered"):
        register_model("wu2020", task="classification")(tiny_test_model)
    with pytest.raises(ValueError, match="task must be one of"):
        register_model("tiny_test_model_2", task="segmentation")


def test_build_kwargs_are_recorded_on_direct_calls_too(scratch_registry):
    @register_model("tiny_test_model", task="detection")
    def tiny_test_model(*, weights: Path | None = None, sizes: tuple = ((8, 16),), width: int = 4) -> nn.Module:
        return nn.Linear(width, 2)

    model = tiny_test_model(weights=Path("/tmp/w.pth"), width=3)  # called directly, not through create_model
    assert model.registry_name == "tiny_test_model"
    assert model.build_kwargs == {"weights": "/tmp/w.pth", "sizes": [[8, 16]], "width": 3}
    assert "tiny_test_model" in list_models(task="detection")
    with pytest.raises(TypeError, match="not JSON-able"):
        create_model("tiny_test_model", sizes=(object(),))


def test_rebuilding_from_build_kwargs_gives_the_same_architecture():
    model = create_model("wu2020_hybrid", backbone_blocks=4, width=32, hidden=(5, 3))
    again = create_model(model.registry_name, **json.loads(json.dumps(model.build_kwargs)))
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in again.state_dict().items()}
