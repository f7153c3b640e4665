"""Image classification: uint8 image tensors on the device -> logits -> cross-entropy.

As in airbench, the whole training split lives on the training device as one uint8 tensor;
each step gathers a batch by index, converts it to float and augments it with batched
tensor ops. No DataLoader, no worker processes, no per-image Python.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nnlab import distributed, models
from nnlab.config import DataConfig, ImageDataConfig, RunConfig
from nnlab.data import GENERATED
from nnlab.data.augment import augment, cutout
from nnlab.data.image_folder import decode_image, image_size
from nnlab.data.images import ImageData, ImageSource, channel_stats, load_images
from nnlab.data.split import holdout
from nnlab.device import Runtime
from nnlab.errors import NnlabError, TooLarge
from nnlab.metrics import classification_report, confusion_matrix
from nnlab.models.layers import upcast
from nnlab.models.summary import layer_table
from nnlab.tasks.base import (
    CONFUSION_FIGURES,
    DataInitialised,
    ExportSpec,
    PredictOptions,
    RequestLimits,
    Section,
    StepOutput,
    Task,
    check_split,
    eval_mode,
    fmt,
    write_confusion,
)
from nnlab.tasks.ensemble_graph import combined_spec, weighted_sum
from nnlab.tasks.info import DataInfo, ImageInfo
from nnlab.tasks.registry import register_task

TTA_MODES = ("none", "flip", "flip-translate")


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


def build_classifier(cfg: RunConfig, info: ImageInfo) -> ImageClassifier:
    c, h, w = info.image_shape
    net = models.create(cfg.model.name, "image", cfg.model.args,
                        in_channels=c, num_classes=len(info.classes), image_size=(h, w))
    return ImageClassifier(net, info.mean, info.std)


def split_train_val(data: ImageData, cfg: DataConfig) -> tuple[ImageData, ImageData]:
    """The run's training images and its validation carve-out (then `limit`, if set)."""
    keep, held = holdout(len(data), cfg.val_size, cfg.split_seed, "images", "images", data.labels)
    train, val = data.subset(torch.tensor(keep)), data.subset(torch.tensor(held))
    if 0 < cfg.limit < len(train):
        small, _ = holdout(len(train), len(train) - cfg.limit, cfg.split_seed, "data.limit", "images",
                           train.labels)
        train = train.subset(torch.tensor(small))
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


@dataclass
class ClassOptions(PredictOptions):
    top_k: int = 3  # classes shown per image


