"""Image classification: uint8 image tensors on the device -> logits -> cross-entropy.

As in airbench, the whole training split lives on the training device as one uint8 tensor;
each step gathers a batch by index, converts it to float and augments it with batched
tensor ops. No DataLoader, no worker processes, no per-image Python.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nnlab import distributed, models
from nnlab.config import DataConfig, RunConfig
from nnlab.data.augment import augment, cutout
from nnlab.data.images import ImageData, ImageSource, channel_stats, load_images, stratified_split
from nnlab.device import Runtime
from nnlab.distributed import shard
from nnlab.errors import NnlabError
from nnlab.metrics import classification_report, confusion_matrix
from nnlab.models.layers import upcast
from nnlab.tasks.base import StepOutput, pick_split


class Normalize(nn.Module):
    """Per-channel standardisation stored with the weights, so a saved model takes [0, 1] input."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> same
        return (x - self.mean) / self.std


class ImageClassifier(nn.Module):
    def __init__(self, net: nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) in [0, 1] -> (N, K)
        return self.net(self.normalize(x))


def build_classifier(cfg: RunConfig, info: dict[str, Any]) -> ImageClassifier:
    c, h, w = info["image_shape"]
    net = models.create(cfg.model.name, "image", cfg.model.args,
                        in_channels=c, num_classes=len(info["classes"]), image_size=(h, w))
    return ImageClassifier(net, info["mean"], info["std"])


def split_train_val(data: ImageData, cfg: DataConfig) -> tuple[ImageData, ImageData]:
    """The run's training images and its validation carve-out (then `limit`, if set)."""
    keep, held = stratified_split(data.labels, cfg.val_size, cfg.split_seed)
    train, val = data.subset(keep), data.subset(held)
    if 0 < cfg.limit < len(train):
        small, _ = stratified_split(train.labels, len(train) - cfg.limit, cfg.split_seed)
        train = train.subset(small)
    return train, val


def match_classes(data: ImageData, classes: list[str], where: str) -> ImageData:
    """Relabel `data` so its class indices follow `classes` (matched by name, not position)."""
    index = {name: i for i, name in enumerate(classes)}
    unknown = [c for c in data.classes if c not in index]
    if unknown:
        raise NnlabError(f"{where}: class {unknown[0]!r} is not one of the run's classes "
                         f"({', '.join(classes)})")
    mapping = torch.tensor([index[c] for c in data.classes], dtype=torch.int64)
    return ImageData(data.images, mapping[data.labels], list(classes))


