"""Contextual word features for the taggers: each word's states in a pretrained encoder.

A sequence's words are split into word pieces, the whole sequence goes through the frozen
encoder (in overlapping windows past its 512 positions: nothing is cut), and each word's
feature is the mean of its pieces' states in each of the top `layers` layers; the tagger
mixes the layers with learned weights. A word the tokenizer drops (a control character)
gets zeros.

Features are computed once per (encoder, layers, token sequences) and cached under
nnlab's cache folder as safetensors (fp16: (tokens, layers * H) and the sequences'
offsets), so every epoch and every run on the same data reads them back instead of
running the encoder: 85 s for Inspec's 1,500 abstracts (207,000 words) on 2 AMD EPYC
cores, 1 s to read back (benchmarks/results/keyphrase_minilm.json).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os

import torch

from nnlab.data.cache import cache_dir
from nnlab.errors import NnlabError
from nnlab.models import minilm

ENCODERS = ("minilm",)
BATCH_PIECES = 8192  # word pieces per encoder batch (sequences sorted by length)


def check_encoder(name: str) -> None:
    if name not in ENCODERS:
        raise NnlabError(f"data.contextual: unknown encoder {name!r} ({', '.join(ENCODERS)}, or '' for none)")


def feature_dim(name: str) -> int:
    """Width of one layer's feature (the tagger's input gains this many dimensions)."""
    check_encoder(name)
    return int(json.loads((minilm.model_dir() / "config.json").read_text())["hidden_size"])


def cache_key(name: str, layers: int, sequences: list[list[str]]) -> str:
    h = hashlib.sha256(f"{name}\0{minilm.NAME}\0{layers}\0{len(sequences)}".encode())
    for tokens in sequences:
        h.update("\0".join(tokens).encode("utf-8", "surrogatepass"))
        h.update(b"\1")
    return h.hexdigest()[:24]


def word_features(name: str, layers: int, sequences: list[list[str]], use_cache: bool = True,
                  device: torch.device | None = None) -> list[torch.Tensor]:
    """(T, layers * H) fp16 features per token sequence, from the cache when there."""
    check_encoder(name)
    path = cache_dir() / "contextual" / f"{cache_key(name, layers, sequences)}.safetensors"
    if use_cache and path.is_file():
        from safetensors.torch import load_file

        saved = load_file(str(path))
        return _split(saved["features"], saved["offsets"])
    features = compute(layers, sequences, device or torch.device("cpu"))
    if use_cache:
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        offsets = torch.tensor([0, *torch.tensor([len(t) for t in sequences]).cumsum(0).tolist()])
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        flat = torch.cat(features) if features else torch.zeros(0, 0, dtype=torch.float16)
        save_file({"features": flat.contiguous(), "offsets": offsets}, str(tmp))
        tmp.replace(path)  # whole or not at all
    return features


def _split(flat: torch.Tensor, offsets: torch.Tensor) -> list[torch.Tensor]:
    bounds = offsets.tolist()
    return [flat[a:b] for a, b in itertools.pairwise(bounds)]


@torch.no_grad()
def compute(layers: int, sequences: list[list[str]], device: torch.device) -> list[torch.Tensor]:
    """Run the frozen encoder over the sequences: (T, layers * H) fp16 each."""
    model = minilm.bert(pretrained=True).to(device).eval()
    encodings = minilm.tokenizer().encode_batch(sequences, is_pretokenized=True)
    out: list[torch.Tensor] = [None] * len(sequences)  # type: ignore[list-item]
    order = sorted(range(len(sequences)), key=lambda i: len(encodings[i].ids))
    start = 0
    while start < len(order):  # batches of about BATCH_PIECES pieces, similar lengths together
        end = start + 1
        while end < len(order) and (end - start + 1) * min(len(encodings[order[end]].ids),
                                                            minilm.WINDOW) <= BATCH_PIECES:
            end += 1
        idx = order[start:end]
        width = max(len(encodings[i].ids) for i in idx)
        ids = torch.zeros(len(idx), width, dtype=torch.int64)
        for row, i in enumerate(idx):
            ids[row, : len(encodings[i].ids)] = torch.tensor(encodings[i].ids)
        lengths = torch.tensor([len(encodings[i].ids) for i in idx])
        states = minilm.encode(model, ids.to(device), lengths, layers=layers).float().cpu()  # (B, P, L*H)
        for row, i in enumerate(idx):
            out[i] = _pool_words(states[row], encodings[i].word_ids, len(sequences[i]))
        start = end
    return out


def _pool_words(states: torch.Tensor, word_ids: list[int | None], words: int) -> torch.Tensor:
    """Piece states (P, D) -> word features (words, D) fp16: each word's pieces averaged."""
    pieces = [p for p, w in enumerate(word_ids) if w is not None]
    owner = torch.tensor([word_ids[p] for p in pieces], dtype=torch.int64)  # (P',)
    total = torch.zeros(words, states.shape[1]).index_add_(0, owner, states[pieces])
    count = torch.zeros(words).index_add_(0, owner, torch.ones(len(pieces)))
    return (total / count.clamp(min=1).unsqueeze(1)).half()  # (words, D)

