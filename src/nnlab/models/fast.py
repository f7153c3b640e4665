"""`fast`: nnlab's time-to-accuracy CIFAR net, after airbench94 (Keller Jordan, 2024).

airbench94 reaches 94% CIFAR-10 test accuracy in 3.8 s on an A100 with this net and recipe:

    whiten: 2x2 conv, 24 filters, frozen to the PCA-whitening of training patches; GELU
    3 x [conv3x3 - maxpool2 - BN - GELU - conv3x3 - BN - GELU]   widths 64 / 256 / 256
    maxpool3 - linear (no bias) - x 1/9

Convolutions start as identity maps (dirac init) and have no bias; batch norms have frozen
scales, trainable shifts, momentum 0.6. The whitening bias trains for the first 3 epochs
only. Two recipes are registered on it:

- `fast` (`RECIPE`), after airbench94_muon (94% in 2.6 s on an A100): Muon on the
  convolution filters (`optim.name=muon`, nnlab.muon), Nesterov SGD on the rest, batch
  2,000, 8 epochs, linear decay to zero, label smoothing 0.2, translate-2 + alternating
  flips, flip-translate test-time augmentation. On 2 CPU cores it beats the SGD recipe's
  10-epoch validation accuracy in 8 epochs and less wall time (the figures, over 3 seeds:
  `time_to_accuracy.json` on the docs' Results page, from benchmarks/time_to_accuracy.py).
- `fast-sgd` (`SGD_RECIPE`), airbench94's own: Nesterov SGD with airbench's decoupled
  hyper-parameters, 64x learning rate on batch-norm shifts, a triangular schedule and the
  lookahead-EMA of the weights, batch 1,024, 10 epochs.

Both train with channels-last, and in bf16 autocast where the CPU computes bf16 natively (2x
the throughput of NCHW fp32 there); on an AVX2-only CPU bf16 is emulated, so they run fp32.
"""

from __future__ import annotations

import torch
from torch import nn

from nnlab.errors import NnlabError
from nnlab.models.registry import register

COMMON = {
    "data.augment": "airbench", "data.tta": "flip-translate", "train.label_smoothing": 0.2,
}  # fmt: skip

# airbench94's decoupled values: lr 11.5 and weight decay 0.0153 per 1024 examples, with the
# loss summed over the batch. nnlab averages the loss, so the lr is multiplied by the batch.
SGD_BATCH = 1024
SGD_MOMENTUM = 0.85
_KILOSTEP = 1024 * (1 + 1 / (1 - SGD_MOMENTUM))
SGD_LR = 11.5 / _KILOSTEP * SGD_BATCH  # ~1.50
SGD_WEIGHT_DECAY = 0.0153 / 11.5  # decay per step = lr x this = 0.0153 x batch / kilostep

SGD_RECIPE = COMMON | {
    "optim.name": "sgd", "optim.lr": SGD_LR, "optim.momentum": SGD_MOMENTUM,
    "optim.nesterov": True, "optim.weight_decay": SGD_WEIGHT_DECAY, "optim.bias_decay": True,
    "optim.norm_lr_scale": 64.0,
    "schedule.name": "warmup-linear", "schedule.warmup_epochs": 2.3,
    "schedule.start_lr_ratio": 0.2, "schedule.final_lr_ratio": 0.07,
    "data.batch_size": SGD_BATCH, "train.epochs": 10, "train.lookahead": True,
}  # fmt: skip

# airbench94_muon's values, for a summed loss: SGD lr 0.053 on biases and 0.67 on the head,
# whose output there is divided by its width (256) with unit-std weights; weight decay
# 2e-6 x batch per step. Here the head is scaled by 1/9 with PyTorch's default init, the
# same function; an equivalent SGD step on it needs lr x (9/256)^2, which is 1/64 of the
# bias lr, so the bias groups keep optim.norm_lr_scale 64. Muon ignores the gradient's scale.
MUON_BATCH = 2000
_HEAD_LR = 0.67 * (9 / 256) ** 2  # per summed example
MUON_LR = _HEAD_LR * MUON_BATCH  # ~1.66 for the mean loss
MUON_WEIGHT_DECAY = 2e-6 * MUON_BATCH / MUON_LR  # ~2.4e-3: 2e-6 x batch per step

RECIPE = COMMON | {
    "optim.name": "muon", "optim.lr": MUON_LR, "optim.momentum": 0.85, "optim.nesterov": True,
    "optim.weight_decay": MUON_WEIGHT_DECAY, "optim.bias_decay": True,
    "optim.norm_lr_scale": 64.0, "optim.muon_lr": 0.24, "optim.muon_momentum": 0.6,
    "schedule.name": "warmup-linear", "schedule.warmup_epochs": 0.0,
    "schedule.start_lr_ratio": 1.0, "schedule.final_lr_ratio": 0.0,
    "data.batch_size": MUON_BATCH, "train.epochs": 8, "train.lookahead": False,
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


def fast_net(in_channels: int, num_classes: int, image_size: tuple[int, int],
             widths: list = [64, 256, 256], whiten_bias_epochs: int = 3) -> nn.Module:  # noqa: B006
    if len(widths) != 3:
        raise NnlabError(f"model.widths: expected 3 widths, got {widths}")
    return FastNet(in_channels, num_classes, tuple(int(w) for w in widths),
                   whiten_bias_epochs=whiten_bias_epochs)


register("fast", "image", "airbench net for time-to-accuracy, Muon recipe (8 epochs)",
         RECIPE, conv=True)(fast_net)
register("fast-sgd", "image", "airbench net, airbench94's SGD + lookahead recipe (10 epochs)",
         SGD_RECIPE, conv=True)(fast_net)
