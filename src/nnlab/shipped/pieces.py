"""Word-piece inputs for an nnlab tagger on contextual features exported to ONNX: numpy and
`tokenizers` only, no nnlab or torch.

`nnlab export` copies this file beside the graph as FILE.pieces.py, and the encoder's
tokenizer as FILE.tokenizer.json. Besides the words (and characters) every nnlab tagger
reads, the graph reads the same words' word pieces and runs the encoder over them itself:
each text is read in windows of the encoder's 512 positions that overlap by half (nothing is
cut), each piece is read from the window where it has the most context on both sides, and
each word's feature is the mean of its pieces' states. For a batch of token lists (the
tokens whose ids are the graph's `words` input, in the same rows):

    tok = load_tokenizer("FILE.tokenizer.json")
    feeds = piece_inputs(tokens, tok)  # pieces, piece_mask, source, target
    scores = session.run(None, {"words": ..., "mask": ..., **feeds})[0]
"""

from __future__ import annotations

import numpy as np

WINDOW = 512  # the encoder's positions, [CLS] and [SEP] included


def load_tokenizer(path: str):  # -> tokenizers.Tokenizer
    """The shipped tokenizer without its 128-piece truncation and padding (windows and
    batches are this file's business)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.no_truncation()
    tok.no_padding()
    return tok


def window_plan(pieces: int, window: int = WINDOW) -> tuple[list[int], list[int], np.ndarray]:
    """Windows over a text of `pieces` word pieces ([CLS]/[SEP] not counted), overlapping by
    half: each window's first piece and piece count, and each piece's window (the one where
    its distance to the nearer edge is largest)."""
    span, stride = window - 2, (window - 2) // 2
    starts = sorted({min(s, max(pieces - span, 0)) for s in range(0, max(pieces - span, 0) + stride, stride)})
    sizes = [min(span, pieces - s) for s in starts]
    pos = np.arange(pieces)
    best = np.zeros(pieces, dtype=np.int64)
    best_score = np.full(pieces, -1)
    for w, (s, n) in enumerate(zip(starts, sizes, strict=True)):
        score = np.where((pos >= s) & (pos < s + n), np.minimum(pos - s, s + n - 1 - pos), -1)
        take = score > best_score
        best[take] = w
        best_score = np.where(take, score, best_score)
    return starts, sizes, best


def piece_inputs(tokens: list[list[str]], tokenizer, window: int = WINDOW) -> dict[str, np.ndarray]:
    """The graph's piece inputs for a batch of B token lists (T = the longest):

    pieces: int64 (W, P), every text's windows in order, [CLS] pieces [SEP], 0-padded;
    piece_mask: bool (W, P), true on real positions;
    source: int64 (N,), each word piece's row in pieces.reshape(W * P) (where its state is read);
    target: int64 (N,), its word's row in a (B * T) flattening of the batch.
    A word without pieces (a control character the tokenizer drops) gets a zero feature.
    """
    width = max(len(t) for t in tokens)
    windows: list[list[int]] = []
    places: list[tuple[int, int]] = []  # each word piece's (window, column)
    target: list[int] = []
    for row, enc in enumerate(tokenizer.encode_batch(tokens, is_pretokenized=True)):
        ids, word_ids = enc.ids, enc.word_ids
        starts, sizes, best = window_plan(len(ids) - 2, window)
        first, inner = len(windows), ids[1:-1]
        windows += [[ids[0], *inner[s : s + n], ids[-1]] for s, n in zip(starts, sizes, strict=True)]
        for p in range(1, len(ids) - 1):
            if word_ids[p] is None:
                continue
            w = int(best[p - 1])
            places.append((first + w, p - starts[w]))  # column: [CLS] is 0, so piece q sits at 1 + q - start
            target.append(row * width + word_ids[p])
    p = max(map(len, windows))
    pieces = np.zeros((len(windows), p), dtype=np.int64)
    mask = np.zeros((len(windows), p), dtype=bool)
    for i, ids in enumerate(windows):
        pieces[i, : len(ids)] = ids
        mask[i, : len(ids)] = True
    source = np.array([w * p + c for w, c in places], dtype=np.int64).reshape(-1)
    return {"pieces": pieces, "piece_mask": mask, "source": source,
            "target": np.array(target, dtype=np.int64).reshape(-1)}
