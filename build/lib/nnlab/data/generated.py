"""A built-in, generated 32x32 colour data set, so the demo runs with no download.

Ten shape classes (disk, square, triangle, ring, plus, cross, three stripe directions,
checkerboard) drawn at random positions, sizes and small rotations, in random colours
that carry no label information, with a distractor blob, lighting changes and noise.
A small CNN learns it to roughly 80-90% in a few epochs; a linear model does not.
"""

from __future__ import annotations

import math

import torch

CLASSES = [
    "disk", "square", "triangle", "ring", "plus",
    "cross", "h-stripes", "v-stripes", "d-stripes", "checker",
]  # fmt: skip
FINGERPRINT = "generated-shapes-v2"
TRAIN_SIZE, TEST_SIZE, SIZE = 10_000, 2_000, 32


def shapes_dataset(train_size: int = TRAIN_SIZE, test_size: int = TEST_SIZE, seed: int = 1234):
    """Return ((images, labels), (images, labels)) as (N, 3, 32, 32) uint8 and (N,) int64."""
    gen = torch.Generator().manual_seed(seed)
    images, labels = draw_shapes(train_size + test_size, gen)
    return (images[:train_size], labels[:train_size]), (images[train_size:], labels[train_size:])


def draw_shapes(n: int, gen: torch.Generator, size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*(shape or (n,)), generator=gen)

    labels = torch.arange(n) % len(CLASSES)
    labels = labels[torch.randperm(n, generator=gen)]
    r = uniform(6.0, 12.0)[:, None, None]  # (N, 1, 1) shape radius in pixels
    cx = uniform(10.0, size - 10.0)[:, None, None]
    cy = uniform(10.0, size - 10.0)[:, None, None]
    theta = uniform(-0.35, 0.35)[:, None, None]  # small rotations keep stripe classes distinct
    freq = uniform(0.9, 1.6)[:, None, None]  # stripes per radius
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32),
                            torch.arange(size, dtype=torch.float32), indexing="ij")
    dx, dy = xs[None] - cx, ys[None] - cy  # (N, H, W)
    u = dx * torch.cos(theta) + dy * torch.sin(theta)
    v = -dx * torch.sin(theta) + dy * torch.cos(theta)
    # either diagonal for d-stripes, so a horizontal flip (an augmentation) keeps the class
    flip_diagonal = torch.rand(n, 1, 1, generator=gen) < 0.5
    mask = torch.empty(n, size, size)
    for k in range(len(CLASSES)):
        i = labels == k  # draw each class's shape only for its own images
        mask[i] = _shape_mask(k, u[i], v[i], r[i], freq[i], flip_diagonal[i]).float()
    mask = mask[:, None]  # (N, 1, H, W)

    bg = uniform(0.0, 1.0, n, 3)[:, :, None, None]  # (N, 3, 1, 1)
    shift = uniform(0.3, 0.6, n, 3) * torch.where(torch.rand(n, 3, generator=gen) < 0.5, -1, 1)
    fg = (bg + shift[:, :, None, None]).remainder(1.0)  # contrast without a class colour
    img = bg * (1 - mask) + fg * mask  # (N, 3, H, W)
    # a distractor blob of a third colour, partly covering the scene
    bx, by = uniform(0, size)[:, None, None], uniform(0, size)[:, None, None]
    br = uniform(2.0, 5.0)[:, None, None]
    blob = (((xs[None] - bx) ** 2 + (ys[None] - by) ** 2) < br**2).float()[:, None]
    img = img * (1 - blob) + uniform(0, 1, n, 3)[:, :, None, None] * blob
    gradient = uniform(-0.3, 0.3, n, 1)[:, :, None, None] * (xs / size - 0.5)  # uneven light
    img = img + gradient + 0.12 * torch.randn(img.shape, generator=gen)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8), labels


def _shape_mask(k: int, u: torch.Tensor, v: torch.Tensor, r: torch.Tensor, freq: torch.Tensor,
                flip_diagonal: torch.Tensor) -> torch.Tensor:
    """Boolean (n, H, W) mask of class k's shape in rotated coordinates u, v around its centre."""
    d = torch.sqrt(u**2 + v**2)
    box = torch.maximum(u.abs(), v.abs()) < r
    wave = 2 * math.pi * freq / r
    diag_u, diag_v = (u + v) / math.sqrt(2), (u - v) / math.sqrt(2)
    name = CLASSES[k]
    if name == "disk":
        return d < r
    if name == "square":
        return torch.maximum(u.abs(), v.abs()) < 0.8 * r
    if name == "triangle":
        return (v < 0.7 * r) & (v > -0.9 * r) & (u.abs() < (v + 0.9 * r) * 0.6)
    if name == "ring":
        return (d - 0.7 * r).abs() < 0.25 * r
    if name == "plus":
        return ((u.abs() < 0.3 * r) | (v.abs() < 0.3 * r)) & box
    if name == "cross":
        return ((diag_u.abs() < 0.3 * r) | (diag_v.abs() < 0.3 * r)) & (d < r)
    if name == "h-stripes":
        return (torch.sin(v * wave) > 0) & box
    if name == "v-stripes":
        return (torch.sin(u * wave) > 0) & box
    if name == "d-stripes":
        return (torch.sin(torch.where(flip_diagonal, diag_v, diag_u) * wave) > 0) & box
    return (torch.sin(u * wave) * torch.sin(v * wave) > 0) & box  # checker
