"""What each task learns from its training data (`info`), as typed records.

A run saves its task's info in `config.json` (`task_info`), and everything after training
(evaluate, predict, serve, export, a report) rebuilds the task from it, without the training
data. The records are TypedDicts, so the JSON stays exactly what old run folders hold, and
`check_info` reads a saved one back: a missing or mistyped field of a hand-edited or truncated
`config.json` is one line naming it, before any model is built.
"""

# no `from __future__ import annotations`: TypedDict reads NotRequired[...] from evaluated
# annotations only (as strings, every field would count as required on Python 3.11)
import typing
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from nnlab.errors import NnlabError


class DataInfo(TypedDict):
    """The data a run trained on: where, what, and how much."""

    path: str
    format: str
    fingerprint: str  # sha256 prefix of what was read: resuming on other data is refused
    train_examples: int
    val_examples: int
    has_test: bool


class ImageInfo(TypedDict):
    classes: list[str]
    image_shape: list[int]  # C, H, W
    mean: list[float]  # per channel, in [0, 1]
    std: list[float]
    data: DataInfo


class Embeddings(TypedDict):
    name: str
    dim: int
    frozen: bool


class KeyphraseInfo(TypedDict):
    vocab: dict[str, Any]  # Vocab.to_dict(): items, trained
    chars: dict[str, Any]
    types: list[str]  # span types (KEY, or a typed data set's)
    encoding: str  # bio | bioes
    tags: list[str]
    max_word_chars: int
    tokenizer: dict[str, Any]  # TokenizerStyle of the training text
    data: DataInfo
    coverage: NotRequired[dict[str, float]]
    embeddings: NotRequired[Embeddings]
    contextual: NotRequired[dict[str, Any]]  # encoder, model, layers, tune, lr, dim, seconds


class SimilarityInfo(TypedDict):
    score_range: list[float]  # low, high
    data: DataInfo
    vocab: NotRequired[dict[str, Any]]  # word models
    wordpieces: NotRequired[str]  # MiniLM models: the encoder whose pieces they read
    coverage: NotRequired[dict[str, float]]
    embeddings: NotRequired[Embeddings]
    entailment: NotRequired[dict[str, Any]]  # labels, weight
    teacher: NotRequired[dict[str, Any]]  # model, runs, pairs, mean_score


JSON_TYPES = {str: str, int: int, float: (int, float), bool: bool, list: list, dict: dict}


def check_info(raw: Any, record: type, where: str | Path, prefix: str = "task_info") -> None:
    """`raw` (a saved task_info) holds every required field of `record` with the right JSON
    type, nested records checked alike; one NnlabError line naming the first field that does
    not."""
    if not isinstance(raw, dict):
        raise NnlabError(f"{where}: {prefix} should be a JSON object, found {type(raw).__name__}")
    for name, hint in typing.get_type_hints(record).items():  # NotRequired[X] reads as X
        if name not in raw:
            if name in record.__required_keys__:
                raise NnlabError(f"{where}: {prefix}.{name} is missing (the run's config.json is "
                                 "incomplete)")
            continue
        value = raw[name]
        if typing.is_typeddict(hint):
            check_info(value, hint, where, f"{prefix}.{name}")
            continue
        expected = JSON_TYPES.get(typing.get_origin(hint) or hint)
        if expected is not None and (not isinstance(value, expected)
                                     or (expected is int and isinstance(value, bool))):
            raise NnlabError(f"{where}: {prefix}.{name} should be a {_name(hint)}, found "
                             f"{type(value).__name__}")


def _name(hint: Any) -> str:
    base = typing.get_origin(hint) or hint
    return {str: "string", int: "whole number", float: "number", bool: "true/false",
            list: "list", dict: "JSON object"}.get(base, str(base))
