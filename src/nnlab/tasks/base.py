"""What the training loop needs from a task, and nothing more.

The loop never sees images or sentences: it asks the task for batches, a loss per batch,
and validation metrics per epoch. Adding a task means implementing this protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import torch
from torch import nn

from nnlab.errors import NnlabError

T = TypeVar("T")
S = TypeVar("S")  # a task's loaded data source


@dataclass
class StepOutput:
    loss: torch.Tensor  # scalar, mean over the batch; what is back-propagated
    count: int  # examples in the batch
    metric_sum: torch.Tensor  # scalar on the device: sum of the training metric over the batch
    metric_count: int | None = None  # what metric_sum is a sum over (default: count), e.g. tokens
    # the logged training loss, when it is not `loss` per example: a device-side sum and what it
    # is a sum over (the keyphrase task logs loss per token, comparable across sentences/documents)
    loss_sum: torch.Tensor | None = None
    loss_count: int | None = None


class Task(Protocol):
    name: str
    main_metric: str  # the validation metric that picks the best epoch and stops early
    train_metric: str  # the cheap metric tracked during training (may equal main_metric)
    higher_is_better: bool
    unit: str  # what an example is called in throughput figures ("images", "sentences")
    conv_net: bool  # its models are convolution nets: bf16 + channels-last where the CPU has bf16

    def build_model(self) -> nn.Module:
        """A freshly initialised model (data-dependent initialisation included)."""
        ...

    def info(self) -> dict[str, Any]:
        """What the task learnt from the data (classes, shapes, vocabulary...): saved with the
        config so evaluate and predict can rebuild the model without the training data."""
        ...

    def steps_per_epoch(self) -> int: ...

    def train_batches(self, gen: torch.Generator, epoch: int) -> Iterator[Any]: ...

    def step(self, model: nn.Module, batch: Any) -> StepOutput: ...

    def evaluate(self, model: nn.Module, split: str = "val", detailed: bool = False) -> dict: ...


def source_or_load(cfg: Any, source: S | None, load: Callable[[str, Any], S], what: str) -> S:
    """The source a caller handed over, or the one at `data.path` (read with `load`)."""
    if source is not None:
        return source
    if not cfg.data.path:
        raise NnlabError(f"data.path: no {what} data given")
    return load(cfg.data.path, cfg)


def first(data: T, limit: int) -> T:
    """`data.limit` for text tasks: the first `limit` examples (all when 0 or more than there are)."""
    return data.subset(list(range(limit))) if 0 < limit < len(data) else data  # type: ignore[attr-defined]


def pick_split(split: str, train: T, val: T, source: Any, prepare_test: Callable[[Any], T]) -> T:
    """A task's prepared train or validation data, or its source's test part, prepared on demand
    (the test part is only read by `evaluate --split test`)."""
    if split == "val":
        return val
    if split == "train":
        return train
    if split == "test":
        if source.test is None:
            raise NnlabError(f"{source.path}: this data has no test split")
        return prepare_test(source.test)
    raise NnlabError(f"--split {split}: unknown split (val, test)")
