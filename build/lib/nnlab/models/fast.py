"""`fast`: nnlab's time-to-accuracy CIFAR net, after airbench94 (Keller Jordan, 2024).

airbench94 reaches 94% CIFAR-10 test accuracy in 3.8 s on an A100 with this net and recipe:

    whiten: 2x2 conv, 24 filters, frozen to the PCA-whitening of training patches; GELU
    3 x [conv3x3 - maxpool2 - BN - GELU - conv3x3 - BN - GELU]   widths 64 / 256 / 256
    maxpool3 - linear (no bias) - x 1/9

Convolutions start as identity maps (dirac init) and have no bias; batch norms have frozen
scales, trainable shifts, momentum 0.6. The whitening bias trains for the first 3 epochs
only. nnlab's recipe (`RECIPE`) adds the rest: Nesterov SGD with airbench's decoupled
hyper-parameters, 64x learning rate on 1-d parameters, label smoothing 0.2, triangular
schedule, lookahead-EMA, translate-2 + alternating-flip augmentation, flip-translate
test-time augmentation, bf16 autocast with channels-last (2x the throughput of NCHW on a
CPU). The widths are airbench94's (64/256/256); 12 epochs fit the 10-minute budget of a
2-core CPU with room to spare (benchmarks/time_to_accuracy.py), `--epochs 24` is the
30-minute setting. Measured on 2 CPU cores (bf16 + channels-last): 48/128/192 trains at
2,039 images/s, 64/256/256 at 1,267, 128/384/384 at 457.
"""

from __future__ import annotations

import torch
from torch import nn

from nnlab.models.registry import register

BATCH = 1024
MOMENTUM = 0.85
# airbench's decoupled values: lr 11.5 and weight decay 0.0153 per 1024 examples, with the
# loss summed over the batch. nnlab averages the loss, so the lr is multiplied by the batch.
_KILOSTEP = 1024 * (1 + 1 / (1 - MOMENTUM))
LR = 11.5 / _KILOSTEP * BATCH  # ~1.50
WEIGHT_DECAY = (0.0153 * BATCH / _KILOSTEP) / (11.5 / _KILOSTEP)  # coupled torch value, ~1.36 / batch

RECIPE = {
    "optim.name": "sgd", "optim.lr": LR, "optim.momentum": MOMENTUM, "optim.nesterov": True,
    "optim.weight_decay": WEIGHT_DECAY / BATCH, "optim.bias_decay": True,
    "optim.norm_lr_scale": 64.0,
    "schedule.name": "warmup-linear", "schedule.warmup_epochs": 2.3,
    "schedule.start_lr_ratio": 0.2, "schedule.final_lr_ratio": 0.07,
    "data.batch_size": BATCH, "data.augment": "airbench", "data.tta": "flip-translate",
    "train.epochs": 12, "train.label_smoothing": 0.2, "train.precision": "bf16",
    "train.lookahead": True,
}  # fmt: skip


class BatchNorm(nn.BatchNorm2d):
    """Batch norm with a frozen scale of one and a trainable shift, as airbench uses."""

    def __init__(self, num_features: int, momentum: float = 0.6, eps: float = 1e-12):
        super().__init__(num_features, eps=eps, momentum=1 - momentum)
        self.weight.requires_grad = False


class Conv(nn.Conv2d):
    """3x3 'same' convolution without bias, initialised to pass its input through (dirac)."""

    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, kernel_size=3, padding="same", bias=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        w = self.weight.data
        torch.nn.init.dirac_(w[: w.size(1)])


class ConvGroup(nn.Module):
    def __init__(self, cin: int, cout: int, bn_momentum: float):
        super().__init__()
        self.conv1 = Conv(cin, cout)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = BatchNorm(cout, bn_momentum)
        self.conv2 = Conv(cout, cout)
        self.norm2 = BatchNorm(cout, bn_momentum)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, Cin, H, W) -> (N, Cout, H/2, W/2)
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class FastNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, widths: tuple[int, int, int],
                 whiten_kernel: int = 2, bn_momentum: float = 0.6, scale: float = 1 / 9,
                 whiten_bias_epochs: int = 3):
        super().__init__()
        whiten_width = 2 * in_channels * whiten_kernel**2
        self.whiten = nn.Conv2d(in_channels, whiten_width, whiten_kernel, padding=0, bias=True)
        self.whiten.weight.requires_grad = False  # set from the data by init_from_data
        nn.init.zeros_(self.whiten.bias)
        self.act = nn.GELU()
        self.groups = nn.Sequential(
            ConvGroup(whiten_width, widths[0], bn_momentum),
            ConvGroup(widths[0], widths[1], bn_momentum),
            ConvGroup(widths[1], widths[2], bn_momentum),
        )
        self.pool = nn.AdaptiveMaxPool2d(1)  # maxpool3 on the 3x3 maps of 32x32 inputs
        self.head = nn.Linear(widths[2], num_classes, bias=False)
        self.scale = scale
        self.whiten_bias_epochs = whiten_bias_epochs

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) normalised -> (N, K)
        x = self.groups(self.act(self.whiten(x)))
        return self.head(self.pool(x).flatten(1)) * self.scale

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the whitening filters to the scaled eigenvectors of the patch covariance.

        x: (N, C, H, W) normalised training images (airbench uses 5,000). Each eigenvector
        appears with both signs, so GELU keeps the information of both halves.
        """
        k = self.whiten.kernel_size[0]
        c = x.shape[1]
        patches = x.float().unfold(2, k, 1).unfold(3, k, 1)  # (N, C, H', W', k, k)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)  # (P, C*k*k)
        cov = patches.T @ patches / patches.shape[0]  # (D, D)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)  # ascending
        eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.T.flip(0)  # (D,), (D, D)
        filters = eigenvectors.reshape(-1, c, k, k) / torch.sqrt(eigenvalues + eps).view(-1, 1, 1, 1)
        self.whiten.weight.copy_(torch.cat([filters, -filters]))

    def set_epoch(self, epoch: int) -> None:
        """Called by the training loop before each epoch (1-based): freeze the whitening bias."""
        self.whiten.bias.requires_grad = epoch <= self.whiten_bias_epochs


@register("fast", "image", "airbench-style net for time-to-accuracy (whitening, 3 conv groups)",
          RECIPE)
def fast(in_channels: int, num_classes: int, image_size: tuple[int, int],
         widths: list = [64, 256, 256], whiten_bias_epochs: int = 3) -> nn.Module:  # noqa: B006
    if len(widths) != 3:
        from nnlab.errors import NnlabError

        raise NnlabError(f"model.widths: expected 3 widths, got {widths}")
    return FastNet(in_channels, num_classes, tuple(int(w) for w in widths),
                   whiten_bias_epochs=whiten_bias_epochs)
