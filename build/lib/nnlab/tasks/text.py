"""What the two text tasks (keyphrase, similarity) share: vocabulary with pretrained words,
the word-embedding arguments of their models, and loading pretrained vectors into a model."""

from __future__ import annotations

from typing import Any

from torch import nn

from nnlab.config import DataConfig
from nnlab.data.embeddings import WordVectors, embedding_matrix, load_vectors
from nnlab.data.vocab import Vocab
from nnlab.errors import NnlabError


def build_vocab(tokens: list[str], d: DataConfig) -> tuple[Vocab, WordVectors | None]:
    """Training words (`data.min_count`, `data.lowercase`), then the `data.embedding_words`
    most frequent pretrained words not among them; and the vectors, when asked for."""
    vectors = load_vectors(d.embeddings) if d.embeddings else None
    extra = vectors.words[: d.embedding_words] if vectors else []
    return Vocab.build(tokens, d.min_count, d.lowercase, extra), vectors


def embeddings_info(vectors: WordVectors | None, d: DataConfig) -> dict[str, Any]:
    if vectors is None:
        return {}
    return {"embeddings": {"name": d.embeddings, "dim": vectors.dim, "frozen": d.freeze_embeddings}}


def word_args(model_args: dict[str, Any], info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The user's model options and the vocabulary-given ones: vocabulary size, how many
    pretrained-only words sit in the frozen table, and the vectors' dimension as word_dim."""
    args = dict(model_args)
    vocab = info["vocab"]
    size = len(vocab["items"])
    supplied: dict[str, Any] = {"vocab_size": size, "frozen_words": size - vocab.get("trained", size)}
    if info.get("embeddings"):
        dim = info["embeddings"]["dim"]
        if args.get("word_dim", dim) != dim:
            raise NnlabError(f"model.word_dim: {args['word_dim']}, but the embeddings have {dim} "
                             "dimensions")
        args.pop("word_dim", None)
        supplied["word_dim"] = dim
    return args, supplied


def load_pretrained(model: nn.Module, vectors: WordVectors | None, info: dict[str, Any],
                    d: DataConfig, seed: int) -> None:
    """Copy pretrained rows into `model.words` (a WordEmbedding); freeze them if asked; record
    the coverage in `info`."""
    if vectors is None:
        return
    words = getattr(model, "words", None)
    if words is None:
        raise NnlabError("--embeddings: this model has no word embeddings (model.inputs='onehot'?)")
    matrix, found = embedding_matrix(vectors, info["vocab"]["items"], seed=seed)
    info["embeddings"]["found"] = found
    words.load(matrix)
    words.weight.requires_grad_(not d.freeze_embeddings)
