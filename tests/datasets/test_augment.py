"""Tests for harness.datasets.augment: registry, shapes and keys, box geometry, fill, reproducibility."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou

from harness.datasets.augment import (
    UnknownAugmentationError,
    create_augmentation,
    list_augmentations,
    register_augmentation,
)

TASKS = ("classification", "detection")


def _cls_sample() -> dict:
    return {"image": torch.randn(3, 64, 64), "label": 1, "patient": "P001", "slice": 7}


def _det_sample(boxes: list[list[float]], labels: list[int], size: tuple[int, int] = (64, 80)) -> dict:
    """A detection sample whose image is -1 everywhere and +2 inside each box (so boxes can be recovered)."""
    image = torch.full((2, *size), -1.0)
    for x0, y0, x1, y1 in boxes:
        image[:, int(y0) : int(y1), int(x0) : int(x1)] = 2.0
    boxes_t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    target = {"boxes": boxes_t, "labels": torch.tensor(labels, dtype=torch.int64)}
    return {"image": image, "target": target, "patient": "P002", "position": 12.5}


def _sample(task: str) -> dict:
    return _cls_sample() if task == "classification" else _det_sample([[20, 16, 40, 36], [50, 30, 60, 44]], [1, 3])


def _bright_bbox(image: torch.Tensor) -> torch.Tensor:
    """XYXY box (pixel-edge convention) around the pixels above the midpoint of -1 and 2."""
    ys, xs = torch.nonzero(image[0] > 0.5, as_tuple=True)
    return torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("name", list_augmentations())
def test_every_set_keeps_shapes_dtypes_and_keys(name: str, task: str) -> None:
    sample = _sample(task)
    torch.manual_seed(0)
    out = create_augmentation(name, task)(sample)
    assert out.keys() == sample.keys()
    assert out["image"].shape == sample["image"].shape and out["image"].dtype == torch.float32
    assert type(out["image"]) is torch.Tensor  # plain tensors again, no tv_tensors leaking into collate
    for key in set(sample) - {"image", "target"}:
        assert out[key] == sample[key]
    if task == "detection":
        boxes, labels = out["target"]["boxes"], out["target"]["labels"]
        assert type(boxes) is torch.Tensor and boxes.dtype == torch.float32 and boxes.shape[1:] == (4,)
        assert type(labels) is torch.Tensor and labels.dtype == torch.int64 and labels.shape == (len(boxes),)


def test_registry_has_the_required_sets() -> None:
    assert {"none", "flip", "paper", "light"} <= set(list_augmentations())
    assert list_augmentations("p*") == ["paper"]


@pytest.mark.parametrize("task", TASKS)
def test_none_is_identity(task: str) -> None:
    sample = _sample(task)
    out = create_augmentation("none", task)(sample)
    assert torch.equal(out["image"], sample["image"])
    if task == "detection":
        assert torch.equal(out["target"]["boxes"], sample["target"]["boxes"])


def test_forced_flip_mirrors_image_and_boxes_exactly() -> None:
    sample = _det_sample([[5, 10, 25, 30], [50, 0, 80, 8]], [2, 4])
    sample["image"] = torch.randn(2, 64, 80)
    width = 80
    out = create_augmentation("flip", "detection", p=1.0)(sample)
    assert torch.equal(out["image"], sample["image"].flip(-1))
    expected = torch.tensor([[width - 25, 10, width - 5, 30], [0, 0, width - 50, 8]], dtype=torch.float32)
    assert torch.equal(out["target"]["boxes"], expected)
    assert out["target"]["labels"].tolist() == [2, 4]
    cls = _cls_sample()
    assert torch.equal(create_augmentation("flip", "classification", p=1.0)(cls)["image"], cls["image"].flip(-1))


def test_flip_p0_changes_nothing() -> None:
    sample = _sample("detection")
    out = create_augmentation("flip", "detection", p=0.0)(sample)
    assert torch.equal(out["image"], sample["image"])
    assert torch.equal(out["target"]["boxes"], sample["target"]["boxes"])


@pytest.mark.parametrize("name", ["paper", "light"])
def test_box_moves_with_the_image(name: str) -> None:
    sample = _det_sample([[24, 20, 44, 40]], [1])
    moved = 0
    for seed in range(8):
        torch.manual_seed(seed)
        out = create_augmentation(name, "detection")(sample)
        box = out["target"]["boxes"]
        assert box.shape == (1, 4) and out["target"]["labels"].tolist() == [1]
        # The bright square stays well inside the image, so its thresholded extent is where the box must be.
        assert box_iou(box, _bright_bbox(out["image"])).item() > 0.7, f"seed {seed}"
        moved += int(not torch.allclose(box, sample["target"]["boxes"], atol=1.0))
    assert moved >= 4  # the check above is vacuous if the transform never moves anything


def test_box_pushed_out_of_the_image_is_dropped_with_its_label() -> None:
    # A 4 px box in the top-left corner and one in the middle; pure shifts of up to ±50 %.
    sample = _det_sample([[0, 0, 4, 4], [30, 24, 46, 40]], [5, 7])
    aug = create_augmentation("paper", "detection", shift=0.5, zoom=(1.0, 1.0), rotation=0.0, elastic_p=0.0, flip_p=0)
    dropped = 0
    for seed in range(20):
        torch.manual_seed(seed)
        target = aug(sample)["target"]
        assert len(target["boxes"]) == len(target["labels"])
        assert (target["boxes"][:, 2] > target["boxes"][:, 0]).all() and (
            target["boxes"][:, 3] > target["boxes"][:, 1]
        ).all()
        assert (target["boxes"] >= 0).all() and (target["boxes"][:, [0, 2]] <= 80).all()
        if len(target["labels"]) < 2:
            assert target["labels"].tolist() in ([7], [])
            dropped += 1
    assert dropped >= 5  # half the shifts move the corner box left or up by more than 4 px


@pytest.mark.parametrize("name", list_augmentations())
def test_no_boxes_works(name: str) -> None:
    torch.manual_seed(1)
    target = create_augmentation(name, "detection")(_det_sample([], []))["target"]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64


@pytest.mark.parametrize("task", TASKS)
def test_reproducible_with_manual_seed(task: str) -> None:
    aug, sample = create_augmentation("paper", task), _sample(task)
    outs = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        outs.append(aug(sample))
    assert torch.equal(outs[0]["image"], outs[1]["image"])
    assert not torch.equal(outs[0]["image"], outs[2]["image"])
    if task == "detection":
        assert torch.equal(outs[0]["target"]["boxes"], outs[1]["target"]["boxes"])


def test_shifted_in_areas_take_the_channel_minimum() -> None:
    # A constant image per channel stays constant only if the fill is that constant (0 would show at the borders).
    image = torch.stack([torch.full((64, 64), -1.5), torch.full((64, 64), -0.7), torch.full((64, 64), 0.4)])
    aug = create_augmentation("paper", "classification", shift=0.3, elastic_p=1.0)
    for seed in range(3):
        torch.manual_seed(seed)
        assert torch.allclose(aug({"image": image})["image"], image, atol=1e-5)


def test_registry_errors() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_augmentation("paper")(lambda task: lambda s: s)
    with pytest.raises(KeyError, match=r"Did you mean 'paper'.*Registered: .*flip") as info:
        create_augmentation("papr", "detection")
    assert isinstance(info.value, UnknownAugmentationError) and isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match="unknown task 'segmentation'.*classification, detection"):
        create_augmentation("flip", "segmentation")
    with pytest.raises(TypeError, match=r"unknown parameter\(s\) rotaton, zoom.*takes: p"):
        create_augmentation("flip", "classification", rotaton=5, zoom=1.1)


def test_per_box_target_keys_are_rejected_rather_than_desynchronised() -> None:
    sample = _sample("detection")
    sample["target"]["area"] = torch.tensor([400.0, 140.0])
    with pytest.raises(ValueError, match="area"):
        create_augmentation("paper", "detection")(sample)
