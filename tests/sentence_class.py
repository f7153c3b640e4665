"""A fourth task, written as a user would add one: sentence classification (a label per
sentence) over nnlab's existing Siamese sentence encoder. It is this one module: a reader of
`label<TAB>sentence` files, a model (encoder + linear head) and the task. Nothing else in
nnlab changes for it; `test_task_registry.py` drives it through the CLI.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nnlab import models
from nnlab.data.pairs import words
from nnlab.data.split import holdout
from nnlab.data.vocab import Vocab
from nnlab.errors import NnlabError
from nnlab.models.siamese import SentenceEncoder
from nnlab.tasks import PredictOptions, Section, Source, StepOutput, registry
from nnlab.tasks.base import FileOptions, eval_mode, fmt, shared
from nnlab.tasks.info import DataInfo, WordInfo
from nnlab.tasks.text import (
    TextTask,
    build_vocab,
    embeddings_info,
    load_pretrained,
    load_text_source,
    read_texts,
    word_args,
)

NAME = "sentence-class"


@dataclass(kw_only=True)
class SentenceInfo(WordInfo):
    """What the task learns: the vocabulary (WordInfo) and the classes, in index order."""

    classes: list[str]


# -- the reader ----------------------------------------------------------------------------------
@dataclass
class Sentences:
    path: str
    labels: list[str]
    tokens: list[list[str]]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: list[int]) -> Sentences:
        return Sentences(self.path, [self.labels[i] for i in idx], [self.tokens[i] for i in idx])


def read_sentences(path: Path) -> Sentences:
    labels, tokens = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        label, tab, text = line.partition("\t")
        if not tab or not label or not words(text):
            raise NnlabError(f"{path}:{number}: expected 'label<TAB>sentence'")
        labels.append(label)
        tokens.append(words(text))
    return Sentences(str(path), labels, tokens)


# -- the model -----------------------------------------------------------------------------------
class SentenceClassifier(nn.Module):
    def __init__(self, vocab_size: int, num_classes: int, frozen_words: int = 0, word_dim: int = 32,
                 cell: str = "lstm", hidden_sizes: tuple[int, ...] = (32,), dropout: float = 0.0,
                 pooling: str = "max"):
        super().__init__()
        self.encoder = SentenceEncoder(vocab_size, "embedding", word_dim, cell, tuple(hidden_sizes),
                                       dropout, True, pooling, frozen_words)
        self.head = nn.Linear(self.encoder.out_dim, num_classes)

    @property
    def words(self) -> nn.Module | None:
        return self.encoder.words

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(ids, lengths))  # (B, T), (B,) -> (B, K)


# -- the task ------------------------------------------------------------------------------------
Encoded = tuple[list[torch.Tensor], torch.Tensor]  # word ids per sentence, class per sentence


class SentenceClassTask(TextTask):
    name = NAME
    main_metric = "accuracy"
    train_metric = "accuracy"
    unit = "sentences"
    supplied = ("vocab_size", "num_classes", "frozen_words")
    predict_help = "sentences"
    data_folders = ("sentences",)  # $NNLAB_DATA/sentences/{train,val,test}.tsv
    predict_options = FileOptions
    info_type = SentenceInfo
    _info: SentenceInfo

    def load_source(self, path: str) -> Source[Sentences]:
        def find(root: Path) -> dict[str, Path]:
            return {k: root / f"{k}.tsv" for k in ("train", "val", "test") if (root / f"{k}.tsv").is_file()}

        def carve(train: Sentences, file: Path) -> tuple[Sentences, Sentences]:
            keep, held = holdout(len(train), self.cfg.data.val_size, self.cfg.data.split_seed,
                                 str(file), "sentences")
            return train.subset(keep), train.subset(held)

        source, files = load_text_source(path, find, read_sentences, carve, "labelled sentences",
                                         "train.tsv")
        source.fingerprint = hashlib.sha256(b"".join(f.read_bytes() for f in files.values())).hexdigest()[:16]
        return source

    def read_file(self, path: Path) -> Sentences:
        return read_sentences(path)

    def prepare_training(self, source: Source[Sentences]) -> None:
        tokens = [w for s in source.train.tokens for w in s]
        vocab, self.vectors = build_vocab(tokens, self.cfg.data)
        self._info = SentenceInfo(
            vocab=vocab.to_dict(), classes=sorted(set(source.train.labels)),
            embeddings=embeddings_info(self.vectors, self.cfg.data),
            data=DataInfo(path=source.path, format=source.format, fingerprint=source.fingerprint,
                          train_examples=len(source.train), val_examples=len(source.val),
                          has_test=source.test is not None))
        self.train = self.prepare(source.train, source.path)
        self.val = self.prepare(source.val, source.path)

    def prepare(self, examples: Sentences, where: str) -> Encoded:
        vocab = Vocab.from_dict(self._info.vocab)
        index = {c: i for i, c in enumerate(self._info.classes)}
        unknown = sorted(set(examples.labels) - set(index))
        if unknown:
            raise NnlabError(f"{where}: label {unknown[0]!r} is not one of the run's classes")
        return ([torch.tensor(vocab.lookup(s), dtype=torch.int64) for s in examples.tokens],
                torch.tensor([index[label] for label in examples.labels]))

    def build_model(self) -> nn.Module:
        args, supplied = word_args(self.cfg.model.args, self._info)
        return models.create(self.cfg.model.name, self.name, args,
                             num_classes=len(self._info.classes), **supplied)

    def init_model(self, model: nn.Module) -> None:
        load_pretrained(model, self.vectors, self._info, self.cfg.data, self.cfg.train.seed)

    def steps_per_epoch(self) -> int:
        return -(-len(self.train[0]) // self.cfg.data.batch_size)

    def _batch(self, data: Encoded, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        seqs = [data[0][i] for i in idx]
        lengths = torch.tensor([len(s) for s in seqs])
        ids = torch.zeros(len(seqs), int(lengths.max()), dtype=torch.int64)
        for row, s in enumerate(seqs):
            ids[row, : len(s)] = s
        return ids, lengths, data[1][idx]

    def train_batches(self, gen: torch.Generator, epoch: int) -> Iterator[list[int]]:
        order = torch.randperm(len(self.train[0]), generator=gen).tolist()
        b = self.cfg.data.batch_size
        for k in range(0, len(order), b):
            yield order[k : k + b]

    def collate(self, indices: list[int], gen: torch.Generator, epoch: int) -> Any:
        return self._batch(self.train, indices)

    def step(self, model: nn.Module, batch: Any) -> StepOutput:
        ids, lengths, y = batch
        logits = model(ids, lengths)  # (B, K)
        loss = F.cross_entropy(logits, y)
        return StepOutput.per_example(loss, len(y), (logits.argmax(1) == y).sum())

    def _logits(self, model: nn.Module, data: Encoded, idx: list[int]) -> list[torch.Tensor]:
        with eval_mode(model):
            b = self.cfg.data.eval_batch_size
            return [row for k in range(0, len(idx), b)
                    for row in model(*self._batch(data, idx[k : k + b])[:2])]

    def evaluate(self, model: nn.Module, data: Encoded, details: bool = False,
                 tta: str = "none") -> dict[str, Any]:
        logits = torch.stack(shared(len(data[0]), lambda idx: self._logits(model, data, idx)))
        y = data[1]
        result: dict[str, Any] = {"loss": F.cross_entropy(logits, y).item(),
                                  "accuracy": (logits.argmax(1) == y).double().mean().item(),
                                  "n": len(y)}
        if details:
            pred = logits.argmax(1)
            result["per_class"] = {c: (pred[y == i] == i).double().mean().item() if (y == i).any()
                                   else None for i, c in enumerate(self._info.classes)}
        return result

    def read_inputs(self, inputs: list[str], options: FileOptions) -> list[str]:
        if not inputs:
            raise NnlabError("predict: give at least one sentence")
        return read_texts(inputs, options.files)

    def predict(self, model: nn.Module, texts: list[str], options: PredictOptions) -> list[dict]:
        vocab = Vocab.from_dict(self._info.vocab)
        ids = [torch.tensor(vocab.lookup(words(t) or ["<unk>"])) for t in texts]
        probs = torch.stack(self._logits(model, (ids, torch.zeros(len(ids), dtype=torch.int64)),
                                         list(range(len(ids))))).softmax(1)
        return [{"text": t, "class": self._info.classes[int(p.argmax())],
                 "probability": round(float(p.max()), 4)} for t, p in zip(texts, probs, strict=True)]

    @classmethod
    def format_predictions(cls, results: list[dict]) -> list[str]:
        return [f"{r['class']} {r['probability']:.3f}" for r in results]

    @classmethod
    def format_evaluation(cls, r: dict[str, Any]) -> list[str]:
        return [f"{r['model']} on {r['data']} ({r['split']}, {r['n']} sentences): accuracy "
                f"{r['accuracy']:.4f}, loss {r['loss']:.4f}"]

    @classmethod
    def report_sections(cls, runs: list[tuple[str, dict[str, Any]]]) -> list[Section]:
        runs = [(n, v) for n, v in runs if "per_class" in v]
        if not runs:
            return []
        classes = list(runs[0][1]["per_class"])
        return [Section("Per-class validation accuracy", ["class", *[n for n, _ in runs]],
                        [[c, *[fmt(v["per_class"][c], 3) for _, v in runs]] for c in classes])]


def register() -> None:
    registry.register_task(SentenceClassTask)
    models.register("sentence-lstm", NAME, "BiLSTM sentence encoder, max pooling, linear head",
                    {"optim.name": "adam", "optim.lr": 0.01, "data.batch_size": 16})(SentenceClassifier)


def unregister() -> None:
    registry.unregister_task(NAME)
    models.unregister("sentence-lstm")
