"""The second report's PyTorch CNNs: a classic conv + fully-connected net and its variants.

    [Conv32 Conv32] Pool [Conv64 Conv64] Pool [Conv128 Conv128] Pool  (3x3 'same', ReLU)
    then either Flatten - FC 512 - FC K         (classic: 82% there, + dropout 84%)
    or          global average pooling - FC K   (GAP: 87% there, + dropout 86%)
Batch-norm variants insert BatchNorm after every convolution. Also the report's
ResNet-style net (64-64-maxpool-128-128-avgpool-256-256-GAP-FC, residual pairs) and an
AlexNet-style net sized for small images.
"""

from __future__ import annotations

import torch
from torch import nn

from nnlab.models.layers import check_image_size, conv_bn_relu, flat_features
from nnlab.models.registry import register

RECIPE = {"optim.name": "adam", "optim.lr": 1e-3, "data.batch_size": 128, "train.epochs": 30,
          "schedule.name": "cosine"}


class ClassicCNN(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int],
                 dropout: float = 0.0, gap: bool = False, batch_norm: bool = False,
                 widths: tuple[int, int, int] = (32, 64, 128), hidden: int = 512):
        super().__init__()
        check_image_size("classic-cnn", image_size, 8)
        layers: list[nn.Module] = []
        cin = in_channels
        for width in widths:
            layers += [conv_bn_relu(cin, width, batch_norm=batch_norm),
                       conv_bn_relu(width, width, batch_norm=batch_norm), nn.MaxPool2d(2)]
            cin = width
        self.features = nn.Sequential(*layers)
        if gap:
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                      nn.Linear(cin, num_classes))
        else:
            n = flat_features(self.features, in_channels, image_size)
            self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(n, hidden),
                                      nn.ReLU(inplace=True), nn.Dropout(dropout),
                                      nn.Linear(hidden, num_classes))

    def forward(self, x):  # (N, C, H, W) -> (N, K)
        return self.head(self.features(x))


def _classic(name: str, description: str, **fixed) -> None:
    register(name, "image", description, RECIPE, conv=True, **fixed)(ClassicCNN)


_classic("classic-cnn", "report B: conv 32-64-128 pairs + FC 512")
_classic("classic-cnn-dropout", "classic-cnn + dropout 0.5", dropout=0.5)
_classic("classic-cnn-gap", "classic-cnn with global average pooling", gap=True)
_classic("classic-cnn-gap-dropout", "GAP + dropout 0.3", gap=True, dropout=0.3)
_classic("classic-cnn-bn", "classic-cnn + batch norm", batch_norm=True)
_classic("classic-cnn-gap-bn", "GAP + batch norm", gap=True, batch_norm=True)


class Residual(nn.Module):
    """x + f(x), where f is two conv-BN-ReLU layers of the same width."""

    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(width, width), conv_bn_relu(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@register("resnet-style", "image", "report B ResNet-style: 64-64-pool-128-128-pool-256-256-GAP",
          RECIPE, conv=True)
def resnet_style(in_channels: int, num_classes: int, image_size: tuple[int, int]) -> nn.Module:
    check_image_size("resnet-style", image_size, 4)
    return nn.Sequential(
        conv_bn_relu(in_channels, 64), Residual(64), nn.MaxPool2d(2),
        conv_bn_relu(64, 128), Residual(128), nn.AvgPool2d(2),
        conv_bn_relu(128, 256), Residual(256),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, num_classes),
    )


@register("alexnet", "image", "AlexNet-style: 5 convs (64-192-384-256-256), FC 1024-1024",
          {**RECIPE, "optim.lr": 5e-4}, conv=True)
def alexnet(in_channels: int, num_classes: int, image_size: tuple[int, int],
            dropout: float = 0.5) -> nn.Module:
    check_image_size("alexnet", image_size, 8)
    return nn.Sequential(
        nn.Conv2d(in_channels, 64, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Dropout(dropout), nn.Linear(256 * 4, 1024), nn.ReLU(inplace=True),
        nn.Dropout(dropout), nn.Linear(1024, 1024), nn.ReLU(inplace=True),
        nn.Linear(1024, num_classes),
    )
