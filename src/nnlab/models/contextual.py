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

To fine-tune the encoder's top layers (`data.contextual_tune`), what is cached instead is
the input of the lowest fine-tuned layer for every word piece (`piece_states`): the frozen
layers below run once, and each step runs only the fine-tuned layers, then pools pieces
into words as above (nnlab.models.tagger.TunedContext).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import threading
import typing
from collections.abc import Callable
from dataclasses import dataclass

import torch

import nnlab.models.minilm as minilm
from nnlab.config import KeyphraseDataConfig
from nnlab.data.cache import kind_dir, touch
from nnlab.errors import NnlabError

# the encoders `data.contextual` may name: the config declares them (a Literal), this module computes them
ENCODERS = tuple(v for v in typing.get_args(typing.get_type_hints(KeyphraseDataConfig)["contextual"]) if v)
BATCH_PIECES = 8192  # word pieces per encoder batch (sequences sorted by length)

# the last features computed without the disk cache (`predict`'s and a server's one-off
# texts), by content, for every layer the encoder has: the members of an ensemble ask for the
# same texts in turn, and the encoder runs once for all of them, whatever top layers each
# reads (a slice; the encoder runs every layer anyway). 3 MiniLM taggers: 3.0x one tagger's
# predict time without it, 1.3x with it (benchmarks/results/predict_ensemble.json)
_recent: dict[tuple[str, str], list[torch.Tensor]] = {}
_recent_lock = threading.Lock()


def check_encoder(name: str) -> None:
    if name not in ENCODERS:
        raise NnlabError(f"data.contextual: unknown encoder {name!r} ({', '.join(ENCODERS)}, or '' for none)")


@functools.cache  # read on every one-off request (`_computed_once`): the file never changes
def feature_dim(name: str) -> int:
    """Width of one layer's feature (the tagger's input gains this many dimensions)."""
    check_encoder(name)
    return int(json.loads((minilm.model_dir() / "config.json").read_text())["hidden_size"])


@functools.cache
def layer_count(name: str) -> int:
    """How many layers' states the encoder has: its embeddings' and each transformer layer's."""
    check_encoder(name)
    return int(json.loads((minilm.model_dir() / "config.json").read_text())["num_hidden_layers"]) + 1


def cache_key(name: str, layers: int, sequences: list[list[str]], kind: str = "words") -> str:
    """Word features keep the key they had before piece states joined them (caches stay valid)."""
    tag = "" if kind == "words" else f"{kind}\0"
    h = hashlib.sha256(f"{name}\0{minilm.NAME}\0{tag}{layers}\0{len(sequences)}".encode())
    for tokens in sequences:
        h.update("\0".join(tokens).encode("utf-8", "surrogatepass"))
        h.update(b"\1")
    return h.hexdigest()[:24]


def word_features(name: str, layers: int, sequences: list[list[str]], use_cache: bool = True,
                  device: torch.device | None = None) -> list[torch.Tensor]:
    """(T, layers * H) fp16 features per token sequence, from the cache when there."""
    check_encoder(name)
    key, device = cache_key(name, layers, sequences), device or torch.device("cpu")
    if not use_cache:
        return _computed_once(name, layers, sequences, device)
    path = kind_dir("contextual") / f"{key}.safetensors"
    if path.is_file():
        from safetensors.torch import load_file

        saved = load_file(str(path))
        touch(path)
        return _split(saved["features"], saved["offsets"])
    features = compute(layers, sequences, device)
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    offsets = torch.tensor([0, *torch.tensor([len(t) for t in sequences]).cumsum(0).tolist()])
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    flat = torch.cat(features) if features else torch.zeros(0, 0, dtype=torch.float16)
    save_file({"features": flat.contiguous(), "offsets": offsets}, str(tmp))
    tmp.replace(path)  # whole or not at all
    return features


def _computed_once(name: str, layers: int, sequences: list[list[str]], device: torch.device
                   ) -> list[torch.Tensor]:
    """`compute`'s features of the top `layers` layers: a slice of every layer's features,
    computed unless they were the last computed (identical values: each column is pooled on
    its own)."""
    every = layer_count(name)
    where = (cache_key(name, every, sequences), str(device))
    with _recent_lock:
        found = _recent.get(where)
    if found is None:
        found = compute(every, sequences, device)
        with _recent_lock:  # only the last: one-off texts are not kept
            _recent.clear()
            _recent[where] = found
    width = layers * feature_dim(name)
    return [f[:, -width:] for f in found]  # (T, layers * H): the top layers, as `compute` orders them


