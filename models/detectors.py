"""Faster R-CNN lymph-node detectors (torchvision's ``FasterRCNN``): Lu 2018's VGG16, two torchvision FPN variants
and a small from-scratch FPN for CPU runs (``fasterrcnn_lite_fpn``).

Shared conventions of the four builders:

- ``num_classes`` counts the background: 6 = background + Lu's five node locations (superior rectal artery,
  mesorectal, internal iliac, external iliac, inguinal); 2 = background + "node".
- Inputs are already z-scored slices, so ``image_mean=0`` and ``image_std=1`` by default: torchvision's
  ``GeneralizedRCNNTransform`` then leaves intensities alone instead of applying ImageNet statistics a second time.
  It still resizes so the short side is ``min_size`` (capped by ``max_size``): 512 by default, the slice size
  (256 for ``fasterrcnn_lite_fpn``).
- Anchors: ``anchor_sizes`` (pixels, side of the square of equal area) and ``aspect_ratios`` in torchvision's sense,
  height / width. A single-map model takes a flat tuple of sizes; an FPN model one tuple per level (or a flat tuple
  with one size per level). The torchvision defaults (32-512 px) are far larger than 5-30 mm nodes: a sweep can
  pass e.g. 8-64 px for 256-pixel slices.
- ``weights_backbone``: ImageNet weights for the backbone (None, ``"imagenet"`` from torchvision's cache, or a path;
  see ``harness.models.weights``; ``fasterrcnn_lite_fpn`` has none). As in torchvision, pretrained backbones get
  frozen batch norm and, by default, only their last 3 stages trainable; random backbones train everything, their
  batch norm included.
- Lean RoI settings (``rpn_*_nms_top_n_*``, ``box_batch_size_per_image``...) pass through to ``FasterRCNN``; small
  values make CPU runs bearable (docs/benchmarks.md).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from numbers import Real

import torch
import torch.nn as nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN, mobilenet_backbone, resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign, misc, roi_pool
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from .backbones import LiteConvNet, VGG16Conv5
from .registry import register_model
from .weights import load_into, resolve_weights, weights_source

Sizes = Sequence[float] | Sequence[Sequence[float]]
_ZERO = (0.0, 0.0, 0.0)
_ONE = (1.0, 1.0, 1.0)


def anchor_generator(anchor_sizes: Sizes, aspect_ratios: Sizes, num_levels: int, model: str) -> AnchorGenerator:
    """An ``AnchorGenerator`` for ``num_levels`` feature maps, with the shapes checked and explained.

    Args:
        anchor_sizes: flat sizes (one level: all on it; several levels: one per level) or one tuple per level.
        aspect_ratios: height / width; flat (same on every level) or one tuple per level.
        num_levels: feature maps the backbone returns.
        model: for error messages.
    """
    sizes = _per_level(anchor_sizes, num_levels, "anchor_sizes", model, flat_repeats=False)
    ratios = _per_level(aspect_ratios, num_levels, "aspect_ratios", model, flat_repeats=True)
    counts = {len(s) * len(r) for s, r in zip(sizes, ratios, strict=True)}
    if len(counts) > 1:  # one RPN head slides over every level, so each location needs the same number of anchors
        raise ValueError(f"{model}: every level needs the same number of sizes x ratios, got {sorted(counts)}")
    return AnchorGenerator(sizes, ratios)


def _per_level(
    value: Sizes, levels: int, name: str, model: str, *, flat_repeats: bool
) -> tuple[tuple[float, ...], ...]:
    def positive(items: Sequence) -> tuple[float, ...]:
        if not items or not all(isinstance(v, Real) and not isinstance(v, bool) and v > 0 for v in items):
            raise ValueError(f"{model}: {name} must hold positive numbers, got {value!r}")
        return tuple(items)

    if all(isinstance(v, Real) for v in value):  # flat
        flat = positive(value)
        if levels == 1 or flat_repeats:
            return (flat,) * levels
        if len(flat) == levels:
            return tuple((v,) for v in flat)
        raise ValueError(
            f"{model}: {name} needs one size per feature level ({levels} levels) or one tuple per level, got {value!r}"
        )
    if len(value) != levels:
        raise ValueError(f"{model}: {name} needs one tuple per feature level ({levels} levels), got {value!r}")
    return tuple(positive(level) for level in value)


# VGG16's ImageNet classifier[0] / classifier[3] are the box head's fc6 / fc7.
VGG16_FC_KEYS = {
    "classifier.0.weight": "fc6.weight",
    "classifier.0.bias": "fc6.bias",
    "classifier.3.weight": "fc7.weight",
    "classifier.3.bias": "fc7.bias",
}


class VGG16BoxHead(nn.Module):
    """fc6 and fc7 of VGG16 (two FC layers with ReLU and dropout), the Fast/Faster R-CNN VGG16 box head.

    With ``representation_size=4096`` the layers have the shapes of VGG16's ``classifier[0]`` / ``classifier[3]``
    (25088 -> 4096 -> 4096), so ImageNet weights load into them, as py-faster-rcnn initialises them.
    """

    def __init__(self, in_features: int, representation_size: int = 4096, dropout: float = 0.5):
        super().__init__()
        self.fc6 = nn.Linear(in_features, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.relu(self.fc6(x.flatten(start_dim=1))))
        return self.dropout(self.relu(self.fc7(x)))


class SingleMapRoIPool(nn.Module):
    """RoIPool (max pooling, the original Faster R-CNN) on the single feature map ``"0"``, for ``roi_op="pool"``."""

    def __init__(self, output_size: int = 7, spatial_scale: float = 1 / 16):
        super().__init__()
        self.output_size, self.spatial_scale = output_size, spatial_scale

    def forward(
        self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor], image_shapes: list
    ) -> torch.Tensor:
        return roi_pool(features["0"], proposals, self.output_size, self.spatial_scale)


def _trainable_layers(value: int | None, pretrained: bool, maximum: int, model: str) -> int:
    # torchvision's rule: a random backbone trains all its layers (freezing random filters helps nothing), a
    # pretrained one its last 3 unless told otherwise.
    if not pretrained:
        if value is not None and value != maximum:
            warnings.warn(
                f"{model}: trainable_backbone_layers={value} has no effect without weights_backbone; all "
                f"{maximum} are trained",
                stacklevel=3,
            )
        return maximum
    value = 3 if value is None else value
    if not 0 <= value <= maximum:
        raise ValueError(f"{model}: trainable_backbone_layers must be between 0 and {maximum}, got {value}")
    return value


@register_model("fasterrcnn_vgg16", task="detection")
def fasterrcnn_vgg16(
    *,
    num_classes: int = 6,
    weights_backbone: str | os.PathLike | None = None,
    trainable_backbone_layers: int | None = None,
    anchor_sizes: Sizes = (128, 256, 512),
    aspect_ratios: Sizes = (1.0, 2.0),
    min_size: int | Sequence[int] = 512,
    max_size: int = 512,
    image_mean: Sequence[float] = _ZERO,
    image_std: Sequence[float] = _ONE,
    roi_op: str = "align",
    representation_size: int = 4096,
    box_head_dropout: float = 0.5,
    rpn_pre_nms_top_n_train: int = 12000,
    rpn_pre_nms_top_n_test: int = 6000,
    rpn_post_nms_top_n_train: int = 2000,
    rpn_post_nms_top_n_test: int = 300,
    rpn_score_thresh: float = 0.0,
    box_batch_size_per_image: int = 128,
    box_detections_per_img: int = 100,
    box_score_thresh: float = 0.05,
) -> FasterRCNN:
    """Lu 2018's detector: Faster R-CNN with VGG16 conv5_3 features (512 channels, stride 16, one map).

    Paper settings (Table 2): anchor scales 8, 16, 32 on the 16-pixel base anchor = sizes 128, 256, 512 px; aspect
    ratios 1:1 and 2:1. Lu trained with py-faster-rcnn (Caffe, four-step alternating training), whose anchor ratio is
    height / width (``generate_anchors``: ``hs = ws * ratio``) and whose config lists it as a number, so "2:1" is
    read as ratio 2: anchors twice as tall as wide. torchvision's ``aspect_ratios`` is also height / width, hence
    ``(1.0, 2.0)``; pass ``(1.0, 0.5)`` for the wide reading or ``(0.5, 1.0, 2.0)`` for both. 6 anchors per location.
    The RPN and RoI defaults are py-faster-rcnn's (12000/2000 proposals before/after NMS in training, 6000/300 at
    test, 128 RoIs per image); its VGG16 model freezes conv1-conv2, here ``trainable_backbone_layers=3`` of 5 blocks.

    Args:
        num_classes: classes including background (6: five node locations; 2: single class).
        weights_backbone: VGG16 ImageNet weights (conv layers; also fc6/fc7 when ``representation_size=4096``).
        trainable_backbone_layers: trainable VGG16 conv blocks counted from conv5 (0-5); default 3 if pretrained.
        anchor_sizes: anchor sizes in pixels.
        aspect_ratios: anchor height / width ratios.
        min_size: short side after torchvision's resize (an int, or several for multi-scale training).
        max_size: long side limit.
        image_mean: subtracted by torchvision's transform (0: slices are z-scored already).
        image_std: divided by torchvision's transform (1: slices are z-scored already).
        roi_op: ``"align"`` (RoIAlign 7x7 via MultiScaleRoIAlign on map ``"0"``) or ``"pool"`` (RoIPool 7x7, 1/16).
        representation_size: width of fc6 / fc7 (4096 in VGG16; smaller for cheap CPU runs).
        box_head_dropout: dropout after fc6 and fc7 (VGG16's 0.5).
        rpn_pre_nms_top_n_train: proposals kept before NMS, training.
        rpn_pre_nms_top_n_test: proposals kept before NMS, inference.
        rpn_post_nms_top_n_train: proposals kept after NMS, training.
        rpn_post_nms_top_n_test: proposals kept after NMS, inference.
        rpn_score_thresh: minimum objectness of a proposal at inference.
        box_batch_size_per_image: RoIs sampled per image for the box head loss.
        box_detections_per_img: detections returned per image.
        box_score_thresh: minimum class score of a returned detection.
    """
    model_name, options = "fasterrcnn_vgg16", _fasterrcnn_options(locals())
    if roi_op not in ("align", "pool"):
        raise ValueError(f"{model_name}: roi_op must be 'align' or 'pool', got {roi_op!r}")
    state = resolve_weights("vgg16", weights_backbone)
    backbone = VGG16Conv5()
    head = VGG16BoxHead(backbone.out_channels * 7 * 7, representation_size, box_head_dropout)
    if state is not None:
        source = weights_source("vgg16", weights_backbone)
        load_into(backbone, state, source=source, key_map=lambda k: k.removeprefix("features."))
        if representation_size == 4096:  # VGG16's classifier[0] / [3] are fc6 / fc7
            load_into(head, state, source=source, key_map=VGG16_FC_KEYS.get)
    backbone.freeze_blocks(_trainable_layers(trainable_backbone_layers, state is not None, 5, model_name))
    predictor = FastRCNNPredictor(representation_size, num_classes)
    # py-faster-rcnn's initialisation of the new layers (Lu: "zero mean Gaussian ... 0.01 deviation"); torchvision's
    # RPN head already uses std 0.01.
    nn.init.normal_(predictor.cls_score.weight, std=0.01)
    nn.init.normal_(predictor.bbox_pred.weight, std=0.001)
    nn.init.zeros_(predictor.cls_score.bias)
    nn.init.zeros_(predictor.bbox_pred.bias)
    model = FasterRCNN(
        backbone,
        num_classes=None,  # given through box_predictor
        rpn_anchor_generator=anchor_generator(anchor_sizes, aspect_ratios, 1, model_name),
        box_roi_pool=MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=2),
        box_head=head,
        box_predictor=predictor,
        **options,
    )
    if roi_op == "pool":  # FasterRCNN's constructor only accepts MultiScaleRoIAlign; swap afterwards
        model.roi_heads.box_roi_pool = SingleMapRoIPool(7, 1 / backbone.stride)
    return model


@register_model("fasterrcnn_resnet50_fpn", task="detection")
def fasterrcnn_resnet50_fpn(
    *,
    num_classes: int = 6,
    weights_backbone: str | os.PathLike | None = None,
    trainable_backbone_layers: int | None = None,
    anchor_sizes: Sizes = ((32,), (64,), (128,), (256,), (512,)),
    aspect_ratios: Sizes = (0.5, 1.0, 2.0),
    min_size: int | Sequence[int] = 512,
    max_size: int = 512,
    image_mean: Sequence[float] = _ZERO,
    image_std: Sequence[float] = _ONE,
    rpn_pre_nms_top_n_train: int = 2000,
    rpn_pre_nms_top_n_test: int = 1000,
    rpn_post_nms_top_n_train: int = 2000,
    rpn_post_nms_top_n_test: int = 1000,
    rpn_score_thresh: float = 0.0,
    box_batch_size_per_image: int = 512,
    box_detections_per_img: int = 100,
    box_score_thresh: float = 0.05,
) -> FasterRCNN:
    """torchvision's ``fasterrcnn_resnet50_fpn`` (ResNet50 + FPN, 5 levels P2-P6, TwoMLPHead 1024), built without
    downloads. Defaults are torchvision's except the input size (512) and normalisation (none).

    Args:
        num_classes: classes including background.
        weights_backbone: ResNet50 ImageNet weights (``resnet50-0676ba61.pth`` as torchvision's builder uses).
        trainable_backbone_layers: trainable ResNet stages counted from layer4 (0-5); default 3 if pretrained.
        anchor_sizes: one tuple per level (5: strides 4, 8, 16, 32, 64), or one size per level.
        aspect_ratios: height / width, for every level or one tuple per level.
        min_size: as in ``fasterrcnn_vgg16``.
        max_size: as in ``fasterrcnn_vgg16``.
        image_mean: as in ``fasterrcnn_vgg16``.
        image_std: as in ``fasterrcnn_vgg16``.
        rpn_pre_nms_top_n_train: proposals kept per level before NMS, training.
        rpn_pre_nms_top_n_test: proposals kept per level before NMS, inference.
        rpn_post_nms_top_n_train: proposals kept after NMS, training.
        rpn_post_nms_top_n_test: proposals kept after NMS, inference.
        rpn_score_thresh: minimum objectness of a proposal at inference.
        box_batch_size_per_image: RoIs sampled per image for the box head loss.
        box_detections_per_img: detections returned per image.
        box_score_thresh: minimum class score of a returned detection.
    """
    model_name, options = "fasterrcnn_resnet50_fpn", _fasterrcnn_options(locals())
    state = resolve_weights("resnet50", weights_backbone)
    trainable = _trainable_layers(trainable_backbone_layers, state is not None, 5, model_name)
    norm_layer = misc.FrozenBatchNorm2d if state is not None else nn.BatchNorm2d
    backbone = resnet_fpn_backbone(
        backbone_name="resnet50", weights=None, norm_layer=norm_layer, trainable_layers=trainable
    )
    if state is not None:  # body = IntermediateLayerGetter over ResNet50 minus avgpool/fc: same keys
        load_into(backbone.body, state, source=weights_source("resnet50", weights_backbone))
    return FasterRCNN(
        backbone,
        num_classes=num_classes,
        rpn_anchor_generator=anchor_generator(anchor_sizes, aspect_ratios, 5, model_name),
        **options,
    )


@register_model("fasterrcnn_mobilenet_v3_fpn", task="detection")
def fasterrcnn_mobilenet_v3_fpn(
    *,
    num_classes: int = 6,
    weights_backbone: str | os.PathLike | None = None,
    trainable_backbone_layers: int | None = None,
    anchor_sizes: Sizes = ((32, 64, 128, 256, 512),) * 3,
    aspect_ratios: Sizes = (0.5, 1.0, 2.0),
    min_size: int | Sequence[int] = 512,
    max_size: int = 512,
    image_mean: Sequence[float] = _ZERO,
    image_std: Sequence[float] = _ONE,
    rpn_pre_nms_top_n_train: int = 2000,
    rpn_pre_nms_top_n_test: int = 1000,
    rpn_post_nms_top_n_train: int = 2000,
    rpn_post_nms_top_n_test: int = 1000,
    rpn_score_thresh: float = 0.05,
    box_batch_size_per_image: int = 512,
    box_detections_per_img: int = 100,
    box_score_thresh: float = 0.05,
    returned_layers: Sequence[int] = (4, 5),
) -> FasterRCNN:
    """torchvision's ``fasterrcnn_mobilenet_v3_large_fpn`` (MobileNetV3-Large + FPN), built without downloads.
    Defaults are torchvision's except the input size (512) and normalisation (none). torchvision's maps are coarse
    (stages 4 and 5 are both stride 32, plus a pooled stride-64 level); ``returned_layers=(2, 3, 4)`` gives strides
    8, 16, 32 (+64), for nodes of a few pixels.

    Args:
        num_classes: classes including background.
        weights_backbone: MobileNetV3-Large ImageNet weights (``mobilenet_v3_large-8738ca79.pth``, torchvision's).
        trainable_backbone_layers: trainable stages counted from the last (0-6); default 3 if pretrained.
        anchor_sizes: one tuple per level (3), or one size per level.
        aspect_ratios: height / width, for every level or one tuple per level.
        min_size: as in ``fasterrcnn_vgg16``.
        max_size: as in ``fasterrcnn_vgg16``.
        image_mean: as in ``fasterrcnn_vgg16``.
        image_std: as in ``fasterrcnn_vgg16``.
        rpn_pre_nms_top_n_train: proposals kept per level before NMS, training.
        rpn_pre_nms_top_n_test: proposals kept per level before NMS, inference.
        rpn_post_nms_top_n_train: proposals kept after NMS, training.
        rpn_post_nms_top_n_test: proposals kept after NMS, inference.
        rpn_score_thresh: minimum objectness of a proposal at inference (torchvision's 0.05 for this model).
        box_batch_size_per_image: RoIs sampled per image for the box head loss.
        box_detections_per_img: detections returned per image.
        box_score_thresh: minimum class score of a returned detection.
        returned_layers: MobileNetV3-Large stages that feed the FPN, of 1-5 (output strides 4, 8, 16, 32, 32, measured
            at 256 px); the FPN adds one pooled level above the last, so anchors need ``len + 1`` levels.
    """
    model_name, options = "fasterrcnn_mobilenet_v3_fpn", _fasterrcnn_options(locals())
    returned = sorted({int(layer) for layer in returned_layers})
    if not returned or returned[0] < 1 or returned[-1] > 5:
        raise ValueError(f"{model_name}: returned_layers must be stages within 1-5, got {list(returned_layers)}")
    state = resolve_weights("mobilenet_v3_large", weights_backbone)
    trainable = _trainable_layers(trainable_backbone_layers, state is not None, 6, model_name)
    norm_layer = misc.FrozenBatchNorm2d if state is not None else nn.BatchNorm2d
    backbone = mobilenet_backbone(
        backbone_name="mobilenet_v3_large",
        weights=None,
        fpn=True,
        norm_layer=norm_layer,
        trainable_layers=trainable,
        returned_layers=returned,
    )
    if state is not None:  # body = IntermediateLayerGetter over `features`: keys without the "features." prefix
        source = weights_source("mobilenet_v3_large", weights_backbone)
        load_into(backbone.body, state, source=source, key_map=lambda k: k.removeprefix("features."))
    return FasterRCNN(
        backbone,
        num_classes=num_classes,
        rpn_anchor_generator=anchor_generator(anchor_sizes, aspect_ratios, len(returned) + 1, model_name),
        **options,
    )


@register_model("fasterrcnn_lite_fpn", task="detection")
def fasterrcnn_lite_fpn(
    *,
    num_classes: int = 6,
    widths: Sequence[int] = (32, 64, 128, 256),
    depth: int = 2,
    returned_layers: Sequence[int] = (2, 3, 4),
    fpn_channels: int = 64,
    representation_size: int = 256,
    anchor_sizes: Sizes = ((4, 6, 9), (13, 18, 26), (36, 52, 72), (100, 140, 200)),
    aspect_ratios: Sizes = (1.0,),
    min_size: int | Sequence[int] = 256,
    max_size: int = 256,
    image_mean: Sequence[float] = _ZERO,
    image_std: Sequence[float] = _ONE,
    rpn_pre_nms_top_n_train: int = 600,
    rpn_pre_nms_top_n_test: int = 300,
    rpn_post_nms_top_n_train: int = 300,
    rpn_post_nms_top_n_test: int = 100,
    rpn_score_thresh: float = 0.0,
    rpn_fg_iou_thresh: float = 0.7,
    rpn_bg_iou_thresh: float = 0.3,
    box_fg_iou_thresh: float = 0.5,
    box_bg_iou_thresh: float = 0.5,
    box_batch_size_per_image: int = 128,
    box_detections_per_img: int = 100,
    box_score_thresh: float = 0.05,
) -> FasterRCNN:
    """Faster R-CNN on a small VGG-style backbone (``LiteConvNet``) with an FPN, trained from scratch on a CPU.

    For nodes of 4-20 pixels on 256-pixel slices: the FPN starts at stride 4 (``returned_layers=(2, 3, 4)`` = strides
    4, 8, 16, plus the pooled 32), anchors start at 4 pixels, and the box head is a narrow ``TwoMLPHead`` (RoIAlign
    7x7 over ``fpn_channels`` maps, then ``representation_size`` units). torchvision's level mapper sends every RoI
    smaller than about 112 pixels to the finest map. No ImageNet weights exist for this backbone; all layers train,
    BatchNorm included.

    Args:
        num_classes: classes including background.
        widths: backbone stage widths (stage ``i`` has stride ``2 ** i``).
        depth: 3x3 convs per backbone stage.
        returned_layers: backbone stages (1-based, of ``widths``) that feed the FPN.
        fpn_channels: FPN output channels (RPN and RoI heads work on these).
        representation_size: width of the box head's two fully connected layers.
        anchor_sizes: one tuple per level (``len(returned_layers) + 1``), or one size per level.
        aspect_ratios: height / width, for every level or one tuple per level.
        min_size: as in ``fasterrcnn_vgg16`` (default 256, the example's slice size).
        max_size: as in ``fasterrcnn_vgg16``.
        image_mean: as in ``fasterrcnn_vgg16``.
        image_std: as in ``fasterrcnn_vgg16``.
        rpn_pre_nms_top_n_train: proposals kept per level before NMS, training.
        rpn_pre_nms_top_n_test: proposals kept per level before NMS, inference.
        rpn_post_nms_top_n_train: proposals kept after NMS, training.
        rpn_post_nms_top_n_test: proposals kept after NMS, inference.
        rpn_score_thresh: minimum objectness of a proposal at inference.
        rpn_fg_iou_thresh: anchor IoU with a box for an RPN positive (each box also gets its best anchors).
        rpn_bg_iou_thresh: anchor IoU below which an anchor is an RPN negative.
        box_fg_iou_thresh: proposal IoU with a box for a box-head positive.
        box_bg_iou_thresh: proposal IoU below which a proposal is a box-head negative.
        box_batch_size_per_image: RoIs sampled per image for the box head loss.
        box_detections_per_img: detections returned per image.
        box_score_thresh: minimum class score of a returned detection.
    """
    model_name, options = "fasterrcnn_lite_fpn", _fasterrcnn_options(locals())
    body = LiteConvNet(widths, depth)
    returned = sorted({int(layer) for layer in returned_layers})
    if not returned or returned[0] < 1 or returned[-1] > len(body.widths):
        raise ValueError(
            f"{model_name}: returned_layers must be stages within 1-{len(body.widths)}, got {list(returned_layers)}"
        )
    backbone = BackboneWithFPN(
        body,
        return_layers={f"stage{layer}": str(k) for k, layer in enumerate(returned)},
        in_channels_list=[body.widths[layer - 1] for layer in returned],
        out_channels=fpn_channels,
        extra_blocks=LastLevelMaxPool(),
    )
    featmaps = [str(k) for k in range(len(returned))]
    return FasterRCNN(
        backbone,
        num_classes=None,  # given through box_predictor (FasterRCNN's own assumes a 1024-wide head)
        rpn_anchor_generator=anchor_generator(anchor_sizes, aspect_ratios, len(returned) + 1, model_name),
        box_roi_pool=MultiScaleRoIAlign(featmap_names=featmaps, output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(fpn_channels * 7 * 7, representation_size),
        box_predictor=FastRCNNPredictor(representation_size, num_classes),
        **options,
    )


# Builder arguments handed unchanged (but for types) to FasterRCNN / its GeneralizedRCNNTransform.
_PASSTHROUGH = (
    "min_size",
    "max_size",
    "image_mean",
    "image_std",
    "rpn_pre_nms_top_n_train",
    "rpn_pre_nms_top_n_test",
    "rpn_post_nms_top_n_train",
    "rpn_post_nms_top_n_test",
    "rpn_score_thresh",
    "box_batch_size_per_image",
    "box_detections_per_img",
    "box_score_thresh",
)


# Matching thresholds: only builders that expose them pass them on (the others keep torchvision's defaults).
_MATCHING = ("rpn_fg_iou_thresh", "rpn_bg_iou_thresh", "box_fg_iou_thresh", "box_bg_iou_thresh")


def _fasterrcnn_options(arguments: dict) -> dict:
    options = {key: arguments[key] for key in _PASSTHROUGH}
    options |= {key: arguments[key] for key in _MATCHING if key in arguments}
    if len(options["image_mean"]) != 3 or len(options["image_std"]) != 3:
        raise ValueError(f"image_mean and image_std need 3 values (one per input channel), got {options}")
    options["image_mean"], options["image_std"] = list(options["image_mean"]), list(options["image_std"])
    if not isinstance(options["min_size"], int):  # several sizes: torchvision picks one per training batch
        options["min_size"] = tuple(options["min_size"])
    return options
