"""Wu et al. 2020 (JAMA Netw Open, supplement eMethods 3-4, eFigure 2): the DL model and the hybrid model.

How the architecture is read from the supplement (the figure itself is not in the text we have; its caption is):

Sub-network 1 "shared the same architecture with the first three building blocks in ResNet18". In the ResNet paper and
in the next sentence of eMethods 3 ("residual building block"), a *building block* is one residual block, so the
default keeps ResNet18's stem and its first three residual blocks. At a 64x64x3 input (three adjacent slices):

====================  =====================================================  ==========
layer                 operation                                              output
====================  =====================================================  ==========
conv1, bn1, relu      7x7/2 conv, 64                                         32x32 @ 64
maxpool               3x3/2                                                  16x16 @ 64
layer1.0, layer1.1    2 x [3x3 conv 64, 3x3 conv 64] + identity shortcut     16x16 @ 64
layer2.0              [3x3/2 conv 128, 3x3 conv 128] + 1x1/2 conv shortcut    8x8 @ 128
====================  =====================================================  ==========

The caption's example "32x32 @ 64" is exactly ResNet18's stride-2 7x7 stem on a 64-pixel input, so the stem is
ResNet's unchanged (no small-input stem). The project reads "building blocks" as stages (stem + layer1 + layer2):
``backbone_blocks=4`` gives that; the output is the same 8x8 @ 128, with one more 128-channel block (+0.30 M params).

Sub-network 2, "six freshly added layers", in Keras' layer count (ZeroPadding2D and ReLU are layers there), from the
caption's list (7x7 and 1x1 convolutions, batch normalisation, zero padding, pooling) and eMethods 3 (sub-network 3
"following the global average pooling layer in sub-network 2", so GAP is the sixth):

1. ``pad``      zero padding 3          14x14 @ 128   (eMethods 2: zero padding and stride 1 keep the size)
2. ``conv7x7``  7x7 conv, stride 1       8x8 @ 128   (no bias: batch norm follows)
3. ``bn``       batch normalisation      8x8 @ 128
4. ``relu``     ReLU                     8x8 @ 128
5. ``conv1x1``  1x1 conv                 8x8 @ 128   the last convolution layer: DL-features (eMethods 5), Grad-CAM
6. ``gap``      global average pooling   128

Not in the text, so chosen here: the order of the 1x1 conv (last, so the maps that GAP averages and sub-network 3
weighs are the last conv layer's, as in class activation mapping) and the widths (``width=128``, ResNet18's layer2
width). Sub-network 3 is one fully connected layer, 128 -> 2 logits; softmax gives the LNM probability.

Hybrid model (sub-networks 1, 2 and 4): the GAP features concatenated with MR-LN status, then an MLP with hidden
layers 6, 4, 2 (ReLU) and the 2-logit output. Its L2 regularisation is weight decay in the optimiser: the trainer
gives ``mlp_parameters()`` their own parameter group.

Training stages (eMethods 4): stage 1 freezes ``model.subnetwork1`` (``requires_grad_(False)``) and trains
sub-networks 2-3; stage 2 trains everything.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence

import torch
import torch.nn as nn

from .backbones import check_backbone, classifier_trunk
from .registry import register_model
from .weights import resolve_weights, weights_source


def subnetwork2(in_channels: int, width: int = 128) -> nn.Sequential:
    """The six added layers: zero pad 3, 7x7 conv, batch norm, ReLU, 1x1 conv, global average pooling."""
    return nn.Sequential(
        OrderedDict(
            pad=nn.ZeroPad2d(3),
            conv7x7=nn.Conv2d(in_channels, width, kernel_size=7, bias=False),
            bn=nn.BatchNorm2d(width),
            relu=nn.ReLU(inplace=True),
            conv1x1=nn.Conv2d(width, width, kernel_size=1),
            gap=nn.AdaptiveAvgPool2d(1),
        )
    )


class _Wu2020Features(nn.Module):
    """Sub-networks 1 and 2, shared by the DL and the hybrid model (same attribute names, so weights transfer)."""

    def __init__(self, trunk: nn.Module, width: int):
        super().__init__()
        self.subnetwork1 = trunk
        self.subnetwork2 = subnetwork2(trunk.out_channels, width)
        self.feature_dim = width

    @property
    def cam_layer(self) -> nn.Module:
        """The last convolution layer (sub-network 2's 1x1 conv): hook it for Grad-CAM and DL-feature maps."""
        return self.subnetwork2.conv1x1

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled features, shape (B, ``feature_dim``)."""
        return torch.flatten(self.subnetwork2(self.subnetwork1(x)), 1)


class Wu2020(_Wu2020Features):
    """The DL model: sub-networks 1, 2 and 3. ``forward(x)`` with x (B, 3, 64, 64) returns logits (B, num_classes).

    Args:
        trunk: sub-network 1, with an ``out_channels`` attribute.
        width: channels of sub-network 2 (and the GAP feature size).
        num_classes: logits (2: LNM negative / positive).
        dropout: dropout before the output layer (not in the paper; 0 = none).
    """

    def __init__(self, trunk: nn.Module, width: int = 128, num_classes: int = 2, dropout: float = 0.0):
        super().__init__(trunk, width)
        self.dropout = nn.Dropout(dropout)
        self.subnetwork3 = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.subnetwork3(self.dropout(self.features(x)))

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probability of the positive class (the slice's LNM probability), shape (B,)."""
        return self(x).softmax(dim=1)[:, -1]


class Wu2020Hybrid(_Wu2020Features):
    """The hybrid model: sub-networks 1, 2 and 4. ``forward(x, clinical)`` returns logits (B, num_classes).

    Args:
        trunk: sub-network 1, with an ``out_channels`` attribute.
        width: channels of sub-network 2.
        clinical_features: clinical inputs concatenated to the GAP features (1: MR-LN status).
        hidden: the MLP's hidden layer sizes (eMethods 3: 6, 4, 2).
        num_classes: logits.
    """

    def __init__(
        self,
        trunk: nn.Module,
        width: int = 128,
        clinical_features: int = 1,
        hidden: Sequence[int] = (6, 4, 2),
        num_classes: int = 2,
    ):
        super().__init__(trunk, width)
        self.clinical_features = clinical_features
        layers: list[nn.Module] = []
        size = width + clinical_features
        for h in hidden:
            layers += [nn.Linear(size, h), nn.ReLU(inplace=True)]
            size = h
        layers.append(nn.Linear(size, num_classes))
        self.subnetwork4 = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, clinical: torch.Tensor) -> torch.Tensor:
        """Logits from images (B, 3, H, W) and clinical variables (B, clinical_features) or (B,) for one variable."""
        if clinical.dim() == 1:
            clinical = clinical.unsqueeze(1)
        if clinical.shape != (x.shape[0], self.clinical_features):
            raise ValueError(f"clinical must be ({x.shape[0]}, {self.clinical_features}), got {tuple(clinical.shape)}")
        features = self.features(x)
        return self.subnetwork4(torch.cat([features, clinical.to(features.dtype)], dim=1))

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, clinical: torch.Tensor) -> torch.Tensor:
        """Softmax probability of the positive class (the slice's H-score contribution), shape (B,)."""
        return self(x, clinical).softmax(dim=1)[:, -1]

    def mlp_parameters(self) -> Iterator[nn.Parameter]:
        """Sub-network 4's parameters: the ones the paper L2-regularises (give them their own weight decay)."""
        return self.subnetwork4.parameters()

    def load_dl_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load sub-networks 1 and 2 from a trained ``wu2020`` model's state_dict (the hybrid starts from it)."""
        shared = {k: v for k, v in state_dict.items() if k.startswith(("subnetwork1.", "subnetwork2."))}
        expected = {k for k in self.state_dict() if k.startswith(("subnetwork1.", "subnetwork2."))}
        if set(shared) != expected:
            missing, unexpected = sorted(expected - set(shared)), sorted(set(shared) - expected)
            raise ValueError(f"not a matching wu2020 state_dict: missing {missing[:4]}, unexpected {unexpected[:4]}")
        self.load_state_dict(shared, strict=False)