@functools.lru_cache(maxsize=2)
def frozen_encoder(without_top: int | None, device: str) -> torch.nn.Module:
    """The pretrained encoder in eval mode, without its top `without_top` layers when given;
    kept, so `predict` and `serve` do not load it again for every request."""
    model = minilm.bert(pretrained=True)
    if without_top:
        model = minilm.lower_layers(model, model.config.num_hidden_layers - without_top)
    return model.to(device).eval().requires_grad_(False)


def _split(flat: torch.Tensor, offsets: torch.Tensor) -> list[torch.Tensor]:
    bounds = offsets.tolist()
    return [flat[a:b] for a, b in itertools.pairwise(bounds)]


@torch.no_grad()
def compute(layers: int, sequences: list[list[str]], device: torch.device) -> list[torch.Tensor]:
    """Run the frozen encoder over the sequences: (T, layers * H) fp16 each."""
    encodings = minilm.tokenizer().encode_batch(sequences, is_pretokenized=True)

    def pool(i: int, states: torch.Tensor) -> torch.Tensor:
        return _pool_words(states, encodings[i].word_ids, len(sequences[i]))

    return _encode_sorted(frozen_encoder(None, str(device)), [torch.tensor(e.ids) for e in encodings],
                          layers, device, pool)


def _encode_sorted(model: torch.nn.Module, texts: list[torch.Tensor], layers: int,
                   device: torch.device, keep: Callable[[int, torch.Tensor], torch.Tensor]
                   ) -> list[torch.Tensor]:
    """Each [CLS] pieces [SEP] (L,) through the encoder, its states (L, layers * H) (fp32 on
    the CPU) handed to `keep(index, states)` at once; returns what `keep` returns, in order.
    Texts are sorted by length and batched by about BATCH_PIECES pieces, so little goes into
    padding; texts past the encoder's window are windowed by `minilm.encode`."""
    out: list[torch.Tensor] = [None] * len(texts)  # type: ignore[list-item]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and (end - start + 1) * min(len(texts[order[end]]),
                                                            minilm.WINDOW) <= BATCH_PIECES:
            end += 1
        idx = order[start:end]
        batch = torch.nn.utils.rnn.pad_sequence([texts[i] for i in idx], batch_first=True,
                                                padding_value=minilm.PAD)  # (B, P)
        lengths = torch.tensor([len(texts[i]) for i in idx])
        states = minilm.encode(model, batch.to(device), lengths, layers=layers).float().cpu()  # (B, P, L*H)
        for row, i in enumerate(idx):
            out[i] = keep(i, states[row, : len(texts[i])])
        start = end
    return out


def _pool_words(states: torch.Tensor, word_ids: list[int | None], words: int) -> torch.Tensor:
    """Piece states (P, D) -> word features (words, D) fp16: each word's pieces averaged."""
    pieces = [p for p, w in enumerate(word_ids) if w is not None]
    owner = torch.tensor([word_ids[p] for p in pieces], dtype=torch.int64)  # (P',)
    total = torch.zeros(words, states.shape[1]).index_add_(0, owner, states[pieces])
    count = torch.zeros(words).index_add_(0, owner, torch.ones(len(pieces)))
    return (total / count.clamp(min=1).unsqueeze(1)).half()  # (words, D)



@dataclass
class PieceStates:
    """One token sequence's word pieces at the input of the fine-tuned layers.

    The sequence is read as windows ([CLS] pieces [SEP], within the encoder's positions),
    stored one after another; each word piece is read from one place in them (its most
    central window), into one word."""

    states: torch.Tensor  # (R, H) fp16: the windows' rows, one after another
    windows: torch.Tensor  # (W,) int64: each window's length in rows
    pick: torch.Tensor  # (N,) int64: the row each word piece is read from
    owner: torch.Tensor  # (N,) int64: the word (token index) each of those pieces belongs to

    FIELDS = ("states", "windows", "pick", "owner")


