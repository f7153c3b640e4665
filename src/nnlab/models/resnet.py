"""ResNet-18 for small images (He et al. 2016, CIFAR stem) and the same net without skips.

3x3 stem (no 7x7/maxpool: 32x32 inputs would shrink to nothing), four stages of two basic
blocks, widths 64-128-256-512, strides 1-2-2-2, batch norm, global average pooling.
The first report: Adam, weight decay 1e-4; 80% validation, 88% with augmentation at 200
epochs. `plain18` drops the identity/projection shortcuts to show what they buy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nnlab.models.registry import register

RECIPE = {"optim.name": "adam", "optim.lr": 1e-3, "optim.weight_decay": 1e-4,
          "data.batch_size": 128, "train.epochs": 200, "schedule.name": "cosine"}


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, skip: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = skip
        self.shortcut: nn.Module = nn.Identity()
        if skip and (stride != 1 or cin != cout):  # projection when the shape changes
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, Cin, H, W) -> (N, Cout, H/stride, W/stride)
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        if self.skip:
            out = out + self.shortcut(x)
        return F.relu(out, inplace=True)


class ResNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, blocks=(2, 2, 2, 2),
                 widths=(64, 128, 256, 512), skip: bool = True):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        stages = []
        cin = widths[0]
        for i, (n, width) in enumerate(zip(blocks, widths, strict=True)):
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                stages.append(BasicBlock(cin, width, stride, skip))
                cin = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, K)
        return self.head(self.stages(self.stem(x)))


@register("resnet18", "image", "ResNet-18, CIFAR stem, 64-128-256-512", RECIPE, conv=True)
def resnet18(in_channels: int, num_classes: int, image_size: tuple[int, int]) -> nn.Module:
    return ResNet(in_channels, num_classes, skip=True)


@register("plain18", "image", "resnet18 without skip connections", RECIPE, conv=True)
def plain18(in_channels: int, num_classes: int, image_size: tuple[int, int]) -> nn.Module:
    return ResNet(in_channels, num_classes, skip=False)
