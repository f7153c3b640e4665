"""Batched image augmentation as tensor ops on the training device (no per-image Python).

Two recipes:
- `crop-flip`: random 32x32 crop of a 4-pixel reflect-padded copy and a horizontal flip,
  the standard CIFAR augmentation;
- `airbench`: translate by up to 2 pixels (reflect padding) and *alternating* flips: each
  image has a fixed random flip that is inverted every other epoch, so over two epochs the
  net sees both orientations of every image (more diverse than independent coin flips);
- `keras`: the first report's ImageDataGenerator settings (rotation 40 degrees, width and
  height shift 0.2, shear 0.2 degrees as Keras defines it, zoom 0.8-1.2, horizontal flip,
  nearest fill), done with one affine_grid/grid_sample call per batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    # x: (N, C, H, W)
    mask = torch.rand(x.shape[0], device=x.device, generator=gen) < 0.5  # (N,)
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


def crop_flip(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    # x: (N, C, H, W) float
    return flip(translate(x, gen, pad), gen)


def translate(x: torch.Tensor, gen: torch.Generator, pad: int) -> torch.Tensor:
    """Random crop of the original size from a `pad`-pixel reflect-padded copy."""
    # x: (N, C, H, W) float
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")  # (N, C, H+2p, W+2p)
    dy = torch.randint(0, 2 * pad + 1, (n,), device=x.device, generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), device=x.device, generator=gen)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (N, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (N, 1, 1, W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]  # (N, C, H, W)


def keras_affine(
    x: torch.Tensor,
    gen: torch.Generator,
    rotation_deg: float = 40.0,
    shift: float = 0.2,
    shear_deg: float = 0.2,
    zoom: float = 0.2,
) -> torch.Tensor:
    # x: (N, C, H, W) float
    n = x.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, device=x.device, generator=gen)

    angle = uniform(-rotation_deg, rotation_deg) * (math.pi / 180)  # (N,)
    shear = uniform(-shear_deg, shear_deg) * (math.pi / 180)
    zx, zy = uniform(1 - zoom, 1 + zoom), uniform(1 - zoom, 1 + zoom)
    tx, ty = uniform(-shift, shift) * 2, uniform(-shift, shift) * 2  # grid units span 2
    cos, sin = torch.cos(angle), torch.sin(angle)
    # output->input map as Keras composes it: rotation @ shear @ zoom, then translation;
    # rotation @ shear = [[cos a, -sin(a+s)], [sin a, cos(a+s)]]
    theta = torch.stack([
        torch.stack([cos * zx, -torch.sin(angle + shear) * zy, tx], dim=1),
        torch.stack([sin * zx, torch.cos(angle + shear) * zy, ty], dim=1),
    ], dim=1)  # (N, 2, 3)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return flip(out, gen)


def cutout(x: torch.Tensor, gen: torch.Generator, size: int, fill: torch.Tensor) -> torch.Tensor:
    """Fill one random `size` x `size` square per image, wholly inside it (airbench96 uses 12
    pixels for its long runs: a regulariser, which short runs do not need)."""
    # x: (N, C, H, W); fill: (1, C, 1, 1), the channel means, i.e. zero once normalised
    n, _, h, w = x.shape
    top = torch.randint(0, h - size + 1, (n,), device=x.device, generator=gen)[:, None, None, None]
    left = torch.randint(0, w - size + 1, (n,), device=x.device, generator=gen)[:, None, None, None]
    rows = torch.arange(h, device=x.device)[None, None, :, None]  # (1, 1, H, 1)
    cols = torch.arange(w, device=x.device)[None, None, None, :]  # (1, 1, 1, W)
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    return torch.where(inside, fill.to(x.dtype), x)  # (N, C, H, W)


def alternating_flip(x: torch.Tensor, base_flip: torch.Tensor, epoch: int) -> torch.Tensor:
    """Flip the images whose fixed flip bit, XOR the epoch's parity, is set."""
    # x: (N, C, H, W); base_flip: (N,) bool
    mask = base_flip ^ bool(epoch % 2)
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


def augment(x: torch.Tensor, recipe: str, gen: torch.Generator,
            base_flip: torch.Tensor | None = None, epoch: int = 1, pad: int = 0) -> torch.Tensor:
    """Apply a named recipe; `base_flip` and `epoch` drive the alternating flip of airbench,
    `pad` > 0 replaces the recipe's translation (crop-flip 4, airbench 2 pixels)."""
    if recipe == "none":
        return x
    if recipe == "crop-flip":
        return crop_flip(x, gen, pad or 4)
    if recipe == "airbench":
        assert base_flip is not None
        return translate(alternating_flip(x, base_flip, epoch), gen, pad=pad or 2)
    if recipe == "keras":
        return keras_affine(x, gen)
    raise ValueError(f"unknown augmentation {recipe!r}")
