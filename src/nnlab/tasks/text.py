"""What the text tasks share: reading a data folder (train, validation, test files), the
vocabulary with pretrained words, the models' word-embedding options, loading pretrained
vectors into a model, and reading raw texts for prediction."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from torch import nn

from nnlab.config import DataConfig, RunConfig, TextDataConfig
from nnlab.data.embeddings import WordVectors, embedding_matrix, load_vectors
from nnlab.data.generated_text import generated_text_folder, rebuilt_if_generated
from nnlab.data.tokenize import count_tokens
from nnlab.data.vocab import Vocab
from nnlab.device import Runtime
from nnlab.errors import NnlabError
from nnlab.models.embedding import WordEmbedding
from nnlab.tasks.base import RequestLimits, Source, Task, check_split
from nnlab.tasks.info import Embeddings, Record, SimilarityInfo, WordInfo

E = TypeVar("E")


class WordModel(Protocol):
    """A text model with a word-embedding table that pretrained vectors can be copied into
    (`words` is None for one-hot inputs)."""

    words: WordEmbedding | None


def load_text_source(path: str, find_files: Callable[[Path], dict[str, Path]],
                     read: Callable[[Path], E], carve: Callable[[E, Path], tuple[E, E]],
                     what: str, looked_for: str) -> tuple[Source[E], dict[str, Path]]:
    """A folder's train, validation and test files (by their usual names), or one training
    file; validation carved from the training file when there is no validation file."""
    root = Path(path)
    if root.is_dir():
        files = find_files(root)
        if "train" not in files:
            raise NnlabError(f"{root}: no training file (looked for {looked_for})")
    elif root.is_file():
        files = {"train": root}
    else:
        raise NnlabError(f"--data {path}: no such file or folder")
    train = read(files["train"])
    if "val" in files:
        val = read(files["val"])
        fmt = f"{what}, validation file {files['val'].name}"
    else:
        train, val = carve(train, files["train"])
        fmt = f"{what}, validation carved from {files['train'].name}"
    test = read(files["test"]) if "test" in files else None
    return Source(str(root.resolve()), train, val, test, "", fmt), files


class TextTask(Task):
    """A task over sentences or documents: data folders of train/validation/test files."""

    word_vectors = True
    data_sections = (TextDataConfig,)

    @classmethod
    def generated_data(cls) -> str:
        return str(generated_text_folder(cls.name))

    @classmethod
    def for_run(cls, cfg: RunConfig, runtime: Runtime, info: Record | dict[str, Any],
                where: str = "config.json") -> TextTask:
        """A saved run's task, its vocabularies checked first (a hand-edited config.json with
        numbers among the words is one line, not a TypeError while tokenising)."""
        for key in ("vocab", "chars"):
            vocab = getattr(info, key, None) if isinstance(info, Record) else info.get(key)
            if vocab is not None:
                Vocab.from_dict(vocab, f"{where}: task_info.{key}")
        return super().for_run(cfg, runtime, info, where)  # type: ignore[return-value]

    def read_file(self, path: Path) -> Any:
        """One labelled file in the task's format."""
        raise NotImplementedError

    def labelled(self, data: str | None, split: str) -> tuple[Any, str]:
        """A file given with `data`, or the validation (`val`) or test (`test`) part of a data
        folder (the run's own when `data` is None)."""
        check_split(split)
        if data is not None and Path(data).is_file():
            return self.read_file(Path(data)), str(Path(data).resolve())
        where = data or self._info.data.path
        if data is None:  # the run's generated data, removed by `nnlab cache clean`: rebuilt
            where = rebuilt_if_generated(where, self.name) or where
        if not Path(where).exists():
            raise NnlabError(f"{where}: the run's data is gone; pass --data FILE")
        source = self.load_source(where)
        if split == "test":
            if source.test is None:
                raise NnlabError(f"{where}: no test file there")
            return source.test, where
        if split == "val":
            return source.val, where
        raise NnlabError("--split all: give a file with --data FILE")

    def coverage_line(self) -> str:
        """Vocabulary size, known-token shares, and the pretrained vectors' coverage."""
        i = self._info
        words, seen = len(i.vocab["items"]), i.coverage
        text = (f"vocabulary {words:,} words; known tokens: train {seen['train_tokens']:.1%}, "
                f"validation {seen['val_tokens']:.1%}")
        if i.embeddings is not None:
            e = i.embeddings
            text += (f"; {e.name} ({e.dim}d) covers {e.found:,} of {words - 2:,} vocabulary words")
        return text

    @classmethod
    def example_vocab(cls) -> dict[str, Any]:
        """A 20,000-word vocabulary, for `nnlab models NAME`."""
        return {"items": ["<pad>", "<unk>", *[f"w{i}" for i in range(19_998)]], "trained": 20_000}