def piece_states(name: str, tune: int, sequences: list[list[str]], use_cache: bool = True,
                 device: torch.device | None = None) -> list[PieceStates]:
    """Each sequence's pieces at the input of the encoder's top `tune` layers, from the
    cache when there (keyed like `word_features`)."""
    check_encoder(name)
    path = kind_dir("contextual") / f"{cache_key(name, tune, sequences, 'pieces')}.safetensors"
    if use_cache and path.is_file():
        from safetensors.torch import load_file

        saved = load_file(str(path))
        touch(path)
        parts = [_split(saved[f], saved[f"{f}_offsets"]) for f in PieceStates.FIELDS]
        return [PieceStates(*fields) for fields in zip(*parts, strict=True)]
    result = compute_pieces(tune, sequences, device or torch.device("cpu"))
    if use_cache:
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for f in PieceStates.FIELDS:
            values = [getattr(r, f) for r in result]
            tensors[f] = torch.cat(values).contiguous() if values else torch.zeros(0)
            tensors[f"{f}_offsets"] = torch.tensor([0, *itertools.accumulate(len(v) for v in values)])
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        save_file(tensors, str(tmp))
        tmp.replace(path)  # whole or not at all
    return result


@torch.no_grad()
def compute_pieces(tune: int, sequences: list[list[str]], device: torch.device) -> list[PieceStates]:
    """Run the frozen layers below the top `tune` over every window of every sequence."""
    model = frozen_encoder(tune, str(device))
    encodings = minilm.tokenizer().encode_batch(sequences, is_pretokenized=True)
    windows: list[torch.Tensor] = []  # every sequence's windows, in order
    plans = []  # per sequence: (its first window, its windows' lengths, pick, owner)
    for enc in encodings:
        ids, word_ids = torch.tensor(enc.ids), enc.word_ids
        starts, sizes, best = minilm.window_plan(len(ids) - 2)
        lengths = [n + 2 for n in sizes]
        offsets = torch.tensor([0, *itertools.accumulate(lengths)])[:-1]  # each window's first row
        pieces = [p for p in range(1, len(ids) - 1) if word_ids[p] is not None]
        q = torch.tensor(pieces, dtype=torch.int64) - 1  # inner positions
        pick = offsets[best[q]] + 1 + q - torch.tensor(starts)[best[q]]
        owner = torch.tensor([word_ids[p] for p in pieces], dtype=torch.int64)
        plans.append((len(windows), lengths, pick, owner))
        windows += minilm.window_chunks(ids, starts, sizes)
    states = _encode_sorted(model, windows, 1, device, lambda _, h: h.half())  # (window length, H) each
    return [PieceStates(torch.cat(states[first : first + len(lengths)]), torch.tensor(lengths), pick, owner)
            for first, lengths, pick, owner in plans]


@dataclass
class PieceBatch:
    """A batch's windows, padded, and where each word piece goes: what `TunedContext` reads."""

    states: torch.Tensor  # (W, P, H) fp16: every window of the batch's sequences
    mask: torch.Tensor  # (W, P) bool: real rows
    source: torch.Tensor  # (N,) int64: each word piece's row in states.view(W * P, H)
    target: torch.Tensor  # (N,) int64: its word's place in a (B * T) flattening of the batch
    pieces: torch.Tensor  # (B * T,) float: word pieces per word (0 for padding, dropped words)
    shape: tuple[int, int]  # (B, T)

    def to(self, device: torch.device, non_blocking: bool = False) -> PieceBatch:
        moved = {f: getattr(self, f).to(device, non_blocking=non_blocking)
                 for f in ("states", "mask", "source", "target", "pieces")}
        return PieceBatch(**moved, shape=self.shape)


def collate_pieces(items: list[PieceStates], width: int) -> PieceBatch:
    """Sequences' piece states -> one PieceBatch of B = len(items) rows of `width` words."""
    windows = [w for item in items for w in torch.split(item.states, item.windows.tolist())]
    states = torch.nn.utils.rnn.pad_sequence(windows, batch_first=True)  # (W, P, H)
    p = states.shape[1]
    mask = torch.arange(p).unsqueeze(0) < torch.tensor([len(w) for w in windows]).unsqueeze(1)
    sources, targets, first_window = [], [], 0
    for row, item in enumerate(items):
        starts = torch.tensor([0, *itertools.accumulate(item.windows.tolist())])
        window = torch.searchsorted(starts, item.pick, right=True) - 1  # (N,) each piece's window
        sources.append((first_window + window) * p + item.pick - starts[window])
        targets.append(row * width + item.owner)
        first_window += len(item.windows)
    target = torch.cat(targets)
    pieces = torch.zeros(len(items) * width).index_add_(0, target, torch.ones(len(target)))
    return PieceBatch(states, mask, torch.cat(sources), target, pieces, (len(items), width))
