"""Image data sets as uint8 tensors: decode any supported format once, then load from cache.

A second load of the 50,000 CIFAR-10 training images reads one safetensors file (about
0.1 s) instead of decoding 50,000 JPEGs. The cache key is the source's content fingerprint
plus the loader version, so an edited data set is decoded again.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nnlab.data import GENERATED, cifar, generated, image_folder
from nnlab.data.cache import kind_dir, touch
from nnlab.data.files import FileTree
from nnlab.fileio import atomic_write

LOADER_VERSION = "1"


@dataclass
class ImageData:
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64
    classes: list[str]

    def __len__(self) -> int:
        return self.labels.shape[0]

    def subset(self, index: torch.Tensor) -> ImageData:
        return ImageData(self.images[index], self.labels[index], self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return c, h, w


@dataclass
class ImageSource:
    """A loaded data set: its training part, its test part if it has one, and provenance."""

    train: ImageData
    test: ImageData | None
    format: str
    fingerprint: str
    path: str


def load_images(path: str, use_cache: bool = True) -> ImageSource:
    """Load an image data set from a path (folder, archive) or the name `generated`."""
    if path == GENERATED:
        train, test = generated.shapes_dataset()
        return ImageSource(train=ImageData(*train, generated.CLASSES),
                           test=ImageData(*test, generated.CLASSES),
                           format="generated", fingerprint=generated.FINGERPRINT, path=GENERATED)
    tree = FileTree(path)
    key = f"{tree.fingerprint()[:32]}-v{LOADER_VERSION}"
    cached = kind_dir("images") / f"{key}.safetensors"
    if use_cache and cached.is_file():
        source = _read_cache(cached, path)
        if source is not None:
            touch(cached)
            return source
    fmt = cifar.detect(tree.names()) or "image-folder"
    if fmt == "image-folder":
        train_np, test_np, classes = image_folder.load(tree)
    else:
        train_np, test_np, classes = cifar.load(tree, fmt)
    source = ImageSource(
        train=ImageData(torch.from_numpy(train_np[0]), torch.from_numpy(train_np[1]), classes),
        test=None if test_np is None else
        ImageData(torch.from_numpy(test_np[0]), torch.from_numpy(test_np[1]), classes),
        format=fmt, fingerprint=key, path=str(path),
    )
    if use_cache:
        _write_cache(cached, source)
    return source


def _write_cache(file: Path, source: ImageSource) -> None:
    tensors = {"train_images": source.train.images.contiguous(), "train_labels": source.train.labels}
    if source.test is not None:
        tensors |= {"test_images": source.test.images.contiguous(), "test_labels": source.test.labels}
    meta = {"classes": json.dumps(source.train.classes), "format": source.format}
    with contextlib.suppress(OSError):  # a read-only or full cache only costs speed
        atomic_write(file, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def _read_cache(file: Path, path: str) -> ImageSource | None:
    try:
        from safetensors import safe_open

        with safe_open(str(file), "pt") as f:
            meta = f.metadata()
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError):
        return None  # a damaged cache entry is decoded again
    classes = json.loads(meta["classes"])
    test = None
    if "test_images" in tensors:
        test = ImageData(tensors["test_images"], tensors["test_labels"], classes)
    return ImageSource(
        train=ImageData(tensors["train_images"], tensors["train_labels"], classes),
        test=test, format=meta["format"], fingerprint=file.stem, path=str(path),
    )


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images on the [0, 1] scale, in bounded memory."""
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    squares = torch.zeros(c, dtype=torch.float64)
    for i in range(0, images.shape[0], chunk):
        x = images[i : i + chunk].to(torch.float32) / 255  # (B, C, H, W)
        total += x.sum(dim=(0, 2, 3)).double()
        squares += x.square().sum(dim=(0, 2, 3)).double()
    n = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / n
    std = (squares / n - mean.square()).clamp(min=1e-6).sqrt()
    return mean.tolist(), std.tolist()