class ImageTask:
    name = "image"
    main_metric = "accuracy"
    train_metric = "accuracy"
    higher_is_better = True
    unit = "images"
    conv_net = True  # bf16 + channels-last on a CPU with native bf16 (device.make_runtime)

    def __init__(self, cfg: RunConfig, runtime: Runtime, source: ImageSource | None = None):
        self.cfg = cfg
        self.runtime = runtime
        if source is None:
            if not cfg.data.path:
                raise NnlabError("data.path: no image data given")
            source = load_images(cfg.data.path)
        self.source = source
        train, val = split_train_val(source.train, cfg.data)
        self.classes = source.train.classes
        self.train = self._to_device(train)
        self.val = self._to_device(val)
        # fixed per-image flips for the alternating-flip augmentation, seeded like the split
        flips = torch.rand(len(train), generator=torch.Generator().manual_seed(cfg.train.seed)) < 0.5
        self.base_flip = flips.to(runtime.device)
        h, w = train.shape[1:]
        if cfg.data.cutout > min(h, w):
            raise NnlabError(f"data.cutout: {cfg.data.cutout} pixels is too large for the {h}x{w} images")
        if cfg.data.translate >= min(h, w):  # reflect padding needs fewer pixels than the image
            raise NnlabError(f"data.translate: {cfg.data.translate} pixels is too large for the "
                             f"{h}x{w} images")
        mean, std = channel_stats(train.images)
        self._mean = torch.tensor(mean, device=runtime.device).view(1, -1, 1, 1)  # in [0, 1]
        self._info = {
            "classes": self.classes,
            "image_shape": list(train.shape),
            "mean": mean,
            "std": std,
            "data": {"path": source.path, "format": source.format,
                     "fingerprint": source.fingerprint, "train_examples": len(train),
                     "val_examples": len(val), "has_test": source.test is not None},
        }

    # -- data -----------------------------------------------------------------------------
    def _to_device(self, data: ImageData) -> ImageData:
        dev = self.runtime.device
        return ImageData(data.images.to(dev), data.labels.to(dev), data.classes)

    def split_data(self, split: str) -> ImageData:
        return pick_split(split, self.train, self.val, self.source, lambda test: self._to_device(
            match_classes(test, self.classes, self.source.path)))

    def info(self) -> dict[str, Any]:
        return self._info

    # -- training ---------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        model = build_classifier(self.cfg, self._info)
        init = getattr(model.net, "init_from_data", None)
        if init is not None:  # e.g. the whitening layer of `fast`: 5,000 training images
            with torch.no_grad():
                init(model.normalize(self.train.images[:5000].cpu().float().div_(255)))
        return model

    def _drop_last(self) -> bool:
        # a final batch of one example breaks batch norm; smaller leftovers are kept
        return len(self.train) % self.cfg.data.batch_size == 1

    def steps_per_epoch(self) -> int:
        n, b = len(self.train), self.cfg.data.batch_size
        return n // b if self._drop_last() else -(-n // b)

    def train_batches(self, gen: torch.Generator, epoch: int
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, b = len(self.train), self.cfg.data.batch_size
        order = torch.randperm(n, generator=gen, device=gen.device)  # (N,)
        for i in range(self.steps_per_epoch()):
            idx = shard(order[i * b : (i + 1) * b])  # (B,), or this rank's part of it
            x = self.train.images[idx].to(self.runtime.dtype).div_(255)  # (B, C, H, W) in [0, 1]
            x = augment(x, self.cfg.data.augment, gen, self.base_flip[idx], epoch,
                        self.cfg.data.translate)
            if self.cfg.data.cutout:
                x = cutout(x, gen, self.cfg.data.cutout, self._mean)
            yield self._layout(x), self.train.labels[idx]

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.runtime.channels_last else x

    def step(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
        x, y = batch
        with self.runtime.autocast():
            logits = model(x)  # (B, K)
        loss = F.cross_entropy(upcast(logits), y, label_smoothing=self.cfg.train.label_smoothing)
        correct = (logits.argmax(dim=1) == y).sum()
        return StepOutput(loss=loss, count=y.shape[0], metric_sum=correct)

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, split: str = "val", detailed: bool = False) -> dict:
        """Per-epoch checks are plain; the detailed final evaluation uses `data.tta`.

        Under torchrun the per-epoch check is split between the ranks (every world-th
        image each) and its sums are reduced, so every rank gets the whole split's figures."""
        data = self.split_data(split)
        d = distributed.current()
        if not d.enabled or detailed:
            return evaluate_images(model, data, self.runtime, self.cfg.data.eval_batch_size,
                                   detailed, tta=self.cfg.data.tta if detailed else "none")
        idx = torch.arange(d.rank, len(data), d.world)  # (N / world,)
        part = evaluate_images(model, ImageData(data.images[idx], data.labels[idx], data.classes),
                               self.runtime, self.cfg.data.eval_batch_size)
        n, loss, correct = distributed.all_sum([part["n"], part["loss"] * part["n"],
                                                part["accuracy"] * part["n"]], self.runtime.device)
        return {"loss": loss / n, "accuracy": round(correct) / n, "n": int(n), "tta": "none"}


def tta_logits(model: nn.Module, x: torch.Tensor, tta: str) -> torch.Tensor:
    """Logits averaged over test-time views, as airbench weights them.

    flip: the image and its mirror. flip-translate: half of that, plus half the mean over
    the image shifted one pixel up-left and one down-right (reflect padding), each mirrored.
    """
    # x: (N, C, H, W) -> (N, K)
    if tta == "none":
        return model(x)
    mirrored = 0.5 * model(x) + 0.5 * model(x.flip(-1))
    if tta == "flip":
        return mirrored
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    shifted = [padded[:, :, 0:h, 0:w], padded[:, :, 2 : h + 2, 2 : w + 2]]
    translated = torch.stack([0.5 * model(s) + 0.5 * model(s.flip(-1)) for s in shifted]).mean(0)
    return 0.5 * mirrored + 0.5 * translated


@torch.inference_mode()
def evaluate_images(model: nn.Module, data: ImageData, runtime: Runtime, batch_size: int,
                    detailed: bool = False, tta: str = "none") -> dict:
    """Loss and accuracy (plus per-class metrics and confusion matrix when `detailed`)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=runtime.device, dtype=torch.float64)
    preds = []
    for i in range(0, len(data), batch_size):
        x = data.images[i : i + batch_size].to(runtime.device, runtime.dtype).div_(255)
        y = data.labels[i : i + batch_size].to(runtime.device)
        if runtime.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with runtime.autocast():
            logits = tta_logits(model, x, tta)  # (B, K)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
        preds.append(logits.argmax(dim=1))
    model.train(was_training)
    pred = torch.cat(preds).cpu()
    labels = data.labels.cpu()
    n = len(data)
    result = {"loss": loss_sum.item() / n, "accuracy": (pred == labels).sum().item() / n, "n": n,
              "tta": tta}
    if detailed:
        confusion = confusion_matrix(pred, labels, len(data.classes))
        result |= classification_report(confusion, data.classes)
    return result
