"""Feature extractors cut from torchvision models, under torchvision's parameter names.

Keeping torchvision's attribute names (``conv1``, ``layer1.0.conv1``, ``features.3.block...``) means an ImageNet
state_dict loads into a truncated network by plain key matching (``weights.load_into``), with no renaming table.
"""

from __future__ import annotations

import difflib
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn as nn
import torchvision

from .weights import StateDict, load_into

# Classifier trunks (sub-network 1 of Wu 2020 and its sweep variants). "Building blocks" are counted after the stem:
# ResNet residual blocks (BasicBlock / Bottleneck), MobileNetV3 entries of `features` after features[0].
CLASSIFIER_BACKBONES = ("resnet18", "resnet34", "resnet50", "mobilenet_v3_small")


def check_backbone(backbone: str) -> None:
    """Raise a ValueError naming the allowed backbones (and the closest one) for an unknown name."""
    if backbone not in CLASSIFIER_BACKBONES:
        close = difflib.get_close_matches(backbone, CLASSIFIER_BACKBONES, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown backbone {backbone!r}{hint}; choose one of {', '.join(CLASSIFIER_BACKBONES)}")


class ResNetTrunk(nn.Module):
    """A torchvision ResNet's stem and its first ``blocks`` residual building blocks.

    The attributes are ResNet's own (``conv1``, ``bn1``, ``relu``, ``maxpool``, ``layer1``...), with the last kept
    ``layerN`` holding only the blocks kept, so ``state_dict()`` keys are a subset of torchvision's.

    Args:
        resnet: a torchvision ``ResNet`` (its modules are reused, not copied).
        blocks: how many residual blocks to keep after the stem; None keeps all (the whole network minus ``fc``).
    """

    def __init__(self, resnet: torchvision.models.ResNet, blocks: int | None):
        super().__init__()
        layers = [getattr(resnet, f"layer{i}") for i in range(1, 5)]
        total = sum(len(layer) for layer in layers)
        if blocks is not None and not 1 <= blocks <= total:
            raise ValueError(f"backbone_blocks must be between 1 and {total} for this ResNet (or None for all)")
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        left = total if blocks is None else blocks
        self.layer_names: list[str] = []
        self.stride = 4  # conv1 (stride 2) and maxpool (stride 2)
        for index, layer in enumerate(layers, start=1):
            if left == 0:
                break
            kept = list(layer)[: min(left, len(layer))]
            setattr(self, f"layer{index}", nn.Sequential(*kept))
            self.layer_names.append(f"layer{index}")
            self.stride *= 2 if index > 1 else 1  # layer2..4 start with a stride-2 block
            left -= len(kept)
        last = kept[-1]
        self.out_channels: int = (last.bn3 if hasattr(last, "bn3") else last.bn2).num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.layer_names:
            x = getattr(self, name)(x)
        return x


class FeaturesTrunk(nn.Module):
    """The stem ``features[0]`` and the next ``blocks`` entries of a torchvision MobileNet's ``features``.

    Args:
        features: the model's ``features`` Sequential.
        blocks: how many entries to keep after the stem; None keeps all (the last is MobileNetV3's 1x1 conv).
    """

    def __init__(self, features: nn.Sequential, blocks: int | None):
        super().__init__()
        total = len(features) - 1
        if blocks is not None and not 1 <= blocks <= total:
            raise ValueError(f"backbone_blocks must be between 1 and {total} for this backbone (or None for all)")
        self.features = features[: 1 + (total if blocks is None else blocks)]
        self.out_channels: int = self.features[-1].out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def classifier_trunk(backbone: str, blocks: int | None, state: StateDict | None, source: str) -> nn.Module:
    """Build a classifier trunk and, when ``state`` is given, load its ImageNet part.

    Args:
        backbone: one of ``CLASSIFIER_BACKBONES``.
        blocks: building blocks after the stem (None: all).
        state: the full torchvision state_dict of ``backbone`` (from ``resolve_weights``), or None.
        source: where ``state`` comes from, for error messages.

    Returns:
        A ``ResNetTrunk`` or ``FeaturesTrunk`` with an ``out_channels`` attribute.
    """
    check_backbone(backbone)
    model = torchvision.models.get_model(backbone, weights=None)  # never a Weights enum: that would download
    trunk = ResNetTrunk(model, blocks) if backbone.startswith("resnet") else FeaturesTrunk(model.features, blocks)
    if state is not None:
        load_into(trunk, state, source=source)
    return trunk


# --- Detection: VGG16 up to conv5_3 (Lu 2018) ----------------------------------------------------------------------

# torchvision's VGG16 configuration "D" without the last max-pool: features[:30] ends with conv5_3 + ReLU, so the
# map has stride 16 (four pools). Layer indices equal torchvision's, so `features.N.*` ImageNet keys load by name.
_VGG16_CONV5 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# First index of each conv block in features[:30]: conv1_1 = 0, conv2_1 = 5, conv3_1 = 10, conv4_1 = 17, conv5_1 = 24.
VGG16_BLOCK_STARTS = (0, 5, 10, 17, 24)


class VGG16Conv5(nn.Sequential):
    """VGG16 ``features[:30]`` (conv1_1 ... conv5_3 + ReLU): 512 channels at stride 16, as in Faster R-CNN.

    Built layer by layer rather than from ``torchvision.models.vgg16()``, whose 120 M-parameter classifier would be
    allocated and initialised only to be thrown away. Initialisation follows torchvision's VGG.
    """

    out_channels = 512
    stride = 16

    def __init__(self) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels = 3
        for item in _VGG16_CONV5:
            if item == "M":
                layers[str(len(layers))] = nn.MaxPool2d(kernel_size=2, stride=2)
            else:
                conv = nn.Conv2d(channels, int(item), kernel_size=3, padding=1)
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(conv.bias)
                layers[str(len(layers))] = conv
                layers[str(len(layers))] = nn.ReLU(inplace=True)
                channels = int(item)
        super().__init__(layers)

    def freeze_blocks(self, trainable_blocks: int) -> None:
        """Freeze all but the last ``trainable_blocks`` of the five conv blocks (py-faster-rcnn freezes conv1-2)."""
        if not 0 <= trainable_blocks <= 5:
            raise ValueError(f"trainable_backbone_layers must be between 0 and 5 for VGG16, got {trainable_blocks}")
        first_trainable = VGG16_BLOCK_STARTS[5 - trainable_blocks] if trainable_blocks else len(self)
        for index, layer in enumerate(self):
            layer.requires_grad_(index >= first_trainable)


# --- Detection: a small VGG-style network trained from scratch (CPU examples) --------------------------------------


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class LiteConvNet(nn.Sequential):
    """A small VGG-style network for detectors trained from scratch: 3x3 conv + BatchNorm + ReLU, no pretraining.

    A stem at full resolution, then one stage per entry of ``widths``, each opening with a stride-2 conv and
    followed by ``depth - 1`` more convs, so stage ``i`` (``stage1``...) has stride ``2 ** i``. Lymph nodes of a few
    pixels need a fine map (stride 4 or 8) more than depth; ImageNet backbones spend their capacity at strides 16-32
    and, from scratch on a few hundred slices, train slowly (BatchNorm is trained, never frozen, here).

    Args:
        widths: output channels of the stages.
        depth: convs per stage.
        stem_width: output channels of the stem.
        in_channels: input channels.
    """

    def __init__(
        self, widths: Sequence[int] = (32, 64, 128, 256), depth: int = 2, stem_width: int = 16, in_channels: int = 3
    ):
        if not widths or depth < 1 or stem_width < 1 or any(int(w) < 1 for w in widths):
            raise ValueError(
                f"LiteConvNet needs positive widths, depth and stem_width, got {widths}, {depth}, {stem_width}"
            )
        layers: OrderedDict[str, nn.Module] = OrderedDict(stem=_conv_bn_relu(in_channels, stem_width))
        channels = stem_width
        for index, width in enumerate(widths, start=1):
            convs = [_conv_bn_relu(channels, int(width), stride=2)]
            convs += [_conv_bn_relu(int(width), int(width)) for _ in range(depth - 1)]
            layers[f"stage{index}"] = nn.Sequential(*convs)
            channels = int(width)
        super().__init__(layers)
        self.widths = tuple(int(w) for w in widths)
