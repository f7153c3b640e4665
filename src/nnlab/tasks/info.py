"""What each task learns from its training data (`info`), as typed records.

A run saves its task's info in `config.json` (`task_info`), and everything after training
(evaluate, predict, serve, export, a report) rebuilds the task from it, without the training
data. The records are dataclasses read by attribute (`info.data.fingerprint`), so a misspelt
field is an AttributeError at the first run of the line, not a KeyError in one branch.
`to_json` writes exactly the JSON old run folders hold (fields left None are not written), and
`from_json` reads a saved one back field by field: a missing or mistyped field of a hand-edited
or truncated `config.json` is one line naming it, before any model is built. Fields a record
does not declare (written by an older or newer nnlab) are ignored.

Nested maps owned by another module (a `Vocab.to_dict()`, a `TokenizerStyle`) stay JSON objects.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from nnlab.errors import NnlabError


@dataclass(kw_only=True)
class Record:
    """A JSON object with declared fields; subclasses are keyword-only dataclasses (so a
    subclass may add required fields after its parent's optional ones)."""

    @classmethod
    def from_json(cls, raw: Any, where: str | Path, prefix: str = "task_info") -> Self:
        """The record held by `raw` (a saved task_info), every field checked against its type;
        one NnlabError line naming the first that is missing or wrong."""
        if not isinstance(raw, dict):
            raise NnlabError(f"{where}: {prefix} should be a JSON object, found {type(raw).__name__}")
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in raw or raw[f.name] is None:
                if f.default is dataclasses.MISSING:
                    raise NnlabError(f"{where}: {prefix}.{f.name} is missing (the run's config.json "
                                     "is incomplete)")
                continue
            values[f.name] = _read(raw[f.name], hints[f.name], where, f"{prefix}.{f.name}")
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """The JSON object saved in config.json; None fields are left out."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = value.to_json() if isinstance(value, Record) else value
        return out


JSON_TYPES = {str: str, int: int, float: (int, float), bool: bool, list: list, dict: dict}


def _read(value: Any, hint: Any, where: str | Path, name: str) -> Any:
    """`value` as the field's type: a nested record read, a JSON value checked."""
    if isinstance(hint, types.UnionType):  # X | None: the optional field's type
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if isinstance(hint, type) and issubclass(hint, Record):
        return hint.from_json(value, where, name)
    expected = JSON_TYPES.get(typing.get_origin(hint) or hint)
    if expected is not None and (not isinstance(value, expected)
                                 or (expected is int and isinstance(value, bool))):
        raise NnlabError(f"{where}: {name} should be a {_type_name(hint)}, found "
                         f"{type(value).__name__}")
    return float(value) if hint is float else value


def _type_name(hint: Any) -> str:
    base = typing.get_origin(hint) or hint
    return {str: "string", int: "whole number", float: "number", bool: "true/false",
            list: "list", dict: "JSON object"}.get(base, str(base))


@dataclass(kw_only=True)
class DataInfo(Record):
    """The data a run trained on: where, what, and how much."""

    path: str
    format: str
    fingerprint: str  # sha256 prefix of what was read: resuming on other data is refused
    train_examples: int
    val_examples: int
    has_test: bool

    @classmethod
    def example(cls) -> DataInfo:
        """For `nnlab models NAME`: a model built with no data read."""
        return cls(path="(none)", format="(none)", fingerprint="", train_examples=0,
                   val_examples=0, has_test=False)


@dataclass(kw_only=True)
class KeyphraseDataInfo(DataInfo):
    """A tagger's data: documents may be cut into sentences (`data.train_unit`) for training."""

    train_documents: int | None = None
    train_unit: str | None = None  # document | sentence
    train_tokens: int | None = None
    val_tokens: int | None = None
    repaired_spans: int | None = None  # spans opened by an I- tag, read as B-


@dataclass(kw_only=True)
class Embeddings(Record):
    """Pretrained word vectors the run started from."""

    name: str
    dim: int
    frozen: bool
    found: int | None = None  # vocabulary words the vectors hold


@dataclass(kw_only=True)
class ImageInfo(Record):
    classes: list[str]
    image_shape: list[int]  # C, H, W
    mean: list[float]  # per channel, in [0, 1]
    std: list[float]
    data: DataInfo


@dataclass(kw_only=True)
class WordInfo(Record):
    """What every word-reading text task learns: its vocabulary, and the vectors it read."""

    vocab: dict[str, Any]  # Vocab.to_dict(): items, trained
    data: DataInfo
    coverage: dict[str, float] | None = None  # known-token shares: train_tokens, val_tokens
    embeddings: Embeddings | None = None


@dataclass(kw_only=True)
class KeyphraseInfo(WordInfo):
    chars: dict[str, Any]  # Vocab.to_dict()
    types: list[str]  # span types (KEY, or a typed data set's)
    encoding: str  # bio | bioes
    tags: list[str]
    max_word_chars: int
    tokenizer: dict[str, Any]  # TokenizerStyle of the training text
    contextual: dict[str, Any] | None = None  # encoder, model, layers, tune, lr, dim, seconds
    data: KeyphraseDataInfo  # type: ignore[assignment]  # a narrower type, still required


@dataclass(kw_only=True)
class SimilarityInfo(Record):
    score_range: list[float]  # low, high
    data: DataInfo
    vocab: dict[str, Any] | None = None  # word models
    wordpieces: str | None = None  # MiniLM models: the encoder whose pieces they read
    coverage: dict[str, float] | None = None
    embeddings: Embeddings | None = None
    entailment: dict[str, Any] | None = None  # labels, weight
    teacher: dict[str, Any] | None = None  # model, runs, pairs, mean_score
