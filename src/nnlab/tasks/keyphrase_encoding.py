"""A keyphrase split as tensors: word, character and tag ids per sequence, the gold spans,
and the contextual features when the run reads them; `collate` pads a batch of them.
Shared by the task (training, evaluation, prediction) and its export (parity inputs)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nnlab.data.conll import TaggedText
from nnlab.data.tags import Span, tags_from_spans
from nnlab.data.vocab import Vocab
from nnlab.models import contextual
from nnlab.tasks.info import KeyphraseInfo


@dataclass
class Encoded:
    """A split as tensors, one entry per sequence."""

    words: list[torch.Tensor]  # (T,) int64
    chars: list[torch.Tensor]  # (T, W) int64, W = the sequence's longest word (capped)
    tags: list[torch.Tensor]  # (T,) int64
    spans: list[list[Span]]
    lengths: list[int]
    # contextual features, if the run reads them: (T, L*H) fp16 each, or the word pieces'
    # states under the encoder's fine-tuned layers
    context: list[torch.Tensor] | list[contextual.PieceStates] | None = None

    def __len__(self) -> int:
        return len(self.words)

    def subset(self, idx: list[int]) -> Encoded:
        return Encoded(*([getattr(self, f)[i] for i in idx]
                         for f in ("words", "chars", "tags", "spans", "lengths")),
                       context=None if self.context is None else [self.context[i] for i in idx])


def encode_chars(tokens: list[str], chars: Vocab, max_chars: int,
                 cache: dict[str, list[int]] | None = None) -> torch.Tensor:
    """(T, W) character ids, zero-padded; `cache` keeps each distinct word's ids (words
    repeat, and one tensor per sequence is far cheaper than one per word)."""
    cache = {} if cache is None else cache
    width = max(1, min(max_chars, max(len(t) for t in tokens)))
    rows = []
    for token in tokens:
        ids = cache.get(token)
        if ids is None:
            ids = cache[token] = chars.lookup(token[:max_chars])
        rows.append(ids + [0] * (width - len(ids)))
    return torch.tensor(rows, dtype=torch.int64).reshape(len(tokens), width)  # (T, W)


def encode(data: TaggedText, info: KeyphraseInfo, use_cache: bool = True,
           device: torch.device | None = None) -> Encoded:
    """Ids, tags and spans; and the contextual features when the run reads them (cached by
    content, except for `predict`'s one-off texts)."""
    enc = encode_words(data, info)
    c = info.contextual
    if c and c.get("tune"):
        enc.context = contextual.piece_states(c["encoder"], c["tune"], data.tokens, use_cache, device)
    elif c:
        enc.context = contextual.word_features(c["encoder"], c["layers"], data.tokens, use_cache, device)
    return enc


def encode_words(data: TaggedText, info: KeyphraseInfo) -> Encoded:
    words, chars = Vocab.from_dict(info.vocab), Vocab.from_dict(info.chars)
    tag_index = {t: i for i, t in enumerate(info.tags)}
    enc = Encoded([], [], [], [], [])
    char_cache: dict[str, list[int]] = {}
    for tokens, spans in zip(data.tokens, data.spans, strict=True):
        # gold spans of a type the run never saw cannot be predicted: they stay in `spans`
        # (counted as misses) but are tagged O for the loss
        known = [s for s in spans if s.type in info.types]
        tags = tags_from_spans(known, len(tokens), info.encoding)
        enc.words.append(torch.tensor(words.lookup(tokens), dtype=torch.int64))
        enc.chars.append(encode_chars(tokens, chars, info.max_word_chars, char_cache))
        enc.tags.append(torch.tensor([tag_index[t] for t in tags], dtype=torch.int64))
        enc.spans.append(spans)
        enc.lengths.append(len(tokens))
    return enc


def collate(enc: Encoded, indices: list[int], device: torch.device, with_chars: bool) -> dict:
    """Pad a batch: words, tags (B, T), mask (B, T), chars (B, T, W) or None."""
    b, t = len(indices), max(enc.lengths[i] for i in indices)
    words = torch.zeros(b, t, dtype=torch.int64)
    tags = torch.zeros(b, t, dtype=torch.int64)
    mask = torch.zeros(b, t, dtype=torch.bool)
    chars = None
    if with_chars:
        w = max(enc.chars[i].shape[1] for i in indices)
        chars = torch.zeros(b, t, w, dtype=torch.int64)
    for row, i in enumerate(indices):
        n = enc.lengths[i]
        words[row, :n] = enc.words[i]
        tags[row, :n] = enc.tags[i]
        mask[row, :n] = True
        if chars is not None:
            chars[row, :n, : enc.chars[i].shape[1]] = enc.chars[i]
    batch = {"words": words, "tags": tags, "mask": mask, "chars": chars, "context": None}
    if enc.context is not None and isinstance(enc.context[0], contextual.PieceStates):
        batch["context"] = contextual.collate_pieces([enc.context[i] for i in indices], t)
    elif enc.context is not None:
        context = torch.zeros(b, t, enc.context[indices[0]].shape[1], dtype=torch.float16)
        for row, i in enumerate(indices):
            context[row, : enc.lengths[i]] = enc.context[i]
        batch["context"] = context
    moved: dict = {k: (v.to(device, non_blocking=True) if v is not None else None)
                   for k, v in batch.items()}
    moved["tokens"] = sum(enc.lengths[i] for i in indices)  # counted on the host: no device sync
    return moved