@register_task
class ImageTask(Task):
    name = "image"
    main_metric = "accuracy"
    train_metric = "accuracy"
    unit = "images"
    config_columns: ClassVar[dict[str, Any]] = {"augment": "data.augment"}
    detail_keys = ("confusion", "classes")
    supplied = ("in_channels", "num_classes", "image_size")
    data_folders = ("cifar10", "cifar-10-batches-py", "cifar-10-batches-bin")
    download = "cifar10"
    data_sections = (ImageDataConfig,)
    info_type = ImageInfo
    _info: ImageInfo
    extra_reads = frozenset({"train.label_smoothing"})
    tta_modes = TTA_MODES
    predict_help = "image files"
    predict_options = ClassOptions
    request_kind = "files"
    page_widget = "classes"
    request_help = "multipart/form-data, one or more `file` fields (PNG, JPEG, ...)"

    # -- data -----------------------------------------------------------------------------
    @classmethod
    def generated_data(cls) -> str:
        return GENERATED  # drawn in memory by data.generated

    def load_source(self, path: str) -> ImageSource:
        return load_images(path)

    def prepare_training(self, source: ImageSource) -> None:
        cfg, runtime = self.cfg, self.runtime
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
        self._info = ImageInfo(
            classes=self.classes, image_shape=list(train.shape), mean=mean, std=std,
            data=DataInfo(path=source.path, format=source.format,
                          fingerprint=source.fingerprint, train_examples=len(train),
                          val_examples=len(val), has_test=source.test is not None))

    def _to_device(self, data: ImageData) -> ImageData:
        dev = self.runtime.device
        return ImageData(data.images.to(dev), data.labels.to(dev), data.classes)

    def labelled(self, data: str | None, split: str) -> tuple[ImageData, str]:
        """Without `data`: the run's validation carve-out (`val`) or its data's test part.
        With `data`: every labelled image there (`all`), its test part, or the carve-out."""
        check_split(split)
        info = self._info
        if data is None:
            if info.data.path != GENERATED and not Path(info.data.path).exists():
                raise NnlabError(f"{info.data.path}: the run's data is gone; pass --data PATH")
            data = info.data.path
        source = load_images(data)
        where = source.path
        if split == "test":
            if source.test is None:
                raise NnlabError(f"{where}: this data has no test split")
            return source.test, where
        if split == "all":
            images = source.train
            if source.test is not None:
                test = match_classes(source.test, images.classes, where)
                images = ImageData(torch.cat([images.images, test.images]),
                                   torch.cat([images.labels, test.labels]), images.classes)
            return images, where
        return split_train_val(source.train, self.cfg.data)[1], where  # the training carve-out

    def prepare(self, examples: ImageData, where: str) -> ImageData:
        images = match_classes(examples, self._info.classes, where)
        if list(images.shape) != list(self._info.image_shape):
            raise NnlabError(f"{where}: images are {tuple(images.shape)} (C, H, W), the run was "
                             f"trained on {tuple(self._info.image_shape)}")
        return images

    # -- training ---------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        return build_classifier(self.cfg, self._info)

    def init_model(self, model: nn.Module) -> None:
        if isinstance(model.net, DataInitialised):  # e.g. `fast`'s whitening layer: 5,000 images
            with torch.no_grad():
                model.net.init_from_data(model.normalize(self.train.images[:5000].cpu().float().div_(255)))

    def _drop_last(self) -> bool:
        # a final batch of one example breaks batch norm; smaller leftovers are kept
        return len(self.train) % self.cfg.data.batch_size == 1

    def steps_per_epoch(self) -> int:
        n, b = len(self.train), self.cfg.data.batch_size
        return n // b if self._drop_last() else -(-n // b)

    def train_batches(self, gen: torch.Generator, epoch: int) -> Iterator[torch.Tensor]:
        n, b = len(self.train), self.cfg.data.batch_size
        order = torch.randperm(n, generator=gen, device=gen.device)  # (N,)
        for i in range(self.steps_per_epoch()):
            yield order[i * b : (i + 1) * b]  # (B,)

    def collate(self, idx: torch.Tensor, gen: torch.Generator, epoch: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.train.images[idx].to(self.runtime.dtype).div_(255)  # (B, C, H, W) in [0, 1]
        x = augment(x, self.cfg.data.augment, gen, self.base_flip[idx], epoch, self.cfg.data.translate)
        if self.cfg.data.cutout:
            x = cutout(x, gen, self.cfg.data.cutout, self._mean)
        return self._layout(x), self.train.labels[idx]

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.runtime.channels_last else x

    def step(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
        x, y = batch
        with self.runtime.autocast():
            logits = model(x)  # (B, K)
        loss = F.cross_entropy(upcast(logits), y, label_smoothing=self.cfg.train.label_smoothing)
        correct = (logits.argmax(dim=1) == y).sum()
        return StepOutput.per_example(loss, y.shape[0], correct)

    # -- evaluation and prediction ------------------------------------------------------------
    def evaluate(self, model: nn.Module, data: ImageData, details: bool = False,
                 tta: str = "none") -> dict[str, Any]:
        """Under torchrun the images are split between the ranks (every world-th each) and
        the sums reduced, so every rank gets the whole split's figures."""
        d = distributed.current()
        batch = self.cfg.data.eval_batch_size
        if not d.enabled:
            return evaluate_images(model, data, self.runtime, batch, details, tta)
        idx = torch.arange(d.rank, len(data), d.world)  # (N / world,)
        part = evaluate_images(model, data.subset(idx), self.runtime, batch, tta=tta)
        n, loss, correct = distributed.all_sum([part["n"], part["loss"] * part["n"],
                                                part["accuracy"] * part["n"]], self.runtime.device)
        return {"loss": loss / n, "accuracy": round(correct) / n, "n": int(n), "tta": tta}

    def read_inputs(self, inputs: list[str], options: PredictOptions) -> list[tuple[str, np.ndarray]]:
        """(file, decoded pixels) per image file."""
        if not inputs:
            raise NnlabError("predict: give at least one image file")
        decoded = []
        for file in inputs:
            p = Path(file)
            if not p.is_file():
                raise NnlabError(f"{file}: no such file")
            decoded.append((file, decode_image(p.read_bytes(), file)))  # (H, W) or (H, W, 3) uint8
        return decoded

    def public_info(self) -> dict[str, Any]:
        return {"classes": self._info.classes}

    def request_inputs(self, body: Any, files: list[tuple[str, bytes]], limits: RequestLimits
                       ) -> list[tuple[str, np.ndarray]]:
        """Uploaded images, sized from their headers against the limits before any is decoded,
        then decoded and shrunk to the run's size one at a time (a request holds at most one
        full-size image in memory)."""
        if not files:
            raise NnlabError("send the images as multipart/form-data `file` fields")
        total = 0
        for name, data in files:
            w, h = image_size(data, name)
            if w * h > limits.max_pixels:
                raise TooLarge(f"{name}: {w}x{h} = {w * h:,} pixels, more than the server's limit of "
                               f"{limits.max_pixels:,} per image")
            total += w * h
            if total > limits.max_request_pixels:
                raise TooLarge(f"{total:,}+ pixels in one request, more than the server's limit of "
                               f"{limits.max_request_pixels:,}; send fewer or smaller images")
        return [(name, self._fit(decode_image(data, name))) for name, data in files]

    def _fit(self, array: np.ndarray) -> np.ndarray:
        """(H', W'[, C']) uint8 of any size and mode -> (H, W, C) uint8 of the run's."""
        from PIL import Image

        c, h, w = self._info.image_shape
        img = Image.fromarray(array).convert("L" if c == 1 else "RGB")
        if img.size != (w, h):
            img = img.resize((w, h), Image.Resampling.BILINEAR)
        return np.array(img, dtype=np.uint8).reshape(h, w, c)  # a writable copy (torch.from_numpy)

    def predict(self, model: nn.Module, inputs: list[tuple[str, np.ndarray]],
                options: PredictOptions) -> list[dict[str, Any]]:
        """Top-k classes with probabilities per image (any size: resized to the run's)."""
        return self.present(self.input_outputs(model, inputs), inputs, options)

    # -- ensembles (tasks.capabilities.Ensemblable) ------------------------------------------
    # Rule: the mean of the members' class probabilities (each member with its own test-time
    # augmentation). Averaging probabilities, not logits, keeps a member's confidence on its
    # own scale (members may differ in architecture, and logits of different nets are not
    # comparable); log of the mean is what the loss and the ONNX graph see.
    ensemble_rules = ("mean-probabilities",)

    def ensemble_key(self) -> dict[str, Any]:
        return {"classes": self._info.classes, "image_shape": self._info.image_shape}

    def outputs(self, model: nn.Module, data: ImageData) -> torch.Tensor:
        """The model's class probabilities (N, K) on prepared images, with the run's TTA."""
        batch, out = self.cfg.data.eval_batch_size, []
        with eval_mode(model):
            for i in range(0, len(data), batch):
                x = data.images[i : i + batch].to(self.runtime.device, self.runtime.dtype).div_(255)
                with self.runtime.autocast():
                    logits = tta_logits(model, self._layout(x), self.cfg.data.tta)  # (B, K)
                out.append(logits.float().softmax(dim=1).cpu())
        return torch.cat(out)  # (N, K)

    def input_outputs(self, model: nn.Module, inputs: list[tuple[str, np.ndarray]]) -> torch.Tensor:
        """Class probabilities (N, K) of `predict`'s decoded images."""
        batch = [torch.from_numpy(self._fit(array)).permute(2, 0, 1) for _file, array in inputs]
        x = torch.stack(batch).to(self.runtime.device, self.runtime.dtype).div_(255)  # (N, C, H, W)
        with eval_mode(model), self.runtime.autocast():
            return tta_logits(model, self._layout(x), self.cfg.data.tta).float().softmax(dim=1).cpu()

    def combine(self, outputs: list[torch.Tensor], weights: list[float], rule: str) -> torch.Tensor:
        return weighted_sum(outputs, weights)

    def ensemble_spec(self, specs: list[ExportSpec], weights: list[float], rule: str,
                      names: list[str]) -> ExportSpec:
        """One graph: the log of the members' weighted mean probabilities, as `logits`."""
        spec = combined_spec(specs, weights, names, log_mean_probabilities)
        return dataclasses.replace(spec, meta=spec.meta | {
            "output": "logits: (batch, classes), the log of the members' weighted mean class "
                      "probabilities; softmax gives that mean"})

    def judge(self, probs: torch.Tensor, data: ImageData, details: bool = False) -> dict[str, Any]:
        """`evaluate`'s figures from probabilities (N, K): the loss is their negative log-likelihood."""
        labels = data.labels.cpu()
        n = len(data)
        nll = -probs.clamp_min(1e-12).log().gather(1, labels.unsqueeze(1)).double().sum()
        pred = probs.argmax(dim=1)
        result = {"loss": nll.item() / n, "accuracy": (pred == labels).sum().item() / n, "n": n,
                  "tta": self.cfg.data.tta}
        if details:
            result |= classification_report(confusion_matrix(pred, labels, len(data.classes)),
                                             data.classes)
        return result

    def part(self, probs: torch.Tensor, data: ImageData, indices: list[int]
             ) -> tuple[torch.Tensor, ImageData]:
        index = torch.tensor(indices, dtype=torch.int64)
        return probs[index], data.subset(index.to(data.labels.device))

    def present(self, probs: torch.Tensor, inputs: list[tuple[str, np.ndarray]],
                options: PredictOptions) -> list[dict[str, Any]]:
        """`predict`'s results from class probabilities (N, K): the top k per image."""
        top = probs.topk(min(options.top_k, probs.shape[1]), dim=1)
        classes = self._info.classes
        return [{"file": file, "top": [{"class": classes[j], "probability": round(p, 6)}
                                       for p, j in zip(top.values[i].tolist(), top.indices[i].tolist(),
                                                       strict=True)]}
                for i, (file, _array) in enumerate(inputs)]

    @classmethod
    def format_predictions(cls, results: list[dict]) -> list[str]:
        return [f"{r['file']}: " + ", ".join(f"{t['class']} {t['probability']:.3f}" for t in r["top"])
                for r in results]

    @classmethod
    def format_evaluation(cls, r: dict[str, Any]) -> list[str]:
        lines = [f"{r['model']} on {r['data']} ({r['split']}, {r['n']:,} images): "
                 f"accuracy {r['accuracy']:.4f}, loss {r['loss']:.4f}"]
        for name, m in r["per_class"].items():
            acc = "n/a" if m["accuracy"] is None else f"{m['accuracy']:.4f}"
            lines.append(f"  {name:>14}  accuracy {acc}  ({m['support']} images)")
        return lines

    # -- reports ------------------------------------------------------------------------------
    write_plots = write_confusion
    run_figures = CONFUSION_FIGURES

    @classmethod
    def report_sections(cls, runs: list[tuple[str, dict[str, Any]]]) -> list[Section]:
        """Validation accuracy per class, variants side by side."""
        runs = [(name, val) for name, val in runs if "per_class" in val]
        if not runs:
            return []
        classes = runs[0][1].get("classes", [])
        rows = [[c, *[fmt(val["per_class"].get(c, {}).get("accuracy"), 3) for _, val in runs]]
                for c in classes]
        return [Section("Per-class validation accuracy", ["class", *[n for n, _ in runs]], rows)]

    def model_table(self, model: nn.Module) -> tuple[list[str], list[list[str]]]:
        rows = layer_table(model, tuple(self._info.image_shape))
        return (["layer", "type", "output shape", "parameters"],
                [[r.name, r.kind, "x".join(map(str, r.output_shape)),
                  f"{r.parameters:,}" if r.parameters else ""] for r in rows])

    def export_spec(self, model: nn.Module) -> ExportSpec:
        c, h, w = self._info.image_shape

        def inputs(n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
            return {"images": torch.rand(n, c, h, w, generator=gen)}

        return ExportSpec(
            model, inputs, ["logits"], {"images": {0: "batch"}, "logits": {0: "batch"}},
            decide=lambda logits, _inputs: np.asarray(logits).argmax(1).tolist(),
            meta={"classes": self._info.classes,
                  "input": f"images: float32 (batch, {c}, {h}, {w}), {'RGB' if c == 3 else 'grey'} "
                           "pixel values divided by 255, resized to the run's size; the graph "
                           "normalises them itself",
                  "output": "logits: (batch, classes); softmax gives probabilities",
                  "test_time_augmentation": f"not in the graph (the run evaluates with "
                                            f"data.tta={self.cfg.data.tta})"})

    @classmethod
    def example_info(cls, input_shape: tuple[int, int, int], classes: int) -> ImageInfo:
        c = input_shape[0]
        return ImageInfo(classes=[f"class {i}" for i in range(classes)],
                         image_shape=list(input_shape), mean=[0.0] * c, std=[1.0] * c,
                         data=DataInfo.example())


def log_mean_probabilities(logits: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """(N, K) log of the weighted mean of each member's softmax: the ensemble as logits."""
    return weighted_sum([x.softmax(dim=1) for x in logits], weights).clamp_min(1e-12).log()


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


def evaluate_images(model: nn.Module, data: ImageData, runtime: Runtime, batch_size: int,
                    details: bool = False, tta: str = "none") -> dict:
    """Loss and accuracy (plus per-class metrics and confusion matrix with `details`)."""
    if tta not in TTA_MODES:
        raise NnlabError(f"--tta {tta}: unknown ({', '.join(TTA_MODES)})")
    with eval_mode(model):
        return _evaluate_images(model, data, runtime, batch_size, details, tta)


def _evaluate_images(model: nn.Module, data: ImageData, runtime: Runtime, batch_size: int,
                     details: bool, tta: str) -> dict:
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
    pred = torch.cat(preds).cpu()
    labels = data.labels.cpu()
    n = len(data)
    result = {"loss": loss_sum.item() / n, "accuracy": (pred == labels).sum().item() / n, "n": n,
              "tta": tta}
    if details:
        confusion = confusion_matrix(pred, labels, len(data.classes))
        result |= classification_report(confusion, data.classes)
    return result