def build_vocab(tokens: list[str], d: DataConfig) -> tuple[Vocab, WordVectors | None]:
    """Training words (`data.min_count`, `data.lowercase`), then the `data.embedding_words`
    most frequent pretrained words not among them; and the vectors, when asked for."""
    vectors = load_vectors(d.embeddings) if d.embeddings else None
    extra = vectors.words[: d.embedding_words] if vectors else []
    return Vocab.build(tokens, d.min_count, d.lowercase, extra), vectors


def embeddings_info(vectors: WordVectors | None, d: DataConfig) -> Embeddings | None:
    """The record of the pretrained vectors a run reads (None: none); `found` is filled in
    when they are copied into the model (load_pretrained)."""
    if vectors is None:
        return None
    return Embeddings(name=d.embeddings, dim=vectors.dim, frozen=d.freeze_embeddings)


def word_args(model_args: dict[str, Any], info: WordInfo | SimilarityInfo
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The user's model options and the vocabulary-given ones: vocabulary size, how many
    pretrained-only words sit in the frozen table, and the vectors' dimension as word_dim."""
    args = dict(model_args)
    vocab = info.vocab
    if vocab is None:  # optional for a similarity run only, whose MiniLM models read pieces
        raise NnlabError("config.json: task_info.vocab is missing (a word model needs its vocabulary)")
    size = len(vocab["items"])
    supplied: dict[str, Any] = {"vocab_size": size, "frozen_words": size - vocab.get("trained", size)}
    if info.embeddings is not None:
        dim = info.embeddings.dim
        if args.get("word_dim", dim) != dim:
            raise NnlabError(f"model.word_dim: {args['word_dim']}, but the embeddings have {dim} "
                             "dimensions")
        args.pop("word_dim", None)
        supplied["word_dim"] = dim
    return args, supplied


def load_pretrained(model: nn.Module, vectors: WordVectors | None, info: WordInfo | SimilarityInfo,
                    d: DataConfig, seed: int) -> None:
    """Copy pretrained rows into `model.words` (a WordEmbedding); freeze them if asked; record
    the coverage in `info`."""
    if vectors is None:
        return
    words = model.words  # every text model declares it (WordModel); None for one-hot inputs
    if words is None:
        raise NnlabError("--embeddings: this model has no word embeddings (model.inputs='onehot'?)")
    assert info.vocab is not None and info.embeddings is not None  # set beside the vectors
    matrix, found = embedding_matrix(vectors, info.vocab["items"], seed=seed)
    info.embeddings.found = found
    words.load(matrix)
    words.weight.requires_grad_(not d.freeze_embeddings)


def check_request_texts(texts: list[str], limits: RequestLimits, what: str = "text") -> None:
    """A served request's texts within the server's limits (characters of each, words across
    all): checked before any model runs, since a request inside the body cap can still hold a
    million words."""
    total = 0
    for i, text in enumerate(texts, start=1):
        if len(text) > limits.max_chars:
            raise NnlabError(f"{what} {i}: {len(text):,} characters, more than the server's limit of "
                             f"{limits.max_chars:,}")
        total += count_tokens(text)
        if total > limits.max_words:
            raise NnlabError(f"{total:,}+ words in one request, more than the server's limit of "
                             f"{limits.max_words:,}; send fewer or shorter texts")


def read_texts(inputs: list[str], files: bool) -> list[str]:
    """Raw texts for prediction: the arguments themselves, or the files they name (--files);
    '-' reads standard input."""
    texts = []
    for item in inputs:
        if item == "-":
            texts.append(sys.stdin.read())
        elif files:
            path = Path(item)
            if not path.is_file():
                raise NnlabError(f"{item}: no such file")
            try:
                texts.append(path.read_text(encoding="utf-8"))
            except UnicodeDecodeError:
                raise NnlabError(f"{item}: not UTF-8 text") from None
        else:
            texts.append(item)
    return texts