def _trunk(backbone: str, backbone_blocks: int | None, weights: str | os.PathLike | None) -> nn.Module:
    check_backbone(backbone)
    state = resolve_weights(backbone, weights)
    return classifier_trunk(backbone, backbone_blocks, state, weights_source(backbone, weights))


@register_model("wu2020", task="classification")
def wu2020(
    *,
    weights: str | os.PathLike | None = None,
    num_classes: int = 2,
    backbone: str = "resnet18",
    backbone_blocks: int | None = 3,
    width: int = 128,
    dropout: float = 0.0,
) -> Wu2020:
    """Wu 2020 DL model (eFigure 2, sub-networks 1-3) for 64x64 three-slice tumour crops.

    Args:
        weights: ImageNet weights for sub-network 1: None (random), ``"imagenet"`` (torchvision's file in the torch
            hub cache) or a path to a torchvision state_dict of ``backbone``. See ``harness.models.weights``.
        num_classes: output logits (2 in the paper; softmax gives the LNM probability).
        backbone: sub-network 1's source network: ``resnet18`` (paper), ``resnet34``, ``resnet50``,
            ``mobilenet_v3_small`` (light).
        backbone_blocks: building blocks kept after the stem: 3 = the paper's reading (see module docstring), 4 =
            stem + layer1 + layer2 (the stages), None = the whole network (full ResNet18 ends at 2x2 @ 512 at 64 px).
            Counted the same way on every backbone: 3 blocks of ResNet34/50 are their layer1 (16x16 at 64 px),
            of MobileNetV3-Small features[1:4] (8x8 @ 24).
        width: channels of sub-network 2's convolutions (and the feature size).
        dropout: dropout before sub-network 3 (not in the paper).
    """
    return Wu2020(_trunk(backbone, backbone_blocks, weights), width=width, num_classes=num_classes, dropout=dropout)


@register_model("wu2020_hybrid", task="classification")
def wu2020_hybrid(
    *,
    weights: str | os.PathLike | None = None,
    num_classes: int = 2,
    backbone: str = "resnet18",
    backbone_blocks: int | None = 3,
    width: int = 128,
    clinical_features: int = 1,
    hidden: Sequence[int] = (6, 4, 2),
) -> Wu2020Hybrid:
    """Wu 2020 hybrid model (sub-networks 1, 2, 4): image features + MR-LN status -> MLP (6, 4, 2) -> logits.

    ``forward(x, clinical)``: x (B, 3, 64, 64), clinical (B, clinical_features) float. To start from a trained DL
    model, as the paper does, call ``model.load_dl_state_dict(dl_model.state_dict())``.

    Args:
        weights: ImageNet weights for sub-network 1 (as in ``wu2020``).
        num_classes: output logits.
        backbone: as in ``wu2020``.
        backbone_blocks: as in ``wu2020``.
        width: as in ``wu2020``.
        clinical_features: number of clinical variables (1: MR-LN status).
        hidden: hidden layer sizes of sub-network 4.
    """
    trunk = _trunk(backbone, backbone_blocks, weights)
    return Wu2020Hybrid(trunk, width=width, clinical_features=clinical_features, hidden=hidden, num_classes=num_classes)
